-- The bytes of the audit trail, defined once for the writer, the verifier and bundles:
-- a record's line and hash, a run's signed message, a key's fingerprint, the lines of a
-- runs.jsonl entry. Pure functions over strings and tables; no files.
local json = require("moat.c.json")
local lfs = require("lfs")
local sys = require("moat.c.system")

local M = {}

M.ZERO = string.rep("0", 64)          -- `prev` of the first record (and of runs.jsonl's first line)
M.LOG = "audit.jsonl"                 -- the log, in the run's directory
M.SIG = "audit.sig"                   -- the signature beside the log, as earlier moat versions wrote it
M.RUNS = "runs.jsonl"                 -- the cross-run chain, in $MOAT_HOME
M.SIGNED_PREFIX = "moat-audit-v1\n"   -- start of every signed message (domain separation)
M.FP_PREFIX = "ed25519:"              -- start of a key fingerprint

-- Field order of a record line, and of a runs.jsonl line.
M.KEYS = { "seq", "ts", "type", "data", "prev", "hash" }
M.RUN_KEYS = { "seq", "ts", "event", "run", "head_seq", "head", "key", "prev", "hash" }

-- Returns `v` in canonical JSON | nil, message. Integers and strings of characters JSON never
-- escapes (ids, hashes, times, types) are written here; the rest goes through the encoder,
-- which gives the same bytes for those, only at the cost of a call (a record's line and hash
-- took a dozen encoder calls, a tenth of a run's start-up).
local function _value(v)
  if math.type(v) == "integer" then return tostring(v) end
  if type(v) == "string" and not v:find("[^0-9A-Za-z._:+-]") then return '"' .. v .. '"' end
  return json.encode(v, { canonical = true })
end

-- Returns `obj` without its "hash", restricted to `keys`, in canonical JSON | nil, message.
local function _body(obj, keys)
  local present = {}
  for _, k in ipairs(keys) do
    if k ~= "hash" and obj[k] ~= nil then present[#present + 1] = k end
  end
  if #present == 0 then return json.encode({}, { canonical = true }) end
  table.sort(present)  -- canonical: keys in byte order (they are lower-case ASCII)
  local parts = {}
  for i, k in ipairs(present) do
    local v, err = _value(obj[k])
    if not v then return nil, err end
    parts[i] = '"' .. k .. '":' .. v
  end
  return "{" .. table.concat(parts, ",") .. "}"
end

-- Returns the bytes whose SHA-256 is a record's hash: prev ‖ canonical JSON of the record
-- without "hash" (keys sorted, no spaces). Returns string | nil, message.
function M.hashed_bytes(rec, keys)
  local body, err = _body(rec, keys or M.KEYS)
  if not body then return nil, err end
  if type(rec.prev) ~= "string" then return nil, "prev is not a string" end
  return rec.prev .. body
end

-- Returns the SHA-256 (hex) of a record (or of a runs.jsonl line with keys = M.RUN_KEYS) | nil, message.
function M.hash(rec, keys)
  local bytes, err = M.hashed_bytes(rec, keys)
  if not bytes then return nil, err end
  return sys.sha256(bytes)
end

-- Returns the line (without "\n") of a complete record: keys in `keys` order (default the
-- record's seq, ts, type, data, prev, hash), each value in canonical JSON | nil, message.
function M.serialize(rec, keys)
  local parts = {}
  for _, k in ipairs(keys or M.KEYS) do
    if rec[k] ~= nil then
      local v, err = _value(rec[k])
      if not v then return nil, k .. ": " .. err end
      parts[#parts + 1] = '"' .. k .. '":' .. v
    end
  end
  return "{" .. table.concat(parts, ",") .. "}"
end

-- Returns the message a run's signature covers: prefix, run id, seq and hash of its last record.
function M.signed_message(run_id, seq, hash)
  return M.SIGNED_PREFIX .. run_id .. "\n" .. tostring(seq) .. "\n" .. hash
end

-- Returns the signature line that ends a finished run's log: run id, seq and hash of its
-- last record and the signature over them (hex), in canonical JSON, "\n"-ended. It is not a
-- record (no prev, no type), so the chain of records ends before it; written with the last
-- records in one write, one fsync makes both durable.
function M.signature_line(run_id, seq, hash, sig_hex)
  return assert(json.encode({ run = run_id, seq = seq, hash = hash, sig = sig_hex }, { canonical = true })) .. "\n"
end

-- Returns whether decoded line `obj` is a signature line (not a record).
function M.is_signature(obj)
  return M.is_object(obj) and obj.sig ~= nil and obj.prev == nil and obj.type == nil
end

-- Splits a log's text into the records' text and its signature line (when its last
-- complete line is one, and nothing torn follows) | text, nil.
function M.split_signature(text)
  local n = #text
  if n == 0 or text:byte(n) ~= 10 then return text, nil end
  local s = n - 1
  while s > 0 and text:byte(s) ~= 10 do s = s - 1 end
  local last = text:sub(s + 1)
  if not M.is_signature(json.decode(last:sub(1, -2))) then return text, nil end
  return text:sub(1, s), last
end

-- Returns the fingerprint of a raw Ed25519 public key: "ed25519:" and the key's SHA-256 in hex.
function M.fingerprint(pk)
  return M.FP_PREFIX .. sys.sha256(pk)
end

-- Parses the text of a public key file (64 hex digits, as in $MOAT_HOME/keys/audit.pub)
-- into 32 raw bytes | nil.
function M.parse_public_key(text)
  local hex = type(text) == "string" and text:match("^%s*(%x+)%s*$")
  local pk = hex and #hex == 64 and sys.from_hex(hex)
  return pk and #pk == 32 and pk or nil
end

-- Returns the normalised fingerprint in `text` ("ed25519:<64 hex>") | nil.
function M.parse_fingerprint(text)
  local hex = type(text) == "string" and text:match("^%s*" .. M.FP_PREFIX .. "(%x+)%s*$")
  if hex and #hex == 64 then return M.FP_PREFIX .. hex:lower() end
  return nil
end

-- Splits text into complete lines and the torn rest ("" when none).
function M.lines(text)
  local lines, pos = {}, 1
  while true do
    local nl = text:find("\n", pos, true)
    if not nl then break end
    lines[#lines + 1] = text:sub(pos, nl - 1)
    pos = nl + 1
  end
  return lines, text:sub(pos)
end

-- The most read_file takes in (runs.jsonl grows by two lines a run).
M.READ_MAX = 256 << 20

-- Returns the whole content of a regular file of at most `max` bytes (default READ_MAX) |
-- nil, message, errno.
function M.read_file(path, max)
  return require("moat.c.system").read_file(path, max or M.READ_MAX)
end

-- Returns the last component of a path, and the path without it.
function M.basename(path) return (path:match("([^/]+)/*$")) or path end
function M.dirname(path) return (path:match("^(.*)/[^/]+/*$")) or "." end

-- Returns true when `path` is a directory.
function M.is_dir(path) return lfs.attributes(path, "mode") == "directory" end

-- Returns the failure triple of an audit write: nil, "audit log: what: err", "io".
function M.io_fail(what, err)
  return nil, ("audit log: %s: %s"):format(what, tostring(err)), "io"
end

-- Returns true when `v` decoded from JSON is an object (not an array).
function M.is_object(v)
  return type(v) == "table" and getmetatable(v) ~= json.array_mt
end

-- Returns whether `id` has the form of a run id (sortable time, random suffix).
function M.is_id(id)
  return type(id) == "string" and id:match("^%d%d%d%d%d%d%d%dT%d%d%d%d%d%d%.%d%d%d+Z%-%x+$") ~= nil
end

return M
