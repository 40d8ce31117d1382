-- The handlers of config.parse, one per top-level key: each checks its node and fills `cfg`,
-- reporting problems through the loader (self:at for errors, self:warn for warnings).
local check = require("moat.config.check")
local refs = require("moat.config.refs")

local M = {}

M.RUNTIMES = { docker = true, podman = true, bwrap = true, host = true }

function M.name(self, v, cfg)
  local s = self:string(v, "name")
  if s and not s:match("^[A-Za-z0-9][A-Za-z0-9_.-]*$") then
    self:at(v, "name must be letters, digits, '.', '_' or '-' (it names the container)")
  else
    cfg.name = s
  end
end

function M.image(self, v, cfg)
  local s = self:string(v, "image")
  if not s then return end
  local why = check.check_arg(s)
  if why or s == "" or s:find("%s") then
    self:at(v, "image " .. (why or "must be a non-empty image reference without spaces"))
  else
    cfg.image = s
  end
end

function M.dependencies(self, v, cfg)
  local list = self:list_of_strings(v, "dependencies")
  if not list then return end
  cfg.dependencies = {}
  for i, s in ipairs(list) do
    if not s:match("^[a-z][a-z0-9+._-]*@[A-Za-z0-9][A-Za-z0-9._-]*$") then
      self:at(v.items[i], ("dependency '%s' must look like lang@version (e.g. python@3.11)"):format(s))
    else
      cfg.dependencies[#cfg.dependencies + 1] = s
    end
  end
end

function M.command(self, v, cfg)
  if v.kind == "scalar" and check.scalar_type(v) == "str" then
    self:at(v, "command must be a list of strings (moat runs no shell): e.g. command: [\"npm\", \"start\"]"
      .. " or command: [\"sh\", \"-c\", \"...\"]")
    return
  end
  local list = self:list_of_strings(v, "command")
  if list and #list == 0 then
    self:at(v, "command must not be empty")
  elseif list then
    for i, s in ipairs(list) do
      if s:find("%z") then self:at(v.items[i], "command arguments must not contain NUL bytes") end
    end
    cfg.command = list
  end
end

function M.env(self, v, cfg)
  cfg.env = self:named_map(v, "env", function(name, val)
    local t = check.scalar_type(val)
    if t == "null" and self.profile then
      return { name = name, remove = true, where = self:where(val) }
    elseif t == "null" then
      self:at(val, ("env %s has no value (write \"\" for an empty string)"):format(name))
    elseif val.kind ~= "scalar" then
      self:at(val, ("env %s must be a scalar value"):format(name))
    elseif val.value:find("%z") then
      self:at(val, ("env %s must not contain NUL bytes"):format(name))
    else
      return { name = name, value = val.value, where = self:where(val) }
    end
  end)
end

-- Checks one secret reference node; returns the entry { name, ref, where } | nil.
local function _ref(self, name, val)
  if check.scalar_type(val) == "null" then
    self:at(val, ("secret %s has no reference (e.g. op://vault/item/field)"):format(name))
  elseif val.kind ~= "scalar" then
    self:at(val, ("secret %s must be a reference string such as ssm:///path, or a mapping with ref:"):format(name))
  elseif val.value:find("%z") then
    self:at(val, ("secret %s must not contain NUL bytes"):format(name))
  else
    local fixed = refs.suspicious_ref(val.value, self.schemes)
    if not fixed then return { name = name, ref = val.value, where = self:where(val) } end
    local what = fixed == val.value:match("^%s*(.-)%s*$") and "has whitespace around a reference"
      or "looks like a broken reference"
    self:at(val, ("secret %s %s: did you mean %s? (a value that only looks like a reference: export it"
      .. " and write %s: env://VAR)"):format(name, what, fixed, name))
  end
  return nil
end

local SECRET_KEYS = { "ref", "optional", "default" }

-- The map form of a secret: { ref: REF, optional: true } or { ref: REF, default: "value" }.
local function _secret_map(self, name, node)
  local at = {}
  for _, p in ipairs(node.pairs) do
    local k = p.key.value
    if at[k] == nil and (k == "ref" or k == "optional" or k == "default") then
      at[k] = p.value
    else
      local hint = check.suggest(k, SECRET_KEYS)
      self:at(p.key, ("secret %s: unknown key '%s'%s"):format(name, k,
        hint and ("; did you mean '" .. hint .. "'?") or "; the keys are ref, optional, default"))
    end
  end
  if not at.ref then
    self:at(node, ("secret %s: the mapping form needs ref: (e.g. {ref: op://vault/item/field, optional: true})")
      :format(name))
    return nil
  end
  local entry = _ref(self, name, at.ref)
  local optional = at.optional and self:bool(at.optional, ("secret %s: optional"):format(name))
  local dt = at.default and check.scalar_type(at.default)
  if at.default and (dt == "null" or at.default.kind ~= "scalar" or at.default.value:find("%z")) then
    self:at(at.default, ("secret %s: default must be a scalar value without NUL bytes (write \"\" for empty)")
      :format(name))
  elseif at.default and optional then
    self:at(at.optional, ("secret %s: optional and default contradict; a default already covers a missing"
      .. " secret: keep one"):format(name))
  elseif entry then
    entry.optional = optional or nil
    entry.default = at.default and at.default.value or nil
    return entry
  end
  return nil
end

function M.secrets(self, v, cfg)
  cfg.secrets = self:named_map(v, "secrets", function(name, val)
    if self.profile and check.scalar_type(val) == "null" then
      return { name = name, remove = true, where = self:where(val) }
    elseif val.kind == "map" then
      return _secret_map(self, name, val)
    end
    return _ref(self, name, val)
  end)
end

-- env_files: dotenv files whose entries join secrets; a relative path is relative to the
-- directory of the config file (self.base, else the workspace).
function M.env_files(self, v, cfg)
  local list = self:list_of_strings(v, "env_files")
  if not list then return end
  cfg.env_files = {}
  for i, s in ipairs(list) do
    local node = v.items[i]
    if s == "" or s:find("[%z\1-\31\127]") then
      self:at(node, "env_files entries must be non-empty paths without control characters")
    else
      local file = s:sub(1, 1) == "/" and s or ((self.base or cfg.dir) .. "/" .. s)
      cfg.env_files[#cfg.env_files + 1] = { path = s, file = file, where = self:where(node) }
    end
  end
end

M.NETWORKS = { private = true, none = true, host = true }

function M.network(self, v, cfg)
  if v.kind == "map" then
    -- The upstream moat's network policy (allowed hosts through its proxy) is not implemented.
    self:warn(v, "network as a mapping (the upstream moat's network policy) is not implemented here; ignored"
      .. " (network: private, none or host)")
    return
  end
  local s = self:string(v, "network")
  if s and not M.NETWORKS[s] then
    self:at(v, ("network '%s' is not one of private, none, host"):format(s))
  else
    cfg.network = s
  end
end

function M.profiles(self, v, cfg)
  require("moat.config.profile").parse(self, v, cfg)
end

function M.grants(self, v)
  self:at(v, "grants (network-layer credential injection) are not provided by this moat;"
    .. " list the credentials under secrets: instead, e.g. secrets: { GITHUB_TOKEN: op://vault/github/token }")
end

function M.mounts(self, v, cfg)
  local list = self:list_of_strings(v, "mounts")
  if not list then return end
  cfg.mounts = {}
  for i, s in ipairs(list) do
    local node = v.items[i]
    local host, ctr, mode = s:match("^([^:]+):([^:]+):?([^:]*)$")
    local why = check.check_arg(s)
    if why then
      self:at(node, ("mount '%s' %s"):format(s:gsub("[%z\1-\31\127]", "?"), why))
    elseif not host then
      self:at(node, ("mount '%s' must be host:container[:ro]"):format(s))
    elseif ctr:sub(1, 1) ~= "/" then
      self:at(node, ("mount '%s': the container path must be absolute"):format(s))
    elseif mode ~= "" and mode ~= "ro" and mode ~= "rw" then
      self:at(node, ("mount '%s': mode must be ro or rw"):format(s))
    else
      if host:sub(1, 1) ~= "/" then host = cfg.dir .. "/" .. host end
      cfg.mounts[#cfg.mounts + 1] = { host = host, container = ctr, ro = mode == "ro", where = self:where(node) }
    end
  end
end

function M.runtime(self, v, cfg)
  local s = self:string(v, "runtime")
  if s and not M.RUNTIMES[s] then
    self:at(v, ("runtime '%s' is not one of docker, podman, bwrap, host"):format(s))
  else
    cfg.runtime = s
  end
end

function M.interactive(self, v, cfg)
  cfg.interactive = self:bool(v, "interactive")
end

function M.container(self, v, cfg)
  if v.kind ~= "map" then
    self:at(v, "container must be a mapping with memory (MiB) and/or cpus")
    return
  end
  cfg.container = {}
  for _, p in ipairs(v.pairs) do
    local k, val = p.key.value, p.value
    local t = check.scalar_type(val)
    if k == "memory" then
      if t ~= "int" or not val.value:match("^%+?%d+$") or tonumber(val.value) < 6 then
        self:at(val, "container.memory must be a whole number of MiB (at least 6)")
      else
        cfg.container.memory = math.tointeger(tonumber(val.value))
      end
    elseif k == "cpus" then
      local n = (t == "int" or t == "float") and tonumber(val.value)
      if not n or n <= 0 or n ~= n or n == math.huge then
        self:at(val, "container.cpus must be a positive number")
      else
        cfg.container.cpus = n
      end
    else
      local hint = check.suggest(k, { "memory", "cpus" })
      self:warn(p.key, ("unknown key container.%s ignored%s"):format(k,
        hint and (" (did you mean '" .. hint .. "'?)") or ""))
    end
  end
end

return M
