-- The runs on disk: reading a run's log, verifying a run directory against its signature
-- and runs.jsonl, listing runs and finding one by id, id prefix or name.
local auditlog = require("moat.auditlog")
local chain = require("moat.auditlog.chain")
local core = require("moat.auditlog.core")
local json = require("moat.c.json")
local lfs = require("lfs")
local verify = require("moat.auditlog.verify")

local M = {}

local _basename, _dirname, _is_dir = core.basename, core.dirname, core.is_dir

-- Returns the log file and the run directory for a run directory or a log path.
local function _log_path(path)
  if _is_dir(path) then return path .. "/" .. core.LOG, path end
  return path, _dirname(path)
end

-- Reads a log (run directory or audit.jsonl): returns records (decoded complete lines; a
-- line that does not parse is { seq = n, bad = true }), torn (bool) | nil, message.
function M.read(path)
  local file = _log_path(path)
  local text = core.read_file(file)
  if not text then return nil, "cannot read " .. file end
  local lines, rest = core.lines(text)
  -- The signature line that ends a finished run's log is not a record.
  if #lines > 0 and core.is_signature(json.decode(lines[#lines])) then lines[#lines] = nil end
  local recs = {}
  for i, line in ipairs(lines) do
    local r = json.decode(line)
    recs[i] = core.is_object(r) and r or { seq = i, bad = true }
  end
  return recs, rest ~= ""
end

-- Returns the public key to verify with: opts.public_key, else $MOAT_HOME's | nil, why.
local function _key(opts)
  if opts.public_key then return { pk = opts.public_key, pin = opts.key } end
  local pk, why = auditlog.public_key()
  return { pk = pk, why = why, pin = opts.key }
end

-- Returns runs.jsonl's lines for run `id` and whether it lists runs both older and newer
-- than `id`.
local function _slot(loaded, id)
  if not loaded then return nil, false end
  local before, after = false, false
  for _, e in ipairs(loaded.entries) do
    if e.run < id then before = true elseif e.run > id then after = true end
  end
  return loaded.by_run[id], before and after
end

-- Verifies a run (its directory or the path of its audit.jsonl): the chain, the signature
-- (the log's last line, or an older moat's audit.sig) and, when the run lives in a moat
-- home, what runs.jsonl recorded about it. opts: public_key = raw key (default:
-- $MOAT_HOME/keys/audit.pub), key = pinned fingerprint, chain = runs.jsonl as loaded by
-- moat.auditlog.chain (default: read it). Returns
-- { ok, status = "valid"|"unfinished"|"invalid", bad_seq, reason, torn, records, signed_seq, key }.
function M.verify(path, opts)
  opts = opts or {}
  local file, dir = _log_path(path)
  local text = core.read_file(file)
  local sigtext = core.read_file(dir .. "/" .. core.SIG)
  local id = _basename(dir)
  local rep, recs
  if not text and _is_dir(dir) and lfs.attributes(file, "mode") == nil and not sigtext then
    -- A run killed between creating its directory and its first commit has no log.
    rep, recs = { ok = false, status = "unfinished", torn = false, records = 0,
      reason = "no records and no signature — the run did not finish" }, {}
  else
    rep, recs = verify.text(text, sigtext, id, _key(opts))
    if not text then rep.reason = "cannot read " .. file end
  end
  local home = _dirname(_dirname(dir))
  local loaded = opts.chain
  if not loaded and _basename(_dirname(dir)) == "runs" then
    loaded = chain.load(home .. "/" .. core.RUNS)
  end
  return verify.cross(rep, recs, _slot(loaded, id))
end

-- Returns the name recorded in a run's run.started record | nil.
function M.name_of(dir)
  local f = io.open(dir .. "/" .. core.LOG, "rb")
  if not f then return nil end
  local first = f:read("l")
  f:close()
  local r = first and json.decode(first)
  if core.is_object(r) and r.type == "run.started" and core.is_object(r.data) and type(r.data.name) == "string" then
    return r.data.name
  end
  return nil
end

-- Summarises one run directory: { id, dir, path, name, started, finished, status =
-- "finished"|"failed"|"unfinished", exit, outcome, verify = report, verifies = bool }.
-- `loaded`: runs.jsonl as loaded by moat.auditlog.chain (read when nil).
function M.summary(dir, loaded)
  local entry = { id = _basename(dir), dir = dir, path = dir .. "/" .. core.LOG, status = "unfinished" }
  local recs = M.read(dir) or {}
  local first = recs[1]
  if first and first.type == "run.started" and core.is_object(first.data) then
    entry.name = first.data.name
    entry.started = first.ts
  end
  for i = #recs, 1, -1 do
    local r = recs[i]
    if r.type == "run.finished" and core.is_object(r.data) then
      entry.exit, entry.outcome, entry.finished = r.data.exit, r.data.outcome, r.ts
      entry.status = (r.data.outcome == "exited" or r.data.outcome == "ok") and "finished" or "failed"
      break
    end
  end
  entry.verify = M.verify(dir, { chain = loaded })
  entry.verifies = entry.verify.ok
  return entry
end

-- Returns the run ids under $MOAT_HOME/runs, newest first (none when there is no home).
function M.ids()
  local ids = {}
  local root = auditlog.runs_dir()
  if not root or not _is_dir(root) then return ids end
  for name in lfs.dir(root) do
    if core.is_id(name) and _is_dir(root .. "/" .. name) then ids[#ids + 1] = name end
  end
  table.sort(ids, function(a, b) return a > b end)
  return ids
end

-- Returns every run's summary (see M.summary), newest first; opts.name keeps the runs of
-- that name only.
function M.list(opts)
  opts = opts or {}
  local out = {}
  local root = auditlog.runs_dir()
  if not root then return out end
  local loaded = chain.load(_dirname(root) .. "/" .. core.RUNS)
  for _, id in ipairs(M.ids()) do
    local dir = root .. "/" .. id
    if not opts.name or M.name_of(dir) == opts.name then out[#out + 1] = M.summary(dir, loaded) end
  end
  return out
end

-- Finds a run by id, unique id prefix or run name (the newest run of that name); nil: the
-- newest run. Returns its directory, id | nil, message.
function M.find(spec)
  local root, herr = auditlog.runs_dir()
  if not root then return nil, herr end
  local ids = M.ids()
  if #ids == 0 then return nil, "no runs recorded under " .. root end
  if spec == nil then return root .. "/" .. ids[1], ids[1] end
  local hits = {}
  for _, id in ipairs(ids) do
    if id == spec then return root .. "/" .. id, id end
    if id:sub(1, #spec) == spec then hits[#hits + 1] = id end
  end
  if #hits == 1 then return root .. "/" .. hits[1], hits[1] end
  if #hits > 1 then
    return nil, ("'%s' matches %d runs (%s, ...); give more of the id"):format(spec, #hits, hits[1])
  end
  for _, id in ipairs(ids) do
    if M.name_of(root .. "/" .. id) == spec then return root .. "/" .. id, id end
  end
  return nil, "no run matches '" .. spec .. "' as an id, id prefix or name (see 'moat runs')"
end

return M
