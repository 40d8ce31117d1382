-- Profiles (DESIGN §4): `profiles: {prod: {secrets, env, env_files, image, runtime, network,
-- mounts}}`. Every profile is checked and kept raw in cfg.profiles (trust hashes them all);
-- `--profile NAME` (or MOAT_PROFILE) merges one over the base, name by name. In a profile,
-- `NAME: null` under secrets or env removes the base entry of that name.
local check = require("moat.config.check")

local M = {}

M.KEYS = { "secrets", "env", "env_files", "image", "runtime", "network", "mounts" }
local ALLOWED = {}
for _, k in ipairs(M.KEYS) do ALLOWED[k] = true end

-- Parses one profile's map node into { where, set = {key = true}, secrets, env, … }.
local function _one(self, pname, node, cfg)
  local fields = require("moat.config.fields")
  local prof = { name = pname, where = self:where(node), set = {}, secrets = {}, env = {}, env_files = {},
    mounts = {}, dir = cfg.dir }
  self.profile = pname
  for _, p in ipairs(node.pairs) do
    local key = p.key.value
    if ALLOWED[key] then
      prof.set[key] = true
      fields[key](self, p.value, prof)
    else
      local hint = check.suggest(key, M.KEYS)
      self:at(p.key, ("profile %s: '%s' cannot be set in a profile%s"):format(pname, key,
        hint and ("; did you mean '" .. hint .. "'?") or ("; a profile sets " .. table.concat(M.KEYS, ", "))))
    end
  end
  self.profile = nil
  prof.dir = nil
  return prof
end

-- The handler of `profiles:`: fills cfg.profiles (name -> profile) and cfg.profile_names (file order).
function M.parse(self, v, cfg)
  if v.kind ~= "map" then
    self:at(v, "profiles must be a mapping of NAME: {secrets, env, image, ...}")
    return
  end
  cfg.profiles, cfg.profile_names = {}, {}
  for _, p in ipairs(v.pairs) do
    local pname = p.key.value
    if not pname:match("^[A-Za-z0-9][A-Za-z0-9_.-]*$") then
      self:at(p.key, ("profile name '%s' must be letters, digits, '.', '_' or '-'"):format(pname))
    elseif p.value.kind ~= "map" then
      self:at(p.value, ("profile %s must be a mapping of secrets, env, image, ..."):format(pname))
    else
      cfg.profiles[pname] = _one(self, pname, p.value, cfg)
      cfg.profile_names[#cfg.profile_names + 1] = pname
    end
  end
end

local function _copy(e, from)
  local copy = {}
  for k, v in pairs(e) do copy[k] = v end
  copy.from = from or copy.from or "config"
  return copy
end

-- Merges `over` (profile entries, some { remove = true }) into `base` (config entries) by the
-- field `key` (name; container for mounts), marking where each came from. Returns the merged
-- list; a removal of nothing is an error.
local function _merge_named(base, over, from, what, errors, key)
  key = key or "name"
  local out, at, removed = {}, {}, {}
  for _, e in ipairs(base) do
    out[#out + 1] = _copy(e)
    at[e[key]] = #out
  end
  for _, e in ipairs(over) do
    local k = e[key]
    if e.remove and not at[k] then
      errors[#errors + 1] = ("%s: %s %s: null removes a base entry, but the base has no %s"):format(
        e.where, from, what, k)
    elseif e.remove then
      removed[k] = true
    else
      out[at[k] or #out + 1] = _copy(e, from)
      at[k] = at[k] or #out
    end
  end
  local kept = {}
  for _, e in ipairs(out) do
    if not removed[e[key]] then kept[#kept + 1] = e end
  end
  return kept
end

-- Returns the profile name that `names` (array) lists closest to `want`, or nil.
local function _close(want, names)
  return check.suggest(want, names)
end

-- Applies profile `pname` to `cfg` in place: secrets, env, mounts, image, runtime and network
-- become the merged ones (entries carry `from`), cfg.profile and cfg.from = {key = "profile NAME"}
-- are set. cfg.env_files and cfg.base stay the config's own; the profile's env_files are read
-- by moat.config.envfiles. Returns true | nil, errors (array of messages).
function M.apply(cfg, pname)
  local prof = cfg.profiles[pname]
  if not prof then
    local names = cfg.profile_names
    local hint = #names > 0 and _close(pname, names)
    return nil, { ("%s: no profile '%s'%s; %s"):format(cfg.file, pname,
      hint and (" (did you mean '" .. hint .. "'?)") or "",
      #names > 0 and ("the profiles are: " .. table.concat(names, ", ")) or "this config defines no profiles") }
  end
  local from, errors = "profile " .. pname, {}
  cfg.profile = pname
  cfg.secrets = _merge_named(cfg.secrets, prof.secrets, from, "secrets", errors)
  cfg.env = _merge_named(cfg.env, prof.env, from, "env", errors)
  cfg.mounts = _merge_named(cfg.mounts, prof.mounts, from, "mount", errors, "container")
  for _, key in ipairs({ "image", "runtime", "network" }) do
    if prof[key] ~= nil then
      cfg[key] = prof[key]
      cfg.from[key] = from
    end
  end
  return #errors == 0 or nil, errors
end

return M
