-- The guarded part of a workspace config (DESIGN §3): the keys that choose which of the
-- user's secrets and host variables leave the host and how far the sandbox reaches —
-- secrets (plain values included), env_files, runtime, mounts, network, and the same keys in
-- profiles. Each becomes one item { key, show, hash }: `show` is what a person reads before
-- trusting (references, never values), `hash` what the trust record keeps.
local sys = require("moat.c.system")
local text = require("moat.text")

local M = {}

M.MAX_FILE = 1024 * 1024     -- an env file over this is refused rather than hashed

local function _item(out, key, show, canon)
  out[#out + 1] = { key = key, show = show, hash = sys.sha256(key .. "\0" .. canon) }
end

-- Secrets as a list of { name, ref } whether the config holds a list of entries or a map.
local function _secrets(list)
  local out = {}
  for k, v in pairs(list or {}) do
    if type(v) == "table" and v.name then
      out[#out + 1] = { name = v.name, ref = v.ref, entry = v }
    elseif type(k) == "string" then
      out[#out + 1] = { name = k, ref = type(v) == "table" and v.ref or v, entry = v }
    end
  end
  table.sort(out, function(a, b) return a.name < b.name end)
  return out
end

local function _canon(v)
  if type(v) ~= "table" then return tostring(v) end
  local json = require("moat.c.json")
  return json.encode(v, { canonical = true }) or tostring(v)
end

local function _secret_items(out, prefix, secrets)
  for _, s in ipairs(_secrets(secrets)) do
    local ref = type(s.ref) == "string" and s.ref or nil
    local shown = ref and ref:find("://", 1, true) and text.show(ref) or (ref and "(plain value)" or "(removed)")
    local canon = _canon(type(s.entry) == "table" and {
      ref = s.entry.ref, optional = s.entry.optional, default = s.entry.default } or s.entry)
    _item(out, prefix .. "secret " .. s.name, ("%ssecret %s: %s"):format(prefix, s.name, shown), canon)
  end
end

-- Hashes an env file that lives in the workspace: its content chooses secrets too. One outside
-- the workspace is the user's own (its path is still guarded). `read`: the hashes of the bytes
-- the config's loading parsed, by path (what takes effect is what was read, not what the file
-- holds by now).
local function _env_file_hash(path, real, read)
  local abs = path:sub(1, 1) == "/" and path or (real .. "/" .. path)
  local rp = sys.realpath(abs)
  if not rp then return "missing" end
  if rp:sub(1, #real + 1) ~= real .. "/" then return "outside" end
  if read and read[path] then return read[path] end
  local h, err = sys.sha256_file(rp, M.MAX_FILE)
  if not h then return nil, "cannot hash env file " .. err end
  return h
end

-- Adds the items of one config level (the base or a profile) with `prefix` to `out`.
local function _level(out, prefix, c, real, read)
  _secret_items(out, prefix, c.secrets)
  for _, f in ipairs(c.env_files or {}) do
    -- Entries are { path (as written), file (absolute) }; the file is what gets hashed.
    local p = type(f) == "table" and f.path or f
    local h, err = _env_file_hash(type(f) == "table" and f.file or f, real, read)
    if not h then return nil, err end
    _item(out, prefix .. "env_file " .. p, prefix .. "env_file: " .. text.show(p), h)
  end
  if c.runtime then _item(out, prefix .. "runtime", prefix .. "runtime: " .. text.show(c.runtime), c.runtime) end
  if c.network then _item(out, prefix .. "network", prefix .. "network: " .. text.show(c.network), c.network) end
  for _, m in ipairs(c.mounts or {}) do
    local s = type(m) == "table" and (m.host .. ":" .. m.container .. (m.ro and ":ro" or "")) or tostring(m)
    -- Pinned with where the host path leads now: a workspace entry that the agent turns into a
    -- symlink (to ~/.ssh, say) changes the item, and the run is refused until trusted again.
    local leads = type(m) == "table" and sys.realpath(m.host) or nil
    local shown = leads and leads ~= m.host and (s .. " (" .. leads .. ")") or s
    _item(out, prefix .. "mount " .. s, prefix .. "mount: " .. text.show(shown), s .. "\0" .. (leads or "(missing)"))
  end
  return true
end

-- Returns the guarded items of config `cfg` of the workspace whose real path is `real`,
-- sorted by key: { {key, show, hash} } | nil, message.
function M.items(cfg, real)
  local out = {}
  local read = cfg.effective and cfg.effective.env_file_hashes
  local ok, err = _level(out, "", cfg, real, read)
  if not ok then return nil, err end
  local names = {}
  for name in pairs(cfg.profiles or {}) do names[#names + 1] = name end
  table.sort(names)
  for _, name in ipairs(names) do
    local p = cfg.profiles[name]
    if type(p) == "table" then
      ok, err = _level(out, "profile " .. name .. ": ", p, real, read)
      if not ok then return nil, err end
    end
  end
  table.sort(out, function(a, b) return a.key < b.key end)
  return out
end

-- Returns true when config file `file` lives inside the workspace `real` (by realpath): only
-- such a config is someone else's words; one outside is the user's own.
function M.inside(file, real)
  if not file then return false end
  local rp = sys.realpath(file)
  return rp ~= nil and rp:sub(1, #real + 1) == real .. "/"
end

return M
