-- The docker runtime (also serves podman through M.new("podman")): `<client> run --rm …` with every
-- value only in the client's environ, named by `--env NAME` on its command line.
local runtime = require("moat.runtime")

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
-- plus `env` (map NAME -> value; nil in --dry-run).
function M.client_environ(environ, env)
  return runtime.environ(environ, _keep, nil, env)
end

-- Refuses a path that could be read as an option, carries control characters or a ':'.
local function _path(what, s)
  local why = runtime.bad_arg(what, s)
  if why then return nil, why end
  if s:find(":", 1, true) then return nil, ("%s '%s' must not contain ':'"):format(what, s) end
  return s
end

-- Functions shared by both clients; `self` is the runtime module (self.name is the client).
local Runtime = {}
Runtime.__index = Runtime

-- Returns the container name for run id `id`.
function Runtime.container_name(id)
  return "moat-" .. (id:gsub("[^A-Za-z0-9_.-]", "-"))
end

local function _probe_docker(ctx)
  local r = ctx.run({ "docker", "version", "--format", "{{.Server.Version}}" }, 5000)
  if not r then return nil, "docker is not installed (no docker on PATH)" end
  if r.timed_out then return nil, "the docker daemon did not answer within 5 s" end
  if r.code ~= 0 then return nil, "no docker daemon answers (docker version failed)" end
  return true
end

local function _probe_podman(ctx)
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

-- Says whether the client can run `ctx.image` here: ctx.run(argv, timeout_ms) -> result.
-- Returns true | nil, reason.
function Runtime:probe(ctx)
  if self.name == "docker" then return _probe_docker(ctx) end
  return _probe_podman(ctx)
end

-- Appends the -v/--network/resource options of `spec` to `add`; returns true | nil, why.
local function _options(spec, add)
  local ws, err = _path("workspace", spec.workspace)
  if not ws then return nil, err end
  add("-v", ws .. ":/workspace", "-w", "/workspace")
  if spec.interactive then
    add("-i")
    if spec.tty then add("-t") end
  end
  if spec.network then
    err = runtime.bad_arg("network", spec.network)
    if err then return nil, err end
    add("--network", spec.network)
  end
  for _, m in ipairs(spec.mounts or {}) do
    local h, herr = _path("mount", m.host)
    local c, cerr = _path("mount", m.container)
    if not (h and c) then return nil, herr or cerr end
    add("-v", h .. ":" .. c .. (m.ro and ":ro" or ""))
  end
  local lim = spec.container or {}
  if lim.memory then add("--memory", ("%dm"):format(lim.memory)) end
  if lim.cpus then add("--cpus", tostring(lim.cpus)) end
  return true
end

-- Returns the client's argv for `spec` | nil, why when an argument is refused.
function Runtime:argv(spec)
  local client = self.name
  local argv = { client, "run" }
  local function add(...) for _, a in ipairs({ ... }) do argv[#argv + 1] = a end end
  if not spec.keep then add("--rm") end
  add("--name", self.container_name(spec.run_id), "--label", "moat.run=" .. spec.run_id)
  -- An init as PID 1 passes signals on to the command and reaps its children. podman's
  -- default (catatonit) reports a command it cannot find as 1, tini as 127 like docker's.
  add("--init")
  if client == "podman" then
    local tini = spec.tini or require("moat.proc").which("tini-static")
    if tini then add("--init-path", tini) end
  end
  local ok, err = _options(spec, add)
  if not ok then return nil, err end
  for _, n in ipairs(spec.names or {}) do add("--env", n) end
  err = runtime.bad_arg("image", spec.image or "")
  if err then return nil, err end
  add(spec.image)
  for _, a in ipairs(spec.command or {}) do add(a) end
  return argv
end

-- Refuses an image, mount, network or workspace that could be read as an option.
function Runtime:validate(spec)
  local argv, err = Runtime.argv(self, spec)
  if not argv then return nil, err end
  return true
end

-- Returns the launch for `spec` with `env` (see moat.runtime): argv, env, cleanup, signal.
function Runtime:launch(spec, env)
  local client = self.name
  local name = self.container_name(spec.run_id)
  local tty = spec.interactive and spec.tty
  return {
    argv = assert(Runtime.argv(self, spec)),
    env = M.client_environ(spec.environ, env),
    -- The client must own the terminal to read from it; otherwise it gets its own group.
    group = not tty,
    stdin = spec.interactive and true or nil,
    container = name,
    cleanup = not spec.keep and { client, "rm", "-f", name } or { client, "kill", name },
    -- With a TTY the client proxies no signals: the daemon delivers them.
    signal = tty and function(sig) return { client, "kill", "--signal", sig, name } end or nil,
  }
end

-- Builds a runtime module for the client program `client` ("docker" or "podman"); its
-- functions are called as plain functions (mod.validate(spec)), so each is bound here.
function M.new(client)
  local R = {
    name = client,
    uses_image = true,
    description = client == "docker" and "Docker Engine (docker run), daemon required"
      or "Podman (podman run), daemonless",
    install_hint = client == "docker"
      and "install Docker (Debian: apt-get install docker.io) and start its daemon, or set DOCKER_HOST"
      or "install podman (Debian: apt-get install podman runc)",
    container_name = Runtime.container_name,
  }
  for _, f in ipairs({ "probe", "argv", "validate", "launch" }) do
    R[f] = function(...) return Runtime[f](R, ...) end
  end
  return R
end

for k, v in pairs(M.new("docker")) do M[k] = v end

return M
