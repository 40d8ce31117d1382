-- The cross-run chain $MOAT_HOME/runs.jsonl: one hash-chained line per run start and per
-- run finish (run id, the run's head seq and hash, the signing key's fingerprint), so a
-- deleted run, a deleted tail or signature, or a swapped key shows up on verification.
local core = require("moat.auditlog.core")
local json = require("moat.c.json")
local lfs = require("lfs")
local sys = require("moat.c.system")

local M = {}

local FIELDS = {}
for _, k in ipairs(core.RUN_KEYS) do FIELDS[k] = true end

-- Appends one line for run `id` (event "start" or "finish", head seq and hash, key
-- fingerprint) to `path` under its lock, chained to the line before it; one write, then
-- fsync unless opts.sync is false. Returns the line's table | nil, message.
function M.append(path, event, id, head_seq, head, key, opts)
  local sync = not (opts and opts.sync == false)
  local new = lfs.attributes(path, "mode") == nil
  local log, err = sys.open_log(path)
  if not log then return nil, ("cannot open %s: %s"):format(path, tostring(err)) end
  local ok, lerr = log:lock()
  if not ok then
    log:close()
    return nil, ("cannot lock %s: %s"):format(path, tostring(lerr))
  end
  local entry, why = (function()
    local last, torn = log:tail()
    if type(torn) == "string" then return nil, "cannot read the end of " .. path .. ": " .. torn end
    if torn then return nil, path .. " ends in a torn line (an earlier write was cut off)" end
    local prev, seq = core.ZERO, 1
    if last then
      local p = json.decode(last)
      if not core.is_object(p) or math.type(p.seq) ~= "integer" or type(p.hash) ~= "string" then
        return nil, "the last line of " .. path .. " is not a runs.jsonl entry"
      end
      prev, seq = p.hash, p.seq + 1
    end
    local e = { seq = seq, ts = sys.now(), event = event, run = id, head_seq = head_seq, head = head,
      key = key, prev = prev }
    e.hash = assert(core.hash(e, core.RUN_KEYS))
    local done, aerr = log:append(assert(core.serialize(e, core.RUN_KEYS)) .. "\n", sync)
    if not done then return nil, ("cannot append to %s: %s"):format(path, tostring(aerr)) end
    return e
  end)()
  log:unlock()
  log:close()
  if entry and new then
    -- The file's entry in $MOAT_HOME must survive a crash as well as its lines (once, ever).
    local synced, serr = sys.fsync_dir(core.dirname(path))
    if not synced then return nil, "cannot sync the directory holding " .. path .. ": " .. tostring(serr) end
  end
  return entry, why
end

-- Checks one decoded runs.jsonl line as line `n` after hash `prev`; returns nil or why.
function M.check_line(line, e, n, prev)
  if not core.is_object(e) then return "line " .. n .. " is not a JSON object" end
  for k in pairs(e) do
    if not FIELDS[k] then return "unexpected field " .. tostring(k) end
  end
  if math.type(e.seq) ~= "integer" then return "seq is missing or not an integer" end
  if e.seq ~= n then
    return ("expected seq %d, found seq %s: lines were removed, inserted or reordered"):format(n, e.seq)
  end
  if e.event ~= "start" and e.event ~= "finish" then return "event is neither start nor finish" end
  if not core.is_id(e.run) then return "run is not a run id" end
  if math.type(e.head_seq) ~= "integer" or type(e.head) ~= "string" or type(e.key) ~= "string" then
    return "head_seq, head or key is missing"
  end
  if type(e.prev) ~= "string" or type(e.hash) ~= "string" then return "prev or hash is missing" end
  if prev and e.prev ~= prev then return "prev does not match the hash of the line before it (a line was removed)" end
  if core.hash(e, core.RUN_KEYS) ~= e.hash then return "hash does not match the line's contents (it was changed)" end
  if core.serialize(e, core.RUN_KEYS) ~= line then return "the line is not in canonical form (it was edited)" end
  return nil
end

-- Reads runs.jsonl at `path`: returns { entries = list, by_run = { [id] = { start, finish } },
-- bad = { line, reason } | nil, missing = bool }. Checking stops at the first bad line.
function M.load(path)
  local out = { entries = {}, by_run = {} }
  local text = core.read_file(path)
  if not text then
    out.missing = lfs.attributes(path, "mode") == nil
    if not out.missing then out.bad = { line = 1, reason = "cannot read " .. path } end
    return out
  end
  local lines, rest = core.lines(text)
  local prev = core.ZERO
  for n, line in ipairs(lines) do
    local e = json.decode(line)
    local why = M.check_line(line, e, n, prev)
    if why then
      out.bad = { line = n, reason = why }
      return out
    end
    out.entries[n] = e
    local slot = out.by_run[e.run] or {}
    slot[e.event] = e
    out.by_run[e.run] = slot
    prev = e.hash
  end
  if rest ~= "" then out.bad = { line = #lines + 1, reason = "the last line is torn" } end
  return out
end

-- Checks the whole chain of `home`: runs.jsonl intact, every listed run's directory
-- present, one signing key throughout (the pinned one, when opts.key is a fingerprint)
-- and equal to opts.current (the fingerprint of keys/audit.pub) when given.
-- Returns { ok, lines = n, problems = { text, ... }, key = last recorded fingerprint }.
function M.verify(home, opts)
  opts = opts or {}
  local rep = { problems = {} }
  local function problem(fmt, ...) rep.problems[#rep.problems + 1] = fmt:format(...) end
  local chain = M.load(home .. "/" .. core.RUNS)
  rep.lines = #chain.entries
  if chain.bad then problem("%s line %d: %s", core.RUNS, chain.bad.line, chain.bad.reason) end
  local key, unpinned
  for n, e in ipairs(chain.entries) do
    if key and e.key ~= key then
      problem("the signing key changed at %s line %d (run %s): %s before, %s from here on",
        core.RUNS, n, e.run, key, e.key)
    end
    key = e.key
    if opts.key and e.key ~= opts.key and not unpinned then
      unpinned = true  -- the first such line is enough; key changes are reported above
      problem("%s line %d (run %s) names key %s, not the pinned key %s", core.RUNS, n, e.run, e.key, opts.key)
    end
  end
  local gone = {}
  for id in pairs(chain.by_run) do
    if lfs.attributes(home .. "/runs/" .. id, "mode") ~= "directory" then gone[#gone + 1] = id end
  end
  table.sort(gone)
  for _, id in ipairs(gone) do
    problem("run %s deleted: it is listed in %s but its directory is gone", id, core.RUNS)
  end
  if key and opts.current and opts.current ~= key then
    problem("keys/audit.pub (%s) is not the key recorded in %s (%s): the key pair was replaced",
      opts.current, core.RUNS, key)
  end
  rep.key = key
  rep.ok = #rep.problems == 0
  rep.problems = json.array(rep.problems)
  return rep, chain
end

return M
