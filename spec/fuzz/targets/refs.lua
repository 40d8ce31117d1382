-- Fuzz target: every built-in reference parser (moat.backends.<scheme>.parse). Each input is
-- parsed as is and behind each scheme's prefix. A parser must not raise; it returns either
-- a table that spells the reference back exactly, or nil and a printable reason. References
-- starting with '-' or holding control characters are always refused (SECURITY.md item 11).
local M = {}

-- How each backend's parsed table spells its reference.
local SPELL = {
  op = function(p)
    return "op://" .. p.vault .. "/" .. p.item .. (p.section and "/" .. p.section or "") .. "/" .. p.field
      .. (p.query and "?" .. p.query or "")
  end,
  ssm = function(p)
    assert(p.name == p.path .. (p.selector or ""), "ssm name is not path .. selector")
    return "ssm://" .. (p.region or "") .. p.name
  end,
  env = function(p) return "env://" .. p.var end,
  awssm = function(p)
    return "awssm://" .. (p.region or "") .. "/" .. p.id .. (p.key and "#" .. p.key or "")
  end,
}

M.SCHEMES = { "op", "ssm", "env", "awssm" }

local _backends = {}
for _, scheme in ipairs(M.SCHEMES) do _backends[scheme] = require("moat.backends." .. scheme) end

local function _fields_are_strings(p)
  for k, v in pairs(p) do
    assert(type(k) == "string" and type(v) == "string", "parsed field " .. tostring(k) .. " is not a string")
  end
end

-- Parses `ref` with the backend of `scheme` and checks the result.
local function _one(scheme, ref)
  local parsed, why = _backends[scheme].parse(ref)
  if parsed == nil then
    assert(type(why) == "string" and why ~= "", scheme .. ".parse refused without a reason")
    assert(not why:find("[%z\1-\31\127]"), scheme .. ".parse reason holds control characters")
    return
  end
  assert(type(parsed) == "table", scheme .. ".parse returned a " .. type(parsed))
  assert(ref:sub(1, 1) ~= "-", scheme .. ".parse accepted a reference starting with '-'")
  assert(not ref:find("[%z\1-\31\127]"), scheme .. ".parse accepted control characters")
  _fields_are_strings(parsed)
  assert(SPELL[scheme](parsed) == ref, scheme .. ".parse result does not spell the reference back")
  local again = _backends[scheme].parse(ref)
  assert(again and SPELL[scheme](again) == ref, scheme .. ".parse is not deterministic")
end

-- Checks one input; raises on any broken property.
function M.check(data)
  for _, scheme in ipairs(M.SCHEMES) do
    _one(scheme, data)
    _one(scheme, scheme .. "://" .. data)
  end
end

return M
