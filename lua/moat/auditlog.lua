-- The audit trail: one hash-chained, durably appended, signed log per run, under
-- $MOAT_HOME/runs/<run-id>/audit.jsonl. The record layout, the bytes that are hashed and
-- the signed message are defined here once and used by both the writer and the verifier.
-- What goes into a record's `data` is up to the formatter moat.audit (replaceable);
-- seq, ts, type, prev, hash and the signature are always computed here.
local exit = require("moat.exit")
local json = require("moat.c.json")
local lfs = require("lfs")
local sys = require("moat.c.system")

local M = {}

M.ZERO = string.rep("0", 64)          -- `prev` of the first record
M.LOG = "audit.jsonl"                 -- the log, in the run's directory
M.SIG = "audit.sig"                   -- the signature of the finished run's head, beside it
M.SIGNED_PREFIX = "moat-audit-v1\n"   -- start of every signed message (domain separation)

local KEYS = { "seq", "ts", "type", "data", "prev", "hash" }

local function _ioerr(what, err)
  exit.fail(exit.IOERR, ("audit log: %s: %s"):format(what, tostring(err)))
end

local function _basename(path) return (path:match("([^/]+)/*$")) or path end
local function _dirname(path) return (path:match("^(.*)/[^/]+/*$")) or "." end

local function _is_dir(path) return lfs.attributes(path, "mode") == "directory" end

-- Sets the moat home directory for this process (nil: back to $MOAT_HOME or ~/.moat).
function M.set_home(dir)
  M._home = dir
end

-- Returns the moat home directory: $MOAT_HOME, else ~/.moat.
function M.home()
  if M._home then return M._home end
  local env = os.getenv("MOAT_HOME")
  if env and env ~= "" then return env end
  return (os.getenv("HOME") or "") .. "/.moat"
end

-- Returns the directory holding one directory per run.
function M.runs_dir()
  return M.home() .. "/runs"
end

-- Creates `path` (mode 0700) unless it exists, and syncs its parent so the new entry
-- survives a crash. Returns true when it created it.
local function _mkdir(path)
  if _is_dir(path) then return false end
  local ok, err = sys.mkdir(path, tonumber("700", 8))
  if not ok then
    if _is_dir(path) then return false end  -- made by a concurrent moat
    _ioerr("cannot create directory " .. path, err)
  end
  local synced, serr = sys.fsync_dir(_dirname(path))
  if not synced then _ioerr("cannot sync the directory holding " .. path, serr) end
  return true
end

-- Creates $MOAT_HOME (0700) when missing; returns its path.
function M.ensure_home()
  local home = M.home()
  _mkdir(home)
  return home
end

-- Returns a new run id: UTC start time to the microsecond plus 8 random hex digits,
-- e.g. 20261128T124533.123456Z-1a2b3c4d. Ids sort by start time and are filename-safe.
function M.new_id()
  local ts = sys.now(6):gsub("[-:]", "")
  return ts .. "-" .. sys.random_hex(4)
end

local function _check_id(id)
  return type(id) == "string" and id:match("^%d%d%d%d%d%d%d%dT%d%d%d%d%d%d%.%d%d%d+Z%-%x+$") ~= nil
end

-- Returns the bytes whose SHA-256 is a record's hash: prev ‖ canonical JSON of the record
-- without "hash" (keys sorted, no spaces). Used by the writer and the verifier alike.
-- Returns string | nil, message.
function M.hashed_bytes(rec)
  local body, err = json.encode({
    seq = rec.seq, ts = rec.ts, type = rec.type, data = rec.data, prev = rec.prev,
  }, { canonical = true })
  if not body then return nil, err end
  return rec.prev .. body
end

-- Returns the SHA-256 (hex) of a record, or nil, message.
function M.hash(rec)
  local bytes, err = M.hashed_bytes(rec)
  if not bytes then return nil, err end
  return sys.sha256(bytes)
end

-- Returns the log line (without "\n") of a complete record: keys in the documented order
-- seq, ts, type, data, prev, hash, each value in canonical JSON. Returns string | nil, message.
function M.serialize(rec)
  local parts = {}
  for i, k in ipairs(KEYS) do
    local v, err = json.encode(rec[k], { canonical = true })
    if not v then return nil, k .. ": " .. err end
    parts[i] = json.encode(k) .. ":" .. v
  end
  return "{" .. table.concat(parts, ",") .. "}"
end

-- Returns the message a run's signature covers: prefix, run id, seq and hash of its last record.
function M.signed_message(run_id, seq, hash)
  return M.SIGNED_PREFIX .. run_id .. "\n" .. tostring(seq) .. "\n" .. hash
end

-- Returns the paths of the signing key pair: secret, public.
function M.key_paths()
  local dir = M.home() .. "/keys"
  return dir .. "/audit.key", dir .. "/audit.pub", dir
end

local function _read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

local function _read_hex_key(path, len)
  local text = _read(path)
  if not text then return nil, "missing" end
  local bin = sys.from_hex((text:gsub("%s+$", "")))
  if not bin or #bin ~= len then return nil, "malformed" end
  return bin
end

-- Returns the public key (32 raw bytes) | nil, why.
function M.public_key()
  local _, pub = M.key_paths()
  local pk, why = _read_hex_key(pub, 32)
  if not pk then return nil, pub .. ": " .. why end
  return pk
end

-- Makes the Ed25519 key pair on first use (under a lock, so concurrent first runs agree on
-- one pair); returns the secret key (raw bytes). Raises exit 74 on failure.
function M.ensure_keys()
  local sec, pub, dir = M.key_paths()
  M.ensure_home()
  _mkdir(dir)
  local sk = _read_hex_key(sec, 64)
  if sk then return sk end
  local lock <close>, err = sys.open_log(dir .. "/.lock")
  if not lock then _ioerr("cannot create the signing key", err) end
  local ok, lerr = lock:lock()
  if not ok then _ioerr("cannot lock " .. dir .. "/.lock", lerr) end
  sk = _read_hex_key(sec, 64)
  if not sk then
    local pk
    pk, sk = sys.sign_keypair()
    local okp, perr = sys.write_file(pub, sys.to_hex(pk) .. "\n", tonumber("644", 8))
    if not okp then _ioerr("cannot write the public key", perr) end
    local oks, serr = sys.write_file(sec, sys.to_hex(sk) .. "\n", tonumber("600", 8))
    if not oks then _ioerr("cannot write the secret key", serr) end
  end
  lock:unlock()
  return sk
end

local Run = {}
Run.__index = Run

local function _formatter()
  local ok, mod = pcall(require, "moat.audit")
  if not ok then
    exit.fail(exit.CONFIG, "cannot load the audit formatter moat.audit: " .. tostring(mod))
  end
  if type(mod) ~= "table" or type(mod.format) ~= "function" then
    exit.fail(exit.CONFIG, "the audit formatter moat.audit has no function format(type, fields)")
  end
  return mod
end

local function _origin()
  local ok, loader = pcall(require, "moat.loader")
  local o = ok and type(loader) == "table" and loader.origin and loader.origin["moat.audit"]
  return o and (" (" .. o.file .. ")") or ""
end

-- Calls the formatter and checks that it gave a table that encodes as a JSON object.
local function _data(rtype, fields)
  local fmt = _formatter()
  local ok, data = pcall(fmt.format, rtype, fields)
  if not ok then
    exit.fail(exit.CONFIG, ("audit formatter moat.audit%s failed on %s: %s"):format(
      _origin(), rtype, exit.is_failure(data) and data.message or tostring(data)))
  end
  if type(data) ~= "table" then
    exit.fail(exit.CONFIG, ("audit formatter moat.audit%s returned a %s for %s, not a table"):format(
      _origin(), type(data), rtype))
  end
  local enc, err = json.encode(data, { canonical = true })
  if not enc or enc:sub(1, 1) ~= "{" then
    exit.fail(exit.CONFIG, ("audit formatter moat.audit%s returned data for %s that is not a JSON object%s"):format(
      _origin(), rtype, err and (": " .. err) or ""))
  end
  return data
end

-- Appends one record of `rtype` formatted from `fields`: under the log's lock, reads the
-- tail for prev and seq (so several writers still form one chain), then one write and fsync.
-- Returns the record { seq, ts, type, data, prev, hash }. Raises exit 74 on any I/O failure.
function Run:record(rtype, fields)
  if self.finished then error("audit: run " .. self.id .. " is already finished", 2) end
  if type(rtype) ~= "string" or not rtype:match("^[%w_]+%.[%w_.]+$") then
    error("audit: bad record type " .. tostring(rtype), 2)
  end
  local data = _data(rtype, fields)
  local log = self._log
  local ok, err = log:lock()
  if not ok then _ioerr("cannot lock " .. self.path, err) end
  local rec
  ok, err = pcall(function()
    local last, torn = log:tail()
    if type(torn) == "string" then error({ "cannot read the end of " .. self.path, torn }) end
    if torn then
      error({ self.path .. " ends in a torn line (an earlier write was cut off)",
        "refusing to append; start a new run" })
    end
    local prev, seq = M.ZERO, 1
    if last then
      local p = json.decode(last)
      if type(p) ~= "table" or math.type(p.seq) ~= "integer" or type(p.hash) ~= "string" then
        error({ "the last line of " .. self.path .. " is not an audit record", "refusing to append" })
      end
      prev, seq = p.hash, p.seq + 1
    end
    rec = { seq = seq, ts = sys.now(), type = rtype, data = data, prev = prev }
    local h, herr = M.hash(rec)
    if not h then error({ "cannot encode the " .. rtype .. " record", herr }) end
    rec.hash = h
    local line = assert(M.serialize(rec))
    local done, aerr = log:append(line .. "\n")
    if not done then
      error({ ("cannot append record %d (%s) to %s"):format(seq, rtype, self.path), aerr })
    end
  end)
  log:unlock()
  if not ok then
    if type(err) == "table" and not exit.is_failure(err) then _ioerr(err[1], err[2]) end
    error(err, 0)
  end
  if not self._synced_dir then
    local s, serr = sys.fsync_dir(self.dir)
    if not s then _ioerr("cannot sync the directory " .. self.dir, serr) end
    self._synced_dir = true
  end
  self.last = rec
  return rec
end

-- Writes run.finished from `fields`, then signs the head (run id, seq and hash of that
-- record) into audit.sig beside the log. Returns the run.finished record.
function Run:finish(fields)
  local rec = self:record("run.finished", fields)
  local sig = sys.sign(M.signed_message(self.id, rec.seq, rec.hash), self._sk)
  local text = assert(json.encode({
    run = self.id, seq = rec.seq, hash = rec.hash, sig = sys.to_hex(sig),
  }, { canonical = true }))
  local ok, err = sys.write_file(self.dir .. "/" .. M.SIG, text .. "\n", tonumber("600", 8))
  if not ok then _ioerr("cannot write the signature", err) end
  self.finished = true
  self:close()
  return rec
end

-- Closes the log file (idempotent); the run can no longer be written.
function Run:close()
  if self._log then self._log:close() end
end

local function _open(id, dir, sk)
  local path = dir .. "/" .. M.LOG
  local log, err = sys.open_log(path)
  if not log then _ioerr("cannot open " .. path, err) end
  return setmetatable({ id = id, dir = dir, path = path, _log = log, _sk = sk }, Run)
end

-- Takes run.started fields {name, workspace, runtime, image, command, version}; creates
-- $MOAT_HOME/runs/<id>/audit.jsonl and writes run.started. Returns the run
-- { id, dir, path, record = fn, finish = fn }. Raises exit 74 on any I/O failure.
function M.start(fields)
  local sk = M.ensure_keys()
  _mkdir(M.runs_dir())
  local id, dir
  for _ = 1, 16 do
    id = M.new_id()
    dir = M.runs_dir() .. "/" .. id
    if lfs.attributes(dir, "mode") == nil and _mkdir(dir) then break end
    id = nil
  end
  if not id then _ioerr("cannot create a run directory under " .. M.runs_dir(), "too many collisions") end
  local run = _open(id, dir, sk)
  run:record("run.started", fields or {})
  return run
end

-- Opens an existing run (a run directory) to append more records to it; returns the run.
function M.open(dir)
  return _open(_basename(dir), dir, M.ensure_keys())
end

-- Splits a log's text into complete lines and the torn rest ("" when none).
local function _lines(text)
  local lines, pos = {}, 1
  while true do
    local nl = text:find("\n", pos, true)
    if not nl then break end
    lines[#lines + 1] = text:sub(pos, nl - 1)
    pos = nl + 1
  end
  return lines, text:sub(pos)
end

local function _log_path(path)
  if _is_dir(path) then return path .. "/" .. M.LOG, path end
  return path, _dirname(path)
end

-- Reads a log (run directory or audit.jsonl): returns records (decoded, complete lines that
-- parse), torn (bool) | nil, message.
function M.read(path)
  local file = _log_path(path)
  local text = _read(file)
  if not text then return nil, "cannot read " .. file end
  local lines, rest = _lines(text)
  local recs = {}
  for i, line in ipairs(lines) do
    local r = json.decode(line)
    if type(r) == "table" then recs[#recs + 1] = r else recs[#recs + 1] = { seq = i, bad = true } end
  end
  return recs, rest ~= ""
end

-- Checks one decoded line as record number `n` following hash `prev`; returns nil or why.
local function _check_record(line, r, n, prev)
  if type(r) ~= "table" or getmetatable(r) == json.array_mt then
    return "line " .. n .. " is not a JSON object"
  end
  for k in pairs(r) do
    if type(k) ~= "string" or not ({ seq = 1, ts = 1, type = 1, data = 1, prev = 1, hash = 1 })[k] then
      return "unexpected field " .. tostring(k)
    end
  end
  if math.type(r.seq) ~= "integer" then return "seq is missing or not an integer" end
  if r.seq ~= n then
    if r.seq > n then
      return ("expected seq %d, found seq %d: record %d is missing (deleted)"):format(n, r.seq, n)
    end
    return ("expected seq %d, found seq %d: records are out of order, repeated or inserted"):format(n, r.seq)
  end
  if type(r.ts) ~= "string" or type(r.type) ~= "string" then return "ts or type is missing" end
  if type(r.data) ~= "table" or getmetatable(r.data) == json.array_mt then return "data is not an object" end
  if type(r.prev) ~= "string" or type(r.hash) ~= "string" then return "prev or hash is missing" end
  if r.prev ~= prev then
    return "prev does not match the hash of the record before it (a record was removed, inserted or reordered)"
  end
  local h = M.hash(r)
  if h ~= r.hash then return "hash does not match the record's contents (the record was changed)" end
  if M.serialize(r) ~= line then return "the line is not in canonical form (it was edited)" end
  return nil
end

local function _report(status, fields)
  fields.status = status
  fields.ok = status == "valid"
  fields.torn = fields.torn or false
  return fields
end

-- Verifies a run's log (run directory or path of its audit.jsonl): the chain and the
-- signature in audit.sig beside it. opts.public_key: raw public key (default: the one
-- under $MOAT_HOME/keys). Returns { ok, status = "valid"|"unfinished"|"invalid", bad_seq,
-- reason, torn, records = n, signed_seq }.
function M.verify(path, opts)
  opts = opts or {}
  local file, dir = _log_path(path)
  local text = _read(file)
  if not text then
    -- A run killed between creating its directory and its first write has no log.
    if _is_dir(dir) and lfs.attributes(file, "mode") == nil and not _read(dir .. "/" .. M.SIG) then
      return _report("unfinished", { records = 0, reason = "no records and no signature — the run did not finish" })
    end
    return _report("invalid", { bad_seq = 1, records = 0, reason = "cannot read " .. file })
  end
  local lines, rest = _lines(text)
  local torn = rest ~= ""
  local prev, last = M.ZERO, nil
  for n, line in ipairs(lines) do
    local r = json.decode(line)
    local why = _check_record(line, r, n, prev)
    if why then
      return _report("invalid", { bad_seq = n, reason = why, records = n - 1, torn = torn })
    end
    prev, last = r.hash, r
  end
  local count = #lines
  local sigtext = _read(dir .. "/" .. M.SIG)
  if not sigtext then
    return _report("unfinished", {
      records = count, torn = torn,
      reason = "no signature — the run did not finish" .. (torn and " (the last line is torn)" or ""),
    })
  end
  local s = json.decode((sigtext:gsub("\n$", "")))
  if type(s) ~= "table" or math.type(s.seq) ~= "integer" or type(s.hash) ~= "string"
      or type(s.sig) ~= "string" or type(s.run) ~= "string" then
    return _report("invalid", { bad_seq = math.max(count, 1), records = count, torn = torn,
      reason = M.SIG .. " is malformed" })
  end
  local function bad(seq, why)
    return _report("invalid", { bad_seq = seq, reason = why, records = count, torn = torn, signed_seq = s.seq })
  end
  -- Every finished run has at least run.started and run.finished: a signature below seq 1 is forged.
  if s.seq < 1 then
    return bad(1, ("the signature names seq %d; a signed run starts at seq 1"):format(s.seq))
  end
  if s.seq > count then
    return bad(count + 1, ("the log ends at seq %d but the signature covers seq %d: "
      .. "records %d..%d are missing (truncated)%s"):format(
      count, s.seq, count + 1, s.seq, torn and "; the last line is torn" or ""))
  end
  if s.seq < count then
    return bad(s.seq + 1, ("seq %d comes after the signed last record (seq %d): records were appended"):format(
      s.seq + 1, s.seq))
  end
  if torn then return bad(count + 1, "a torn line follows the signed last record") end
  if s.hash ~= last.hash then
    return bad(s.seq, ("the signature is for a different seq %d (hash mismatch)"):format(s.seq))
  end
  local run_id = _basename(dir)
  if s.run ~= run_id then
    return bad(s.seq, ("the signature is for run %s, not %s"):format(s.run, run_id))
  end
  local pk, why = opts.public_key, nil
  if not pk then pk, why = M.public_key() end
  if not pk then return bad(s.seq, "cannot check the signature: no public key (" .. why .. ")") end
  local sig = sys.from_hex(s.sig)
  if not sig or not sys.sign_verify(sig, M.signed_message(run_id, s.seq, s.hash), pk) then
    return bad(s.seq, ("the signature of seq %d does not match (not made by this moat's key, or altered)"):format(
      s.seq))
  end
  return _report("valid", { records = count, signed_seq = s.seq })
end

-- Summarises one run directory: { id, dir, path, name, started, status = "finished"|
-- "failed"|"unfinished", exit, outcome, verify = report, verifies = bool }.
function M.summary(dir)
  local id = _basename(dir)
  local path = dir .. "/" .. M.LOG
  local entry = { id = id, dir = dir, path = path, status = "unfinished" }
  local recs = M.read(dir) or {}
  local first = recs[1]
  if first and first.type == "run.started" and type(first.data) == "table" then
    entry.name = first.data.name
    entry.started = first.ts
  end
  for i = #recs, 1, -1 do
    local r = recs[i]
    if r.type == "run.finished" and type(r.data) == "table" then
      entry.exit = r.data.exit
      entry.outcome = r.data.outcome
      entry.status = (r.data.outcome == "exited" or r.data.outcome == "ok") and "finished" or "failed"
      entry.finished = r.ts
      break
    end
  end
  entry.verify = M.verify(dir)
  entry.verifies = entry.verify.ok
  return entry
end

-- Returns the run ids under $MOAT_HOME/runs, newest first.
function M.ids()
  local ids = {}
  local root = M.runs_dir()
  if not _is_dir(root) then return ids end
  for name in lfs.dir(root) do
    if _check_id(name) and _is_dir(root .. "/" .. name) then ids[#ids + 1] = name end
  end
  table.sort(ids, function(a, b) return a > b end)
  return ids
end

-- Returns every run's summary (see M.summary), newest first.
function M.list()
  local out = {}
  for i, id in ipairs(M.ids()) do out[i] = M.summary(M.runs_dir() .. "/" .. id) end
  return out
end

-- Finds a run by id or unique id prefix (nil or "--last": the newest). Returns its
-- directory, id | nil, message.
function M.find(spec)
  local ids = M.ids()
  if #ids == 0 then return nil, "no runs recorded under " .. M.runs_dir() end
  if spec == nil then return M.runs_dir() .. "/" .. ids[1], ids[1] end
  local hits = {}
  for _, id in ipairs(ids) do
    if id == spec then return M.runs_dir() .. "/" .. id, id end
    if id:sub(1, #spec) == spec then hits[#hits + 1] = id end
  end
  if #hits == 1 then return M.runs_dir() .. "/" .. hits[1], hits[1] end
  if #hits == 0 then return nil, "no run matches '" .. spec .. "' (see 'moat runs')" end
  return nil, ("'%s' matches %d runs (%s, ...); give more of the id"):format(spec, #hits, hits[1])
end

return M
