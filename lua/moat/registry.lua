-- The backend registry: scheme -> backend module (moat.backends.<scheme>), found through the
-- loader's search order, so a user, site or trusted workspace file adds or replaces one.
local loader = require("moat.loader")

local M = {}

M.SCHEME = "^[a-z][a-z0-9_]*$"

-- Returns the backend module for `scheme` | nil, message, "missing" | "broken".
function M.get(scheme)
  if type(scheme) ~= "string" or not scheme:match(M.SCHEME) then
    return nil, ("no backend for scheme '%s'"):format(require("moat.text").show(tostring(scheme))), "missing"
  end
  local modname = "moat.backends." .. scheme
  local mod, err, why = loader.try(modname)
  if not mod then
    if why == "missing" then return nil, ("no backend for scheme '%s'"):format(scheme), why end
    return nil, err, why
  end
  if type(mod) ~= "table" or type(mod.resolve) ~= "function" then
    return nil, ("%s must return a table with a resolve(requests, ctx) function"):format(modname), "broken"
  end
  return mod
end

-- Returns every backend file in search order (or in `dirs`, shaped like loader.dirs), shadowed
-- ones included: { {scheme, file, kind, dir, active = bool, overridden_by = file|nil} }, sorted by scheme.
-- A directory marked `untrusted` lists its files as inactive without loading anything.
function M.files(dirs)
  local out, winner = {}, {}
  for _, f in ipairs(loader.files("moat.backends", dirs)) do
    local e = { scheme = f.name, file = f.file, kind = f.kind, dir = f.dir }
    if f.dir.untrusted then
      e.active = false
    elseif winner[f.name] then
      e.active, e.overridden_by = false, winner[f.name].file
    else
      e.active = true
      winner[f.name] = e
    end
    out[#out + 1] = e
  end
  return out
end

-- Returns the schemes that have a backend, sorted.
function M.schemes()
  local out = {}
  for _, e in ipairs(M.files()) do
    if e.active then out[#out + 1] = e.scheme end
  end
  return out
end

return M
