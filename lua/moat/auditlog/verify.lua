-- Verification of one run: its chain of records, the signature of its head, and what
-- runs.jsonl recorded about it (start and finish heads, key). The checks work on text, so
-- a run directory and an exported bundle are verified by the same code.
local core = require("moat.auditlog.core")
local json = require("moat.c.json")
local sys = require("moat.c.system")

local M = {}

local FIELDS = { seq = 1, ts = 1, type = 1, data = 1, prev = 1, hash = 1 }

-- Checks one decoded line as record number `n` following hash `prev`; returns nil or why.
function M.check_record(line, r, n, prev)
  if not core.is_object(r) then return "line " .. n .. " is not a JSON object" end
  for k in pairs(r) do
    if type(k) ~= "string" or not FIELDS[k] then return "unexpected field " .. tostring(k) end
  end
  if math.type(r.seq) ~= "integer" then return "seq is missing or not an integer" end
  if r.seq ~= n then
    if r.seq > n then
      return ("expected seq %d, found seq %d: record %d is missing (deleted)"):format(n, r.seq, n)
    end
    return ("expected seq %d, found seq %d: records are out of order, repeated or inserted"):format(n, r.seq)
  end
  if type(r.ts) ~= "string" or type(r.type) ~= "string" then return "ts or type is missing" end
  if not core.is_object(r.data) then return "data is not an object" end
  if type(r.prev) ~= "string" or type(r.hash) ~= "string" then return "prev or hash is missing" end
  if r.prev ~= prev then
    return "prev does not match the hash of the record before it (a record was removed, inserted or reordered)"
  end
  if core.hash(r) ~= r.hash then return "hash does not match the record's contents (the record was changed)" end
  if core.serialize(r) ~= line then return "the line is not in canonical form (it was edited)" end
  return nil
end

local function _report(status, fields)
  fields.status = status
  fields.ok = status == "valid"
  fields.torn = fields.torn or false
  return fields
end

-- Walks the chain of a log's text; returns the decoded records, torn | nil, invalid report.
local function _chain(text)
  local lines, rest = core.lines(text)
  local torn = rest ~= ""
  local prev, recs = core.ZERO, {}
  for n, line in ipairs(lines) do
    local r = json.decode(line)
    local why = core.is_signature(r)
      and "a signature line is followed by more lines (they were added after the run was signed)"
      or M.check_record(line, r, n, prev)
    if why then return nil, _report("invalid", { bad_seq = n, reason = why, records = n - 1, torn = torn }) end
    recs[n], prev = r, r.hash
  end
  return recs, torn
end

-- Decodes a signature's text (the log's last line, or an older moat's audit.sig): { run,
-- seq, hash, sig } | nil.
local function _signature(text)
  local s = json.decode((text:gsub("\n$", "")))
  if not core.is_object(s) or math.type(s.seq) ~= "integer" or type(s.hash) ~= "string"
      or type(s.sig) ~= "string" or type(s.run) ~= "string" then
    return nil
  end
  return s
end

-- Checks the signature `s` over the chain `recs` of run `run_id` with key `pk`; returns nil or
-- bad_seq, why.
local function _check_signature(s, recs, torn, run_id, pk, pk_why)
  local count = #recs
  -- Every finished run has at least run.started and run.finished: a signature below seq 1 is forged.
  if s.seq < 1 then return 1, ("the signature names seq %d; a signed run starts at seq 1"):format(s.seq) end
  if s.seq > count then
    return count + 1, ("the log ends at seq %d but the signature covers seq %d: "
      .. "records %d..%d are missing (truncated)%s"):format(
      count, s.seq, count + 1, s.seq, torn and "; the last line is torn" or "")
  end
  if s.seq < count then
    return s.seq + 1, ("seq %d comes after the signed last record (seq %d): records were appended"):format(
      s.seq + 1, s.seq)
  end
  if torn then return count + 1, "a torn line follows the signed last record" end
  if s.hash ~= recs[count].hash then
    return s.seq, ("the signature is for a different seq %d (hash mismatch)"):format(s.seq)
  end
  if s.run ~= run_id then return s.seq, ("the signature is for run %s, not %s"):format(s.run, run_id) end
  if not pk then return s.seq, "cannot check the signature: no public key (" .. tostring(pk_why) .. ")" end
  local sig = sys.from_hex(s.sig)
  if not sig or not sys.sign_verify(sig, core.signed_message(run_id, s.seq, s.hash), pk) then
    return s.seq, ("the signature of seq %d does not match (not made by this moat's key, or altered)"):format(s.seq)
  end
  return nil
end

-- Verifies a run from text: `text` of its audit.jsonl (nil: missing), `sigtext` of its
-- signature when it is not the log's last line (an older moat's audit.sig; nil: none), its
-- id, and key = { pk = raw public key | nil, why, pin = fingerprint | nil }. Returns the
-- report { ok, status = "valid"|"unfinished"|"invalid", bad_seq, reason, torn, records,
-- signed_seq, key } and the decoded records.
function M.text(text, sigtext, run_id, key)
  if not text then
    return _report("invalid", { bad_seq = 1, records = 0, reason = "the log " .. core.LOG .. " is missing" }), {}
  end
  if not sigtext then text, sigtext = core.split_signature(text) end
  local recs, torn = _chain(text)
  if not recs then return torn, {} end
  local count = #recs
  if not sigtext then
    return _report("unfinished", { records = count, torn = torn,
      reason = "no signature — the run did not finish" .. (torn and " (the last line is torn)" or "") }), recs
  end
  local s = _signature(sigtext)
  if not s then
    return _report("invalid", { bad_seq = math.max(count, 1), records = count, torn = torn,
      reason = "the signature is malformed" }), recs
  end
  local fp = key.pk and core.fingerprint(key.pk) or nil
  local bad, why = _check_signature(s, recs, torn, run_id, key.pk, key.why)
  if not bad and key.pin and fp ~= key.pin then
    bad, why = s.seq, ("the run is signed by key %s, not by the pinned key %s"):format(fp, key.pin)
  end
  if bad then
    return _report("invalid", { bad_seq = bad, reason = why, records = count, torn = torn, signed_seq = s.seq,
      key = fp }), recs
  end
  return _report("valid", { records = count, signed_seq = s.seq, key = fp }), recs
end

-- Returns the first seq at which `recs` departs from the heads runs.jsonl recorded, or the
-- finish seq when only the last head differs.
local function _diverges(recs, slot)
  if slot.start and recs[1] and recs[1].hash ~= slot.start.head then return 1 end
  return slot.finish and slot.finish.head_seq or 1
end

local function _invalid(rep, seq, why)
  rep.status, rep.ok, rep.bad_seq, rep.reason = "invalid", false, seq, why
  return rep
end

-- Checks a run whose runs.jsonl finish line `fin` exists against its report and records.
local function _cross_finished(rep, recs, slot, fin)
  local n, at = #recs, recs[fin.head_seq]
  if rep.status == "unfinished" then
    if not at then
      return _invalid(rep, n + 1, ("the log ends at seq %d but %s records the run's finish at seq %d: "
        .. "the tail (seq %d..%d) and the signature were deleted"):format(
        n, core.RUNS, fin.head_seq, n + 1, fin.head_seq))
    end
    if at.hash == fin.head and n == fin.head_seq then
      return _invalid(rep, fin.head_seq, ("the signature was deleted: %s records the run's finish at seq %d")
        :format(core.RUNS, fin.head_seq))
    end
  end
  if rep.key and fin.key ~= rep.key then
    return _invalid(rep, _diverges(recs, slot), ("the signing key was replaced: the run is signed by %s "
      .. "but %s recorded %s when it finished"):format(rep.key, core.RUNS, fin.key))
  end
  if not at or at.hash ~= fin.head or n ~= fin.head_seq then
    return _invalid(rep, _diverges(recs, slot), ("the log does not end at the head %s recorded at the "
      .. "run's finish (seq %d): records were rewritten, removed or added"):format(core.RUNS, fin.head_seq))
  end
  return rep
end

-- Adds what runs.jsonl says about the run to its report: slot = { start, finish } lines of
-- the run | nil when runs.jsonl does not list it, enclosed = true when runs.jsonl lists runs
-- both older and newer than it (so it should have been listed). A run newer than every
-- listed one may be unlisted: its lines become durable with its finish, and a crash before
-- leaves it out. Returns the report.
function M.cross(rep, recs, slot, enclosed)
  if rep.status == "invalid" then return rep end
  if not slot then
    if enclosed and #recs > 0 then
      return _invalid(rep, 1, ("the run is not listed in %s although runs before and after it are: its lines "
        .. "were removed"):format(core.RUNS))
    end
    return rep
  end
  if slot.finish then return _cross_finished(rep, recs, slot, slot.finish) end
  if slot.start and recs[1] and recs[1].hash ~= slot.start.head then
    return _invalid(rep, 1, ("record seq 1 is not the run.started record %s recorded (it was replaced)")
      :format(core.RUNS))
  end
  if rep.status == "valid" then
    rep.note = ("%s has no finish line for this run (moat stopped between signing and recording it)")
      :format(core.RUNS)
  end
  return rep
end

return M
