-- Audit record formatting: turns what happened into the `data` object of one audit record.
-- A site may replace this module (e.g. /etc/moat/lua/moat/audit.lua, usually wrapping the
-- built-in one) to add fields. It only shapes `data`: seq, time, chaining and signing are
-- done by moat.auditlog and cannot be changed here. Records carry names, backends,
-- references, durations, outcomes and error kinds: never a secret value, never a backend's
-- message text (which may echo a value).
local json = require("moat.c.json")

local M = {}

local function _str(v)
  if v == nil then return nil end
  return tostring(v)
end

local function _int(v)
  if type(v) ~= "number" then return nil end
  if math.type(v) == "integer" then return v end
  if v ~= v or v == math.huge or v == -math.huge then return nil end
  return math.floor(v + 0.5)
end

local function _strings(list)
  if type(list) ~= "table" then return nil end
  local out = {}
  for i, v in ipairs(list) do out[i] = tostring(v) end
  return json.array(out)
end

local function _signal(v)
  if type(v) == "number" then return _int(v) end
  return _str(v)
end

-- One function per record type: fields (as the caller passed them) -> data.
M.types = {
  ["run.started"] = function(f)
    return {
      name = _str(f.name), workspace = _str(f.workspace), runtime = _str(f.runtime),
      image = _str(f.image), command = _strings(f.command), version = _str(f.version),
      profile = _str(f.profile),
    }
  end,
  ["policy.denied"] = function(f)
    local denials = {}
    for i, d in ipairs(f.denials or {}) do
      denials[i] = { script = _str(d.script), target = _str(d.target), reason = _str(d.reason) }
    end
    return { denials = json.array(denials) }
  end,
  ["secret.resolved"] = function(f)
    return {
      name = _str(f.name), backend = _str(f.backend), reference = _str(f.ref or f.reference),
      ms = _int(f.ms), outcome = "ok",
    }
  end,
  ["secret.failed"] = function(f)
    return {
      name = _str(f.name), backend = _str(f.backend), reference = _str(f.ref or f.reference),
      ms = _int(f.ms), outcome = "failed", kind = _str(f.kind) or "error",
    }
  end,
  -- An optional secret that was not found: the variable is left unset.
  ["secret.skipped"] = function(f)
    return {
      name = _str(f.name), backend = _str(f.backend), reference = _str(f.ref or f.reference),
      ms = _int(f.ms), outcome = "skipped", kind = "not_found",
    }
  end,
  -- A secret that was not found and has a default: the default (a plain value, never recorded) is used.
  ["secret.defaulted"] = function(f)
    return {
      name = _str(f.name), backend = _str(f.backend), reference = _str(f.ref or f.reference),
      ms = _int(f.ms), outcome = "defaulted", kind = "not_found",
    }
  end,
  ["container.started"] = function(f)
    return {
      runtime = _str(f.runtime), image = _str(f.image),
      container = _str(f.container or f.id or f.container_name),
    }
  end,
  ["container.exited"] = function(f)
    return { status = _int(f.status or f.code), signal = _signal(f.signal), ms = _int(f.ms) }
  end,
  ["run.finished"] = function(f)
    return {
      outcome = _str(f.outcome) or (f.kind and "failed" or "exited"),
      exit = _int(f.exit), kind = _str(f.kind), ms = _int(f.ms),
    }
  end,
}

-- Takes a record type and the caller's fields; returns the record's data table.
-- Raises on an unknown type (a bug in the caller).
function M.format(rtype, fields)
  local f = M.types[rtype]
  if not f then error("moat.audit: unknown record type '" .. tostring(rtype) .. "'", 2) end
  return f(fields or {})
end

return M
