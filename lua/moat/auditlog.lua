-- The audit trail: one hash-chained, durably appended, signed log per run, under
-- $MOAT_HOME/runs/<run-id>/audit.jsonl, and one line per run start and finish in
-- $MOAT_HOME/runs.jsonl. Records are written with group commit: `record` adds to an
-- in-memory batch (chained as it is added), `commit` writes the batch with one write()
-- under the log's lock, then fsync. What goes into a record's `data` is up to the
-- formatter moat.audit (replaceable); seq, ts, type, prev, hash and the signature are
-- always computed here (bytes defined in moat.auditlog.core).
--
-- Expected failures return nil, message, kind: kind "io" when the log, the keys or the
-- home cannot be written (the caller's exit 74), "config" when MOAT_HOME is unusable or
-- the formatter is broken (exit 78). Misuse (a bad record type, writing a finished run) raises.
local core = require("moat.auditlog.core")
local lfs = require("lfs")
local sys = require("moat.c.system")
local text = require("moat.text")
local writer = require("moat.auditlog.writer")

local M = {}

M.ZERO, M.LOG, M.SIG, M.RUNS = core.ZERO, core.LOG, core.SIG, core.RUNS
M.SIGNED_PREFIX = core.SIGNED_PREFIX
M.hashed_bytes, M.hash, M.serialize = core.hashed_bytes, core.hash, core.serialize
M.signed_message, M.fingerprint = core.signed_message, core.fingerprint

local _io, _dirname, _is_dir = core.io_fail, core.dirname, core.is_dir

-- Sets the moat home directory for this process (nil: back to $MOAT_HOME or ~/.moat).
function M.set_home(dir)
  M._home = dir
end

-- Returns the moat home directory: $MOAT_HOME, else $HOME/.moat | nil, message when
-- MOAT_HOME is relative or neither variable gives an absolute path. Creates nothing.
function M.home()
  if M._home then return M._home end
  local env = os.getenv("MOAT_HOME")
  if env and env ~= "" then
    if env:sub(1, 1) ~= "/" then
      return nil, ("MOAT_HOME is a relative path (%s): set it to an absolute path, or unset it to use ~/.moat")
        :format(text.show(env)), "config"
    end
    return env
  end
  local home = os.getenv("HOME")
  if not home or home == "" then
    return nil, "neither MOAT_HOME nor HOME is set: set MOAT_HOME to an absolute path for moat's audit log", "config"
  end
  if home:sub(1, 1) ~= "/" then
    return nil, ("HOME is a relative path (%s) and MOAT_HOME is not set: set MOAT_HOME to an absolute path")
      :format(text.show(home)), "config"
  end
  return home .. "/.moat"
end

-- Returns the directory holding one directory per run | nil, message (see M.home).
function M.runs_dir()
  local home, err, kind = M.home()
  if not home then return nil, err, kind end
  return home .. "/runs"
end

-- Creates `path` (mode 0700) unless it exists; `sync`: also sync its parent so the new
-- entry survives a crash. Returns created (bool) | nil, message, "io".
local function _mkdir(path, sync)
  if _is_dir(path) then return false end
  local ok, err = sys.mkdir(path, tonumber("700", 8))
  if not ok then
    if _is_dir(path) then return false end  -- made by a concurrent moat
    return _io("cannot create directory " .. path, err)
  end
  if sync then
    local synced, serr = sys.fsync_dir(_dirname(path))
    if not synced then return _io("cannot sync the directory holding " .. path, serr) end
  end
  return true
end

-- Creates $MOAT_HOME (0700) when missing. Returns its path | nil, message, kind.
function M.ensure_home()
  local home, err, kind = M.home()
  if not home then return nil, err, kind end
  local ok
  ok, err, kind = _mkdir(home, true)
  if ok == nil then return nil, err, kind end
  return home
end

-- Returns a new run id: UTC start time to the microsecond plus 8 random hex digits,
-- e.g. 20261128T124533.123456Z-1a2b3c4d. Ids sort by start time and are filename-safe.
function M.new_id()
  local ts = sys.now(6):gsub("[-:]", "")
  return ts .. "-" .. sys.random_hex(4)
end

-- Returns the paths of the signing key pair: secret, public, their directory | nil, message.
function M.key_paths()
  local home, err, kind = M.home()
  if not home then return nil, err, kind end
  local dir = home .. "/keys"
  return dir .. "/audit.key", dir .. "/audit.pub", dir
end

local function _read_hex_key(path, len)
  local hex = core.read_file(path)
  if not hex then return nil, "missing" end
  local bin = sys.from_hex((hex:gsub("%s+$", "")))
  if not bin or #bin ~= len then return nil, "malformed" end
  return bin
end

-- Returns the public key (32 raw bytes) | nil, why.
function M.public_key()
  local sec, pub = M.key_paths()
  if not sec then return nil, pub end
  local pk, why = _read_hex_key(pub, 32)
  if not pk then return nil, pub .. ": " .. why end
  return pk
end

local function _make_keys(sec, pub, dir)
  local lock <close>, err = sys.open_log(dir .. "/.lock")
  if not lock then return _io("cannot create the signing key", err) end
  local ok, lerr = lock:lock()
  if not ok then return _io("cannot lock " .. dir .. "/.lock", lerr) end
  local sk = _read_hex_key(sec, 64)
  if not sk then
    local pk
    pk, sk = sys.sign_keypair()
    local okp, perr = sys.write_file(pub, sys.to_hex(pk) .. "\n", tonumber("644", 8))
    if not okp then return _io("cannot write the public key", perr) end
    local oks, serr = sys.write_file(sec, sys.to_hex(sk) .. "\n", tonumber("600", 8))
    if not oks then return _io("cannot write the secret key", serr) end
  end
  lock:unlock()
  return sk
end

-- Makes the Ed25519 key pair on first use (under a lock, so concurrent first runs agree on
-- one pair). Returns the secret key (raw bytes) | nil, message, kind.
function M.ensure_keys()
  local sec, pub, dir = M.key_paths()
  if not sec then return nil, pub, dir end
  local ok, err, kind = M.ensure_home()
  if not ok then return nil, err, kind end
  ok, err, kind = _mkdir(dir, true)
  if ok == nil then return nil, err, kind end
  local key = _read_hex_key(sec, 64)
  if key then return key end
  -- A failure keeps its message: `a or f()` would keep only f's first result.
  return _make_keys(sec, pub, dir)
end

-- Takes run.started fields {name, workspace, runtime, image, command, version}; creates
-- $MOAT_HOME/runs/<id>/ with its log, adds run.started to the first batch (its commit makes
-- it durable) and records the start in runs.jsonl. Returns the run (methods record, commit,
-- finish, close; fields id, dir, path) | nil, message, kind.
function M.start(fields)
  local sk, err, kind = M.ensure_keys()
  if not sk then return nil, err, kind end
  local root = M.runs_dir()
  local ok
  ok, err, kind = _mkdir(root, true)
  if ok == nil then return nil, err, kind end
  local id, dir
  for _ = 1, 16 do
    id = M.new_id()
    dir = root .. "/" .. id
    if lfs.attributes(dir, "mode") == nil and _mkdir(dir, false) then break end
    id = nil
  end
  if not id then return _io("cannot create a run directory under " .. root, "too many collisions") end
  local run
  run, err, kind = writer.open(id, dir, sk)
  if run then run, err, kind = writer.begin(run, fields or {}, _dirname(root) .. "/" .. core.RUNS) end
  if not run then
    os.remove(dir .. "/" .. core.LOG)
    lfs.rmdir(dir)
    return nil, err, kind
  end
  return run
end

-- Opens an existing run directory to append more records to it. Returns the run | nil,
-- message, kind.
function M.open(dir)
  local sk, err, kind = M.ensure_keys()
  if not sk then return nil, err, kind end
  return writer.open(core.basename(dir), dir, sk)
end

local function _store() return require("moat.auditlog.store") end

-- Reads a log: records, torn | nil, message (see moat.auditlog.store.read).
function M.read(path) return _store().read(path) end
-- Verifies a run directory or log path; returns the report (see moat.auditlog.store.verify).
function M.verify(path, opts) return _store().verify(path, opts) end
-- Summarises a run directory (see moat.auditlog.store.summary).
function M.summary(dir) return _store().summary(dir) end
-- Returns the run ids, newest first.
function M.ids() return _store().ids() end
-- Returns every run's summary, newest first; opts.name filters by run name.
function M.list(opts) return _store().list(opts) end
-- Finds a run by id, id prefix or name: directory, id | nil, message.
function M.find(spec) return _store().find(spec) end

return M
