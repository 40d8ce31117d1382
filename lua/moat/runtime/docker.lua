-- The docker runtime (also serves podman through M.new("podman")): `<client> run --rm …`. With a
-- local engine the values go through moat's init shim (moat.shim): none is in the client's
-- argv or environ, the container's config or the engine's state. With a remote engine
-- (DOCKER_HOST=tcp://…, ssh://…) they go as `--env NAME`, the value in the client's environ.
local runtime = require("moat.runtime")
local shim = require("moat.shim")

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
  -- private: the engine's default network (outbound only); none, host or a named network as asked.
  if spec.network and spec.network ~= "private" then
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

-- Says whether `client` talks to an engine on another machine, where a bind mount of moat's
-- FIFO and shim cannot reach: DOCKER_HOST / CONTAINER_HOST other than unix://, a docker
-- context other than the default, a podman connection.
function M.remote(client, environ)
  environ = environ or {}
  local host = environ[client == "docker" and "DOCKER_HOST" or "CONTAINER_HOST"]
  if host and host ~= "" and not host:match("^unix://") then return true end
  if client == "docker" then
    local ctx = environ.DOCKER_CONTEXT
    return ctx ~= nil and ctx ~= "" and ctx ~= "default"
  end
  return (environ.CONTAINER_CONNECTION or "") ~= ""
end

-- Returns how the values of `spec` travel: "shim" (local engine), "env" (--env NAME, remote
-- engine) or nil (no values at all: the image's entrypoint runs as it is).
function Runtime:carrier(spec)
  if #(spec.names or {}) == 0 then return nil end
  if M.remote(self.name, spec.environ) then return "env" end
  return "shim"
end

-- Appends the shim's mounts, entrypoint, image and its arguments; sh = { init, fifo, command }.
local function _shim_args(spec, sh, add)
  for _, p in ipairs({ sh.init, sh.fifo }) do
    local _, err = _path("moat-init path", p)
    if err then return nil, err end
  end
  add("-v", sh.init .. ":" .. shim.INIT .. ":ro", "-v", sh.fifo .. ":" .. shim.FIFO .. ":ro")
  add("--entrypoint", shim.INIT, spec.image, "--from", shim.FIFO, "--")
  for _, a in ipairs(sh.command) do add(a) end
  return true
end

-- Returns the client's argv for `spec` | nil, why when an argument is refused. `sh` (the
-- shim's init, fifo and command) is given when the values go through the shim.
function Runtime:argv(spec, sh)
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
  err = runtime.bad_arg("image", spec.image or "")
  if err then return nil, err end
  if sh then
    ok, err = _shim_args(spec, sh, add)
    if not ok then return nil, err end
    return argv
  end
  for _, n in ipairs(spec.names or {}) do add("--env", n) end
  add(spec.image)
  for _, a in ipairs(spec.command or {}) do add(a) end
  return argv
end

-- Returns the path of moat-init for `spec` | nil, message.
local function _init(spec)
  local p = spec.init or shim.path()
  if p then return p end
  return nil, "moat-init is missing beside the moat binary: the values cannot reach the container"
    .. " without it\n  hint: reinstall moat (make install installs moat-init beside moat)"
end

-- Refuses an image, mount, network or workspace that could be read as an option, and a run
-- whose values need the shim when moat-init is missing.
function Runtime:validate(spec)
  local argv, err = Runtime.argv(self, spec)
  if not argv then return nil, err end
  if Runtime.carrier(self, spec) == "shim" then
    local init, ierr = _init(spec)
    if not init then return nil, ierr, "unavailable" end
    argv, err = Runtime.argv(self, spec, { init = init, fifo = "/fifo", command = {} })
    if not argv then return nil, err end
  end
  return true
end

-- Prepares the shim for a run with values `env`: the image's entrypoint and command, the
-- FIFO, the feeding companion. Returns sh = { init, dir, fifo, command, companion } | nil, message.
local function _prepare(self, spec, env)
  local init, err = _init(spec)
  if not init then return nil, err end
  local run = spec.run or runtime.run
  local entry, cmd = shim.image_command(self.name, spec.image, run)
  if not entry then return nil, cmd end
  local dir, fifo = shim.fifo(init, spec.environ, run)
  if not dir then return nil, fifo end
  return { init = init, dir = dir, fifo = fifo, command = shim.command(entry, cmd, spec.command),
    companion = { argv = { init, "--feed", fifo }, stdin = shim.records(env), env = {} } }
end

-- The shim's arguments as a dry run shows them (nothing is inspected or made).
local function _dry_shim(spec)
  return { init = spec.init or shim.path() or "moat-init", fifo = "FIFO",
    command = spec.command or { "(the image's entrypoint and command)" } }
end

-- Returns the launch for `spec` with `env` (see moat.runtime): argv, env, companions, cleanup,
-- signal, finish | nil, message when the shim cannot be prepared (nothing has run).
function Runtime:launch(spec, env)
  local client = self.name
  local name = self.container_name(spec.run_id)
  local tty = spec.interactive and spec.tty
  local carrier, sh, notes = Runtime.carrier(self, spec), nil, nil
  if carrier == "shim" and env then
    local err
    sh, err = _prepare(self, spec, env)
    if not sh then return nil, err end
  elseif carrier == "shim" then
    sh = _dry_shim(spec)
    notes = { "values go to the container through moat-init and a FIFO; the image's entrypoint and"
      .. " command are read at launch" }
  elseif carrier == "env" then
    notes = { ("the %s engine is remote: values go as --env NAME, so the engine holds them in the"
      .. " container's config"):format(client) }
    if env then require("moat.ui").warn(notes[1]) end
  end
  return {
    argv = assert(Runtime.argv(self, spec, sh)),
    env = M.client_environ(spec.environ, carrier == "env" and env or nil),
    -- The client must own the terminal to read from it; otherwise it gets its own group.
    group = not tty,
    stdin = spec.interactive and true or nil,
    container = name,
    companions = sh and sh.companion and { sh.companion } or nil,
    finish = sh and sh.dir and function() shim.remove(sh.dir, sh.fifo) end or nil,
    cleanup = not spec.keep and { client, "rm", "-f", name } or { client, "kill", name },
    -- The reaper runs the cleanup if moat dies: the client's environ, never a value.
    reap_env = M.client_environ(spec.environ),
    -- With a TTY the client proxies no signals: the daemon delivers them.
    signal = tty and function(sig) return { client, "kill", "--signal", sig, name } end or nil,
    notes = notes,
    -- The engine's helpers (podman's conmon, pause process, DNS server) outlive the client by
    -- design and serve other containers: they are not moat's to end.
    strays = false,
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
  for _, f in ipairs({ "probe", "argv", "validate", "launch", "carrier" }) do
    R[f] = function(...) return Runtime[f](R, ...) end
  end
  return R
end

for k, v in pairs(M.new("docker")) do M[k] = v end

return M
