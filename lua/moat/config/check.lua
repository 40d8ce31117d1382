-- Checks the config shares with the rest of moat: variable names, runtime arguments, the YAML
-- 1.2 core schema of plain scalars, and did-you-mean suggestions for misspelt keys.
local M = {}

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
  -- C0, DEL and C1 (U+0080-U+009F, which some terminals obey as escape sequences).
  if s:find("[%z\1-\31\127]") or s:find("\194[\128-\159]") then return "must not contain control characters" end
  return nil
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

-- Edit distance counting a swap of two neighbours as one edit (optimal string alignment),
-- so "imgae" is one edit from "image".
local function _distance(a, b)
  local d = {}
  for i = 0, #a do d[i] = { [0] = i } end
  for j = 0, #b do d[0][j] = j end
  for i = 1, #a do
    for j = 1, #b do
      local cost = a:byte(i) == b:byte(j) and 0 or 1
      local v = math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost)
      if i > 1 and j > 1 and a:byte(i) == b:byte(j - 1) and a:byte(i - 1) == b:byte(j) then
        v = math.min(v, d[i - 2][j - 2] + 1)
      end
      d[i][j] = v
    end
  end
  return d[#a][#b]
end
M.distance = _distance

-- Longer words people write for a key whose name is short: "enviroment" is one edit from
-- "environment", which means env.
M.ALIASES = {
  environment = "env", environ = "env", variables = "env", vars = "env", credentials = "secrets",
  deps = "dependencies", cmd = "command", volumes = "mounts", volume = "mounts", resources = "container",
}

-- Returns the name in `known` (array) closest to `key` within two edits (one for short keys);
-- `aliases` (optional) maps other words to names in `known`. Returns nil when nothing is close.
function M.suggest(key, known, aliases)
  key = key:lower()
  local best, bestd
  local function try(word, target)
    local d = _distance(key, word)
    if d <= 2 and d < #key - 1 and (not bestd or d < bestd) then best, bestd = target, d end
  end
  for _, k in ipairs(known) do try(k, k) end
  for word, k in pairs(aliases or {}) do try(word, k) end
  return best
end

return M
