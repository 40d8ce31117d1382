-- Fuzz target: moat.auditlog.verify on a fuzzed run directory. The input is the log text
-- (whose last line may be its signature), then optionally a NUL byte and the text of an
-- older moat's audit.sig. The verifier must not raise and must
-- give a coherent report; only logs signed with the fuzz key (seeds) can be valid.
local auditlog = require("moat.auditlog")
local lfs = require("lfs")
local sys = require("moat.c.system")

local M = {}

M.RUN_ID = "20260101T000000.000000Z-0f0f0f0f"
-- The public half of a key made for the fuzz seeds only (spec/fuzz/seeds.lua signs with it).
M.PUBLIC_KEY = "be07de55f90af7a1f465b1921a42e8551be090e4ff9ec4fb3ec4936455999fcd"

local STATUS = { valid = true, unfinished = true, invalid = true }

local _base, _dir

local function _rundir()
  if not _dir then
    _base = os.tmpname()
    os.remove(_base)
    assert(lfs.mkdir(_base))
    _dir = _base .. "/" .. M.RUN_ID
    assert(lfs.mkdir(_dir))
  end
  return _dir
end

local function _write(path, text)
  local f = assert(io.open(path, "wb"))
  assert(f:write(text))
  assert(f:close())
end

-- Removes the scratch run directory.
function M.cleanup()
  if not _dir then return end
  os.remove(_dir .. "/" .. auditlog.LOG)
  os.remove(_dir .. "/" .. auditlog.SIG)
  lfs.rmdir(_dir)
  lfs.rmdir(_base)
  _base, _dir = nil, nil
end

-- Splits an input into log text and signature text (nil: no audit.sig).
function M.split(data)
  local cut = data:find("\0", 1, true)
  if not cut then return data, nil end
  return data:sub(1, cut - 1), data:sub(cut + 1)
end

local function _coherent(rep, log)
  assert(type(rep) == "table", "verify returned a " .. type(rep))
  assert(STATUS[rep.status], "unknown status " .. tostring(rep.status))
  assert(rep.ok == (rep.status == "valid"), "ok does not match the status")
  assert(type(rep.torn) == "boolean", "torn is not a boolean")
  assert(math.type(rep.records) == "integer" and rep.records >= 0, "records is not a count")
  if rep.status == "valid" then
    assert(not rep.torn and log:sub(-1) == "\n", "a torn log verified")
    assert(rep.records >= 1 and rep.signed_seq == rep.records, "valid, but not signed at the last record")
    return
  end
  assert(type(rep.reason) == "string" and rep.reason ~= "", "no reason for a log that did not verify")
  if rep.status == "invalid" then
    assert(math.type(rep.bad_seq) == "integer" and rep.bad_seq >= 1, "invalid without a bad seq >= 1")
  end
end

-- Checks one input; raises on any broken property.
function M.check(data)
  local dir = _rundir()
  local log, sig = M.split(data)
  _write(dir .. "/" .. auditlog.LOG, log)
  if sig then _write(dir .. "/" .. auditlog.SIG, sig) else os.remove(dir .. "/" .. auditlog.SIG) end
  local pk = sys.from_hex(M.PUBLIC_KEY)
  local ok, rep = pcall(auditlog.verify, dir, { public_key = pk })
  assert(ok, "verify raised: " .. tostring(rep))
  _coherent(rep, log)
  local ok2, rep2 = pcall(auditlog.verify, dir .. "/" .. auditlog.LOG, { public_key = pk })
  assert(ok2 and rep2.status == rep.status and rep2.bad_seq == rep.bad_seq,
    "verifying the file and its directory disagree")
end

return M
