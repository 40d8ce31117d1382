-- Loads moat.yaml (else agent.yaml) into a normalized table, reporting every problem at once.
local yaml = require("moat.c.yaml")
local exit = require("moat.exit")

local M = {}

M.FILES = { "moat.yaml", "agent.yaml" }
M.RUNTIMES = { docker = true, podman = true, bwrap = true, host = true }

-- Keys the upstream moat understands but this moat does not implement: loaded with a warning.
M.UNIMPLEMENTED = {
  agent = true, version = true, services = true, ports = true, hooks = true, network = true,
  snapshots = true, tracing = true, claude = true, codex = true, gemini = true, mcp = true,
  sandbox = true, ssh = true, proxy = true,
}

local KNOWN = {
  "name", "dependencies", "image", "command", "env", "secrets", "grants", "mounts",
  "runtime", "interactive", "container",
}

-- Names the runtime client or the loader reads itself; a config must not set them.
local RESERVED_EXACT = {
  PATH = true, HOME = true, TMPDIR = true, SSL_CERT_FILE = true, SSL_CERT_DIR = true,
  REGISTRY_AUTH_FILE = true, DBUS_SESSION_BUS_ADDRESS = true, GODEBUG = true, GOTRACEBACK = true,
  GOMAXPROCS = true, GOGC = true, GLIBC_TUNABLES = true, GCONV_PATH = true, LOCPATH = true,
}
local RESERVED_PREFIX = {
  "LD_", "DOCKER_", "CONTAINER_", "CONTAINERS_", "XDG_", "PODMAN_", "BUILDAH_", "STORAGE_", "MALLOC_",
}

-- Returns nil when `name` may be set in the container, else why not.
function M.check_name(name)
  if type(name) ~= "string" or not name:match("^[A-Za-z_][A-Za-z0-9_]*$") then
    return "is not a valid environment variable name (letters, digits and _, not starting with a digit)"
  end
  if RESERVED_EXACT[name] then return "is reserved: the runtime or loader reads it itself" end
  for _, p in ipairs(RESERVED_PREFIX) do
    if name:sub(1, #p) == p then
      return "is reserved: names starting with " .. p .. " are read by the runtime or loader"
    end
  end
  if name:upper():match("_PROXY$") then
    return "is reserved: *_PROXY variables steer the runtime client's network"
  end
  return nil
end

-- Returns nil when `s` is safe to hand to a runtime as one argument, else why not.
function M.check_arg(s)
  if s:sub(1, 1) == "-" then return "must not start with '-'" end
  if s:find("[%z\1-\31\127]") then return "must not contain control characters" end
  return nil
end

local function _distance(a, b)
  local prev = {}
  for j = 0, #b do prev[j] = j end
  for i = 1, #a do
    local cur = { [0] = i }
    for j = 1, #b do
      local cost = a:sub(i, i) == b:sub(j, j) and 0 or 1
      cur[j] = math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
    end
    prev = cur
  end
  return prev[#b]
end

-- Returns the known key closest to `key` (edit distance <= 2), or nil.
function M.suggest(key, known)
  local best, bestd
  for _, k in ipairs(known or KNOWN) do
    local d = _distance(key:lower(), k)
    if d <= 2 and (not bestd or d < bestd) then best, bestd = k, d end
  end
  return best
end

-- YAML 1.2 core-schema reading of a plain scalar: "null", "bool", "int", "float" or "str".
function M.scalar_type(node)
  if node.kind ~= "scalar" then return node.kind end
  if not node.plain then return "str" end
  local v = node.value
  if v == "" or v == "~" or v == "null" or v == "Null" or v == "NULL" then return "null" end
  if v == "true" or v == "True" or v == "TRUE" or v == "false" or v == "False" or v == "FALSE" then
    return "bool"
  end
  if v:match("^[-+]?%d+$") or v:match("^0o[0-7]+$") or v:match("^0x%x+$") then return "int" end
  if v:match("^[-+]?%.%d+$") or v:match("^[-+]?%d+%.?%d*$") or v:match("^[-+]?%d*%.?%d+[eE][-+]?%d+$")
    or v:match("^[-+]?%.[iI][nN][fF]$") or v:match("^%.[nN][aA][nN]$") then
    return "float"
  end
  return "str"
end

local Loader = {}
Loader.__index = Loader

function Loader:at(node, msg)
  self.errors[#self.errors + 1] = ("%s:%d:%d: %s"):format(self.file, node.line, node.col, msg)
end

function Loader:warn(node, msg)
  self.warnings[#self.warnings + 1] = ("%s:%d:%d: %s"):format(self.file, node.line, node.col, msg)
end

function Loader:where(node)
  return ("%s:%d:%d"):format(self.file, node.line, node.col)
end

function Loader:string(node, what)
  local t = M.scalar_type(node)
  if t ~= "str" then
    self:at(node, ("%s must be a string, not %s"):format(what, t == "map" and "a mapping"
      or t == "seq" and "a list" or t))
    return nil
  end
  return node.value
end

function Loader:bool(node, what)
  if M.scalar_type(node) ~= "bool" then
    self:at(node, what .. " must be true or false")
    return nil
  end
  return node.value:lower() == "true"
end

function Loader:list_of_strings(node, what)
  if node.kind ~= "seq" then
    self:at(node, what .. " must be a list of strings")
    return nil
  end
  local out = {}
  for i, item in ipairs(node.items) do
    local s = self:string(item, ("%s[%d]"):format(what, i))
    if s then out[#out + 1] = s end
  end
  return out
end

function Loader:named_map(node, what, each)
  if node.kind ~= "map" then
    self:at(node, what .. " must be a mapping of NAME: value")
    return {}
  end
  local out = {}
  for _, p in ipairs(node.pairs) do
    local name = p.key.value
    local why = M.check_name(name)
    if why then
      self:at(p.key, ("%s name '%s' %s"):format(what, name, why))
    else
      local item = each(name, p.value, p.key)
      if item then out[#out + 1] = item end
    end
  end
  return out
end

local handlers = {}

function handlers.name(self, v, cfg)
  local s = self:string(v, "name")
  if s and not s:match("^[A-Za-z0-9][A-Za-z0-9_.-]*$") then
    self:at(v, "name must be letters, digits, '.', '_' or '-' (it names the container)")
  else
    cfg.name = s
  end
end

function handlers.image(self, v, cfg)
  local s = self:string(v, "image")
  if not s then return end
  local why = M.check_arg(s)
  if why or s == "" or s:find("%s") then
    self:at(v, "image " .. (why or "must be a non-empty image reference without spaces"))
  else
    cfg.image = s
  end
end

function handlers.dependencies(self, v, cfg)
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

function handlers.command(self, v, cfg)
  if v.kind == "scalar" and M.scalar_type(v) == "str" then
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

function handlers.env(self, v, cfg)
  cfg.env = self:named_map(v, "env", function(name, val)
    local t = M.scalar_type(val)
    if t == "null" then
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

function handlers.secrets(self, v, cfg)
  cfg.secrets = self:named_map(v, "secrets", function(name, val)
    local t = M.scalar_type(val)
    if t == "null" then
      self:at(val, ("secret %s has no reference (e.g. op://vault/item/field)"):format(name))
    elseif val.kind ~= "scalar" then
      self:at(val, ("secret %s must be a reference string such as ssm:///path"):format(name))
    elseif val.value:find("%z") then
      self:at(val, ("secret %s must not contain NUL bytes"):format(name))
    else
      return { name = name, ref = val.value, where = self:where(val) }
    end
  end)
end

function handlers.grants(self, v)
  self:at(v, "grants (network-layer credential injection) are not provided by this moat;"
    .. " list the credentials under secrets: instead, e.g. secrets: { GITHUB_TOKEN: op://vault/github/token }")
end

function handlers.mounts(self, v, cfg)
  local list = self:list_of_strings(v, "mounts")
  if not list then return end
  cfg.mounts = {}
  for i, s in ipairs(list) do
    local node = v.items[i]
    local host, ctr, mode = s:match("^([^:]+):([^:]+):?([^:]*)$")
    local why = M.check_arg(s)
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

function handlers.runtime(self, v, cfg)
  local s = self:string(v, "runtime")
  if s and not M.RUNTIMES[s] then
    self:at(v, ("runtime '%s' is not one of docker, podman, bwrap, host"):format(s))
  else
    cfg.runtime = s
  end
end

function handlers.interactive(self, v, cfg)
  cfg.interactive = self:bool(v, "interactive")
end

function handlers.container(self, v, cfg)
  if v.kind ~= "map" then
    self:at(v, "container must be a mapping with memory (MiB) and/or cpus")
    return
  end
  cfg.container = {}
  for _, p in ipairs(v.pairs) do
    local k, val = p.key.value, p.value
    local t = M.scalar_type(val)
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
      local hint = M.suggest(k, { "memory", "cpus" })
      self:warn(p.key, ("unknown key container.%s ignored%s"):format(k,
        hint and (" (did you mean '" .. hint .. "'?)") or ""))
    end
  end
end

-- Reads at most the YAML size limit + 1 bytes of `path`; returns text | nil, message.
local function _read(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local text = f:read(yaml.LIMITS.bytes + 1) or ""
  f:close()
  return text
end

-- Returns the config file for workspace `dir` (moat.yaml, else agent.yaml) or nil.
function M.find(dir)
  for _, name in ipairs(M.FILES) do
    local path = (dir == "." and name) or (dir:gsub("/+$", "") .. "/" .. name)
    local f = io.open(path, "rb")
    if f then
      f:close()
      return path
    end
  end
  return nil
end

-- Parses config `text` read from `file` for workspace `dir` (absolute).
-- Returns cfg (with cfg.warnings) | nil, errors (array of "file:line:col: message").
function M.parse(text, file, dir)
  local self = setmetatable({ file = file, errors = {}, warnings = {} }, Loader)
  local cfg = { file = file, dir = dir, env = {}, secrets = {}, mounts = {}, dependencies = {}, container = {} }
  local root, err = yaml.load(text, file)
  if not root then return nil, { err } end
  if root.kind == "map" then
    for _, p in ipairs(root.pairs) do
      local key = p.key.value
      if handlers[key] then
        handlers[key](self, p.value, cfg)
      elseif M.UNIMPLEMENTED[key] then
        self:warn(p.key, ("'%s' is known to the upstream moat but not implemented here; ignored"):format(key))
      else
        local hint = M.suggest(key)
        self:warn(p.key, ("unknown key '%s' ignored%s"):format(key,
          hint and (" (did you mean '" .. hint .. "'?)") or ""))
      end
    end
  elseif root.kind ~= "empty" then
    self:at(root, "the config must be a mapping of keys (name, image, secrets, ...)")
  end
  local env_at = {}
  for _, e in ipairs(cfg.env) do env_at[e.name] = e.where end
  for _, s in ipairs(cfg.secrets) do
    if env_at[s.name] then
      local line, col = s.where:match(":(%d+):(%d+)$")
      self:at({ line = tonumber(line), col = tonumber(col) },
        ("%s is in both env (at %s) and secrets; keep one"):format(s.name, env_at[s.name]))
    end
  end
  if #self.errors > 0 then return nil, self.errors end
  cfg.name = cfg.name or (dir:match("([^/]+)/*$") or "moat"):gsub("[^A-Za-z0-9_.-]", "-")
  cfg.warnings = self.warnings
  return cfg
end

-- Loads the config for workspace `dir`; `file` (optional) overrides the file name.
-- Returns cfg; raises a config failure (exit 78) listing every problem.
function M.load(dir, file)
  local sys = require("moat.c.system")
  local absdir, derr = sys.realpath(dir)
  if not absdir then exit.fail(exit.CONFIG, ("workspace %s: %s"):format(dir, derr)) end
  if file then
    local f = io.open(file, "rb")
    if not f then exit.fail(exit.CONFIG, ("config file %s cannot be read"):format(file)) end
    f:close()
  else
    file = M.find(dir)
  end
  if not file then
    local cfg = assert(M.parse("", "(none)", absdir))
    cfg.file = nil
    return cfg
  end
  local text, rerr = _read(file)
  if not text then exit.fail(exit.CONFIG, ("config file %s: %s"):format(file, rerr)) end
  if #text > yaml.LIMITS.bytes then
    local size = require("lfs").attributes(file, "size") or #text
    exit.fail(exit.CONFIG, ("%s:1:1: file is %d bytes; the limit is 1 MiB"):format(file, size))
  end
  local cfg, errs = M.parse(text, file, absdir)
  if not cfg then
    exit.fail(exit.CONFIG, ("%d problem%s in %s:\n  %s"):format(#errs, #errs == 1 and "" or "s", file,
      table.concat(errs, "\n  ")))
  end
  return cfg
end

return M
