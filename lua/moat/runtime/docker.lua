-- The docker runtime (also serves podman through M.new("podman")): `<client> run --rm …` with every
-- value only in the client's environ, named by `--env NAME` on its command line.
local M = {}

-- Variables of moat's environment the client may need itself (config, daemon address, proxies,
-- locale); everything else is dropped before the secret and env values are added.
local KEEP_EXACT = {
  PATH = true, HOME = true, USER = true, LOGNAME = true, LANG = true, TZ = true, TERM = true,
  TMPDIR = true, XDG_RUNTIME_DIR = true, XDG_CONFIG_HOME = true, XDG_DATA_HOME = true,
  DBUS_SESSION_BUS_ADDRESS = true, NO_COLOR = true, SSL_CERT_FILE = true, SSL_CERT_DIR = true,
}
local KEEP_PREFIX = { "DOCKER_", "CONTAINERS_", "CONTAINER_HOST", "CONTAINER_SSHKEY", "CONTAINER_CONNECTION", "LC_",
  "REGISTRY_AUTH_FILE" }

local function _keep(name)
  if KEEP_EXACT[name] then return true end
  if name:upper():match("_PROXY$") then return true end
  for _, p in ipairs(KEEP_PREFIX) do
    if name:sub(1, #p) == p then return true end
  end
  return false
end

-- Returns the client's environ (array of "K=V", sorted): the kept part of `environ` (a map)
-- plus `vars` ({name, value}; a nil value is left out, as in --dry-run).
function M.client_environ(environ, vars)
  local env = {}
  for k, v in pairs(environ or {}) do
    if _keep(k) then env[k] = v end
  end
  for _, v in ipairs(vars or {}) do
    if v.value ~= nil then env[v.name] = v.value end
  end
  local out = {}
  for k, v in pairs(env) do out[#out + 1] = k .. "=" .. v end
  table.sort(out)
  return out
end

local function _fail(msg)
  require("moat.exit").fail(require("moat.exit").CONFIG, msg)
end

-- Refuses a value that could be read as an option or carries control characters.
local function _arg(what, s)
  if s == "" or s:sub(1, 1) == "-" or s:find("[%z\1-\31\127]") then
    _fail(("%s '%s' must not be empty, start with '-' or contain control characters")
      :format(what, (s:gsub("[%z\1-\31\127]", "?"))))
  end
  return s
end

local function _path(what, s)
  _arg(what, s)
  if s:find(":", 1, true) then _fail(("%s '%s' must not contain ':'"):format(what, s)) end
  return s
end

-- Builds a runtime module for the client program `client` ("docker" or "podman").
function M.new(client)
  local R = {
    name = client,
    uses_image = true,
    description = client == "docker" and "Docker Engine (docker run), daemon required"
      or "Podman (podman run), daemonless",
    install_hint = client == "docker"
      and "install Docker (Debian: apt-get install docker.io) and start its daemon, or set DOCKER_HOST"
      or "install podman (Debian: apt-get install podman runc)",
  }

  -- Returns the container name for run id `id`.
  function R.container_name(id)
    return "moat-" .. (id:gsub("[^A-Za-z0-9_.-]", "-"))
  end

  -- Says whether the client can run `ctx.image` here: ctx.run(argv, timeout_ms) -> result.
  -- Returns true | nil, reason.
  function R.probe(ctx)
    if client == "docker" then
      local r = ctx.run({ "docker", "version", "--format", "{{.Server.Version}}" }, 5000)
      if not r then return nil, "docker is not installed (no docker on PATH)" end
      if r.timed_out then return nil, "the docker daemon did not answer within 5 s" end
      if r.code ~= 0 then return nil, "no docker daemon answers (docker version failed)" end
      return true
    end
    local r = ctx.run({ "podman", "info", "--format", "{{json .Registries.search}}" }, 10000)
    if not r then return nil, "podman is not installed (no podman on PATH)" end
    if r.timed_out or r.code ~= 0 then return nil, "podman does not work here (podman info failed)" end
    -- Podman resolves a short image name only through its search registries (none on Debian
    -- by default) or its local store; without either it cannot run the image.
    local image = ctx.image
    local first = image and image:match("^([^/]+)/")
    local qualified = first and (first:find("[.:]") or first == "localhost")
    if image and not qualified and not r.stdout:find('"', 1, true) then
      local e = ctx.run({ "podman", "image", "exists", image }, 10000)
      if not e or e.code ~= 0 then
        return nil, ("podman has no image '%s' locally and no search registries to pull a short name from"
          .. " (name the registry, e.g. docker.io/library/%s)"):format(image, image)
      end
    end
    return true
  end

  -- Returns the launch for `spec` (see moat.runtime): argv, env, cleanup, signal.
  function R.prepare(spec)
    local name = R.container_name(spec.run_id)
    local argv = { client, "run" }
    local function add(...) for _, a in ipairs({ ... }) do argv[#argv + 1] = a end end
    if not spec.keep then add("--rm") end
    add("--name", name, "--label", "moat.run=" .. spec.run_id)
    -- An init as PID 1 passes signals on to the command and reaps its children. podman's
    -- default (catatonit) reports a command it cannot find as 1, tini as 127 like docker's.
    add("--init")
    if client == "podman" then
      local tini = spec.tini or require("moat.runtime").which("tini-static")
      if tini then add("--init-path", tini) end
    end
    add("-v", _path("workspace", spec.workspace) .. ":/workspace", "-w", "/workspace")
    if spec.interactive then
      add("-i")
      if spec.tty then add("-t") end
    end
    if spec.network then add("--network", _arg("network", spec.network)) end
    for _, m in ipairs(spec.mounts or {}) do
      add("-v", _path("mount", m.host) .. ":" .. _path("mount", m.container) .. (m.ro and ":ro" or ""))
    end
    local c = spec.container or {}
    if c.memory then add("--memory", ("%dm"):format(c.memory)) end
    if c.cpus then add("--cpus", tostring(c.cpus)) end
    for _, v in ipairs(spec.vars or {}) do add("--env", v.name) end
    add(_arg("image", spec.image))
    for _, a in ipairs(spec.command or {}) do add(a) end
    local tty = spec.interactive and spec.tty
    return {
      argv = argv,
      env = M.client_environ(spec.environ, spec.vars),
      -- The client must own the terminal to read from it; otherwise it gets its own group.
      group = not tty,
      stdin = spec.interactive and true or nil,
      container = name,
      cleanup = not spec.keep and { client, "rm", "-f", name } or { client, "kill", name },
      -- With a TTY the client proxies no signals: the daemon delivers them.
      signal = tty and function(sig) return { client, "kill", "--signal", sig, name } end or nil,
    }
  end

  return R
end

for k, v in pairs(M.new("docker")) do M[k] = v end

return M
