-- Portable audit bundles: one run's log lines (byte for byte), its signature, the public
-- key and its lines of runs.jsonl in one JSON file, verifiable on any machine without a
-- moat home.
local chain = require("moat.auditlog.chain")
local core = require("moat.auditlog.core")
local json = require("moat.c.json")
local lfs = require("lfs")
local sys = require("moat.c.system")
local verify = require("moat.auditlog.verify")

local M = {}

M.FORMAT = "moat-audit-bundle-v1"

-- Builds the bundle of run `id` in directory `dir` of moat home `home`; returns the table
-- | nil, message.
function M.build(home, dir, id)
  local text = core.read_file(dir .. "/" .. core.LOG)
  if not text then return nil, "cannot read " .. dir .. "/" .. core.LOG end
  local body, sigline = core.split_signature(text)
  local lines, rest = core.lines(body)
  local pub = core.read_file(home .. "/keys/audit.pub")
  local pk = core.parse_public_key(pub)
  if not pk then return nil, "cannot read the public key " .. home .. "/keys/audit.pub" end
  local runs = {}
  for _, line in ipairs(core.lines(core.read_file(home .. "/" .. core.RUNS) or "")) do
    local e = json.decode(line)
    if core.is_object(e) and e.run == id then runs[#runs + 1] = line end
  end
  local sig = sigline or core.read_file(dir .. "/" .. core.SIG)
  return {
    format = M.FORMAT, run = id, records = json.array(lines), torn = rest ~= "" and rest or nil,
    signature = sig and sig:gsub("\n$", "") or nil, public_key = sys.to_hex(pk), key = core.fingerprint(pk),
    runs = json.array(runs),
  }
end

-- Writes `bundle` to `path` with mode 0600, refusing to replace anything already there
-- (the file appears complete or not at all). Returns true | nil, message.
function M.write(path, bundle)
  if lfs.symlinkattributes(path, "mode") then return nil, path .. " already exists; moat does not overwrite it" end
  local body = assert(json.encode(bundle, { canonical = true })) .. "\n"
  local tmp = ("%s.moat-%s"):format(path, sys.random_hex(6))
  local ok, err = sys.write_file(tmp, body, tonumber("600", 8))
  if not ok then return nil, tostring(err) end
  -- A hard link fails if the name was taken meanwhile: no existing file is ever replaced.
  local linked, lerr = lfs.link(tmp, path)
  os.remove(tmp)
  if not linked then return nil, ("cannot create %s: %s"):format(path, tostring(lerr)) end
  return true
end

-- Decodes and checks the shape of a bundle's text; returns the bundle | nil, message.
function M.decode(text)
  local b = json.decode(text or "")
  if not core.is_object(b) or b.format ~= M.FORMAT then
    return nil, "not a moat audit bundle (" .. M.FORMAT .. ")"
  end
  if not core.is_id(b.run) or type(b.records) ~= "table" or type(b.runs) ~= "table" then
    return nil, "the bundle lacks its run id, records or runs.jsonl lines"
  end
  for _, list in ipairs({ b.records, b.runs }) do
    for _, line in ipairs(list) do
      if type(line) ~= "string" or line:find("\n", 1, true) then
        return nil, "the bundle holds a line that is not a one-line string"
      end
    end
  end
  return b
end

-- Returns the runs.jsonl lines of the bundle as { start, finish } | nil, why.
local function _slot(b)
  local slot = {}
  for _, line in ipairs(b.runs) do
    local e = json.decode(line)
    local why = chain.check_line(line, e, core.is_object(e) and e.seq or 0, nil)
    if why then return nil, "its runs.jsonl line is damaged: " .. why end
    if e.run ~= b.run then return nil, "its runs.jsonl line names run " .. tostring(e.run) end
    slot[e.event] = e
  end
  return next(slot) and slot or nil
end

-- Verifies a bundle's text. opts.public_key (raw) replaces the bundle's key; opts.key pins
-- a fingerprint. Returns the report (as moat.auditlog.store.verify, plus run) | nil, message.
function M.verify(text, opts)
  opts = opts or {}
  local b, err = M.decode(text)
  if not b then return nil, err end
  local pk = opts.public_key or core.parse_public_key(b.public_key)
  local key = { pk = pk, why = "the bundle has no valid public key", pin = opts.key }
  local log = #b.records > 0 and table.concat(b.records, "\n") .. "\n" or ""
  if type(b.torn) == "string" then log = log .. b.torn end
  local sig = type(b.signature) == "string" and b.signature .. "\n" or nil
  local rep, recs = verify.text(log, sig, b.run, key)
  rep.run = b.run
  local slot, why = _slot(b)
  if why then
    rep.status, rep.ok, rep.bad_seq, rep.reason = "invalid", false, rep.bad_seq or 1, why
    return rep
  end
  return verify.cross(rep, recs, slot, false)
end

return M
