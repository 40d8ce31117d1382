-- One run's writer, with group commit: `record` formats a record, chains it to the run's
-- head and adds it to the batch; `commit` writes the whole batch with one write() under the
-- log's flock, then fsync. If another writer appended meanwhile, the batch is chained anew
-- onto the tail it finds under the lock, so concurrent writers still form one chain.
-- Failures return nil, message, kind ("io" or "config"); misuse raises. See moat.auditlog.
local chain = require("moat.auditlog.chain")
local core = require("moat.auditlog.core")
local json = require("moat.c.json")
local sys = require("moat.c.system")

local Run = {}
Run.__index = Run

local _io = core.io_fail

local function _config(msg)
  return nil, msg, "config"
end

local function _origin()
  local ok, loader = pcall(require, "moat.loader")
  local o = ok and type(loader) == "table" and loader.origin and loader.origin["moat.audit"]
  return o and (" (" .. o.file .. ")") or ""
end

-- Calls the formatter moat.audit; returns data that encodes as a JSON object | nil, message, "config".
local function _data(rtype, fields)
  local ok, fmt = pcall(require, "moat.audit")
  if not ok then return _config("cannot load the audit formatter moat.audit: " .. tostring(fmt)) end
  if type(fmt) ~= "table" or type(fmt.format) ~= "function" then
    return _config("the audit formatter moat.audit has no function format(type, fields)")
  end
  local data
  ok, data = pcall(fmt.format, rtype, fields)
  if not ok then
    local msg = type(data) == "table" and data.message or tostring(data)
    return _config(("audit formatter moat.audit%s failed on %s: %s"):format(_origin(), rtype, msg))
  end
  if type(data) ~= "table" then
    return _config(("audit formatter moat.audit%s returned a %s for %s, not a table"):format(
      _origin(), type(data), rtype))
  end
  local enc, err = json.encode(data, { canonical = true })
  if not enc or enc:sub(1, 1) ~= "{" then
    return _config(("audit formatter moat.audit%s returned data for %s that is not a JSON object%s"):format(
      _origin(), rtype, err and (": " .. err) or ""))
  end
  return data
end

-- Reads the log's last record under the lock: returns seq, hash (0, ZERO when empty) | nil, why.
local function _tail(log, path)
  local last, torn = log:tail()
  if type(torn) == "string" then return nil, "cannot read the end of " .. path .. ": " .. torn end
  if torn then
    return nil, path .. " ends in a torn line (an earlier write was cut off); refusing to append, start a new run"
  end
  if not last then return 0, core.ZERO end
  local p = json.decode(last)
  if core.is_signature(p) then return nil, path .. " ends in its signature: the run is finished; refusing to append" end
  if not core.is_object(p) or math.type(p.seq) ~= "integer" or type(p.hash) ~= "string" then
    return nil, "the last line of " .. path .. " is not an audit record; refusing to append"
  end
  return p.seq, p.hash
end

-- Chains the batch anew after seq, hash (another writer appended since it was built).
local function _rechain(batch, seq, hash)
  for _, rec in ipairs(batch) do
    seq = seq + 1
    rec.seq, rec.prev = seq, hash
    rec.hash = assert(core.hash(rec))
    hash = rec.hash
  end
end

-- Writes the batch's lines (and `tail`, the signature line, when given) with one write(),
-- then fsync. Returns how many records were written (all or none), err.
local function _write(log, batch, tail)
  local lines = {}
  for i, rec in ipairs(batch) do lines[i] = assert(core.serialize(rec)) .. "\n" end
  lines[#lines + 1] = tail
  local ok, err = log:append_lines(table.concat(lines))
  return ok and #batch or 0, err
end

-- The signature line over the last record of `batch` (as chained under the lock).
function Run:_signature(batch)
  local rec = batch[#batch]
  local sig = sys.sign(core.signed_message(self.id, rec.seq, rec.hash), self._sk)
  return core.signature_line(self.id, rec.seq, rec.hash, sys.to_hex(sig))
end

-- After the first durable batch: the entries of the log in the run's directory and of that
-- directory in runs/ are made durable too. Returns true | nil, message, "io".
function Run:_sync_dirs()
  for _, dir in ipairs({ self.dir, core.dirname(self.dir) }) do
    local s, serr = sys.fsync_dir(dir)
    if not s then return _io("cannot sync the directory " .. dir, serr) end
  end
  self._synced_dir = true
  return true
end

-- Adds one record of `rtype` formatted from `fields` to the batch, chained to the run's
-- head. Returns the record { seq, ts, type, data, prev, hash } (seq, prev and hash may
-- change at commit if another writer appended) | nil, message, "config".
function Run:record(rtype, fields)
  if self.finished then error("audit: run " .. self.id .. " is already finished", 2) end
  if type(rtype) ~= "string" or not rtype:match("^[%w_]+%.[%w_.]+$") then
    error("audit: bad record type " .. tostring(rtype), 2)
  end
  local data, err, kind = _data(rtype, fields)
  if not data then return nil, err, kind end
  local rec = { seq = self._seq + 1, ts = sys.now(), type = rtype, data = data, prev = self._hash }
  local h, herr = core.hash(rec)
  if not h then return _config(("cannot encode the %s record: %s"):format(rtype, herr)) end
  rec.hash = h
  self._batch[#self._batch + 1] = rec
  self._seq, self._hash, self.last = rec.seq, h, rec
  return rec
end

-- Writes the batch as one durable append (one write() under flock, then fsync), ended by the
-- signature line when `sign`; the first commit also makes the log's place durable (see
-- _sync_dirs). Returns true | nil, message, "io" (the batch is kept minus what was written, so
-- the log stays a valid chain).
function Run:commit(sign)
  local batch = self._batch
  if #batch == 0 then return true end
  local log = self._log
  local ok, err = log:lock()
  if not ok then return _io("cannot lock " .. self.path, err) end
  local seq, hash = _tail(log, self.path)
  local written = 0
  if seq and (seq ~= batch[1].seq - 1 or hash ~= batch[1].prev) then _rechain(batch, seq, hash) end
  if seq then written, err = _write(log, batch, sign and self:_signature(batch) or nil) else err = hash end
  log:unlock()
  self._seq, self._hash = batch[#batch].seq, batch[#batch].hash
  if written > 0 then self._batch = table.move(batch, written + 1, #batch, 1, {}) end
  if err then
    local rec = batch[written + 1]
    return _io(("cannot append record %d (%s) to %s"):format(rec.seq, rec.type, self.path), err)
  end
  if not self._synced_dir then return self:_sync_dirs() end
  return true
end

-- Records run.finished from `fields` and commits it with the signature line (run id, seq and
-- hash of that record, signed) in the same write, then records the finish in runs.jsonl
-- (fsync'd, with the start line before it). Returns the run.finished record | nil, message, kind.
function Run:finish(fields)
  local rec, err, kind = self:record("run.finished", fields)
  if not rec then return nil, err, kind end
  local ok
  ok, err, kind = self:commit(true)
  if not ok then return nil, err, kind end
  self.finished = true
  self:close()
  ok, err = chain.append(self._runs, "finish", self.id, rec.seq, rec.hash, self.key)
  if not ok then return nil, "audit log: " .. err, "io" end
  return rec
end

-- Closes the log file (idempotent); records not committed are dropped.
function Run:close()
  if self._log then self._log:close() end
end

local M = {}

-- Opens the log of run `id` in `dir` (creating it 0600) for writing with secret key `sk`.
-- Returns the run | nil, message, "io".
function M.open(id, dir, sk)
  local path = dir .. "/" .. core.LOG
  local log, err = sys.open_log(path)
  if not log then return _io("cannot open " .. path, err) end
  local home = dir:match("^(.*)/runs/[^/]+/*$") or (dir .. "/../..")
  local run = setmetatable({ id = id, dir = dir, path = path, _log = log, _sk = sk, _batch = {},
    _runs = home .. "/" .. core.RUNS, key = core.fingerprint(sk:sub(33, 64)) }, Run)
  -- Under the lock: another writer's append in progress is not a torn line.
  local locked, lerr = log:lock()
  local seq, hash = nil, lerr
  if locked then
    seq, hash = _tail(log, path)
    log:unlock()
  end
  if not seq then
    log:close()
    return _io("cannot open " .. path, hash)
  end
  -- A log with records already has its place made durable.
  run._seq, run._hash, run._synced_dir = seq, hash, seq > 0
  return run
end

-- Adds run.started to a new run's batch and writes the run's start line into runs.jsonl at
-- `runs`, before any of the run's records: a moat killed at any point leaves no run with
-- records that runs.jsonl does not name. The line is not fsync'd here: the finish line's fsync
-- makes it durable (a machine that stops before leaves the newest run unlisted, which
-- verification accepts). Returns the run | nil, message, kind.
function M.begin(run, fields, runs)
  run._runs = runs
  local rec, err, kind = run:record("run.started", fields)
  if rec then
    local ok, cerr = chain.append(runs, "start", run.id, rec.seq, rec.hash, run.key, { sync = false })
    if not ok then rec, err, kind = nil, "audit log: " .. cerr, "io" end
  end
  if not rec then
    run:close()
    return nil, err, kind
  end
  return run
end

M.Run = Run

return M
