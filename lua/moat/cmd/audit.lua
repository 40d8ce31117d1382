-- `moat audit [RUN | --last] [--verify] [--json]`: show a run's audit log, or verify it.
local args = require("moat.args")
local auditlog = require("moat.auditlog")
local cli = require("moat.cli")
local exit = require("moat.exit")

local M = {}

local SPEC = { ["--last"] = "flag", ["--verify"] = "flag", ["--json"] = "flag" }

-- Fields shown first for each type; any others follow in key order.
M.order = {
  ["run.started"] = { "name", "runtime", "image", "command", "workspace", "version" },
  ["policy.denied"] = { "denials" },
  ["secret.resolved"] = { "name", "backend", "reference", "ms", "outcome" },
  ["secret.failed"] = { "name", "backend", "reference", "ms", "outcome", "kind" },
  ["container.started"] = { "runtime", "image", "container" },
  ["container.exited"] = { "status", "signal", "ms" },
  ["run.finished"] = { "outcome", "exit", "kind", "ms" },
}

local function _quote(s)
  if s:match("^[%w_./@:+%-]+$") then return s end
  return '"' .. s:gsub('[\\"]', "\\%0"):gsub("\n", "\\n"):gsub("[%z\1-\31\127]", function(c)
    return ("\\x%02x"):format(c:byte())
  end) .. '"'
end

local function _show(v)
  local json = require("moat.c.json")
  if type(v) == "string" then return _quote(v) end
  if type(v) == "table" then
    if getmetatable(v) == json.array_mt then
      local parts = {}
      for i, x in ipairs(v) do parts[i] = _show(x) end
      return "[" .. table.concat(parts, " ") .. "]"
    end
    return (json.encode(v, { canonical = true })) or "{...}"
  end
  if v == json.null then return "null" end
  return tostring(v)
end

-- Returns "k=v k=v ..." for a record's data, the type's key fields first.
function M.fields(rtype, data)
  if type(data) ~= "table" then return "" end
  local out, seen = {}, {}
  for _, k in ipairs(M.order[rtype] or {}) do
    if data[k] ~= nil then
      out[#out + 1] = k .. "=" .. _show(data[k])
      seen[k] = true
    end
  end
  local rest = {}
  for k in pairs(data) do
    if type(k) == "string" and not seen[k] then rest[#rest + 1] = k end
  end
  table.sort(rest)
  for _, k in ipairs(rest) do out[#out + 1] = k .. "=" .. _show(data[k]) end
  return table.concat(out, " ")
end

-- Returns the one-line verdict for people on a verify report of run `id`.
function M.verdict(id, rep)
  if rep.status == "valid" then
    return ("run %s: valid: %d records, chain intact, last record (seq %d) signed"):format(
      id, rep.records, rep.signed_seq or rep.records)
  elseif rep.status == "unfinished" then
    return ("run %s: unfinished: no signature — the run did not finish (%d records, chain intact%s)"):format(
      id, rep.records, rep.torn and "; the last line is torn and was ignored" or "")
  end
  return ("run %s: invalid at seq %s: %s"):format(id, tostring(rep.bad_seq or "?"), rep.reason or "?")
end

local function _listing(id, dir)
  local recs, torn = auditlog.read(dir)
  if not recs then exit.fail(exit.IOERR, torn) end
  local out = { "run " .. id, "log " .. dir .. "/" .. auditlog.LOG }
  for _, r in ipairs(recs) do
    if r.bad then
      out[#out + 1] = ("%-24s %4d %s"):format("?", r.seq, "(not a JSON object)")
    else
      out[#out + 1] = ("%-24s %4s %-17s %s"):format(tostring(r.ts), tostring(r.seq), tostring(r.type),
        M.fields(r.type, r.data))
    end
  end
  if torn then out[#out + 1] = "(the last line is torn: a write was cut off)" end
  out[#out + 1] = M.verdict(id, auditlog.verify(dir))
  return table.concat(out, "\n") .. "\n"
end

local function _json_lines(dir)
  local f = io.open(dir .. "/" .. auditlog.LOG, "rb")
  if not f then exit.fail(exit.IOERR, "cannot read " .. dir .. "/" .. auditlog.LOG) end
  local text = f:read("a")
  f:close()
  -- Only complete lines: a torn last line is not a record.
  return text:match("^(.*\n)") or ""
end

-- Runs `moat audit`; returns the exit status (verify: 0 valid, 1 unfinished or invalid).
function M.main(argv, ctx)
  local opts, pos = args.parse(argv, SPEC)
  if not opts then cli.usage_error(ctx, pos) end
  if #pos > 1 then cli.usage_error(ctx, "give at most one RUN") end
  if pos[1] and opts.last then cli.usage_error(ctx, "give RUN or --last, not both") end
  local dir, id = auditlog.find(pos[1])
  if not dir then exit.fail(exit.USAGE, id) end
  if opts.verify then
    local rep = auditlog.verify(dir)
    if opts.json then
      local json = require("moat.c.json")
      io.stdout:write(assert(json.encode({
        run = id, ok = rep.ok, status = rep.status, bad_seq = rep.bad_seq, reason = rep.reason,
        torn = rep.torn, records = rep.records, signed_seq = rep.signed_seq,
      }, { canonical = true })), "\n")
    else
      io.stdout:write(M.verdict(id, rep), "\n")
    end
    return rep.ok and 0 or 1
  end
  io.stdout:write(opts.json and _json_lines(dir) or _listing(id, dir))
  return 0
end

return M
