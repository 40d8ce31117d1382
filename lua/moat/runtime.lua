-- Runtimes and choosing one. A runtime is a module moat.runtime.<name>, replaceable like a
-- backend, with this contract:
--   name, description, install_hint, uses_image (bool), client (program | false), explicit_only
--   probe(ctx) -> true | nil, reason         ctx = { run = fn(argv, timeout_ms) -> result|nil, image }
--   validate(spec) -> true | nil, message[, "not_found"]   once, before any secret is fetched
--   launch(spec, env) -> launch | nil, message   env = map NAME -> value (nil: argv only, for --dry-run);
--                                            nil when the launch cannot be prepared (nothing has run)
-- spec   = { run_id, name, workspace, image, command|nil, interactive, tty, keep,
--            network|nil (nil or "private": outbound only; "none"; "host"; a docker network),
--            names = {NAME…} (every variable, plain and secret), mounts = { {host, container, ro} },
--            container = {memory, cpus}, environ = map of moat's environment }
-- launch = { argv, env = {"K=V"}, cwd|nil, group = bool, stdin = true|nil, notes = {..}|nil,
--            container|nil (name), cleanup = argv|nil (after a forced stop), signal = fn(sig) -> argv|nil,
--            companions = { {argv, stdin = string|nil, env = {"K=V"}|nil} }|nil (spawned just before the
--            client, each in its own group; killed when the client ends), finish = fn()|nil (called
--            once when the run is over, whatever happened: removes what launch made),
--            strays = false|nil (false: processes that leave the client's group are not moat's
--            to end, e.g. an engine's daemons) }
local proc = require("moat.proc")
local text = require("moat.text")

local M = {}

M.AUTO = { "docker", "podman", "bwrap" }
M.NAME = "^[a-z][a-z0-9_-]*$"

-- Runs `argv` to its end with stdin from /dev/null and output captured, killed after
-- `timeout_ms`. Returns the result table | nil when the program cannot be started.
function M.run(argv, timeout_ms)
  return (proc.run(argv, { stdout = "pipe", stderr = "pipe", timeout = timeout_ms, cap = 1024 * 1024 }))
end

-- Returns the sorted "K=V" environ a runtime starts with: the entries of `base` (a map) that
-- `keep` accepts (a list of names or a function), `defaults` where still unset, then `values`.
function M.environ(base, keep, defaults, values)
  local env = {}
  if type(keep) == "function" then
    for k, v in pairs(base or {}) do
      if keep(k) then env[k] = v end
    end
  else
    for _, k in ipairs(keep) do env[k] = base and base[k] end
  end
  for k, v in pairs(defaults or {}) do
    if env[k] == nil then env[k] = v end
  end
  for k, v in pairs(values or {}) do env[k] = v end
  return proc.environ(env)
end

-- Returns nil when `s` may be passed as one argument of a runtime client, else why not.
function M.bad_arg(what, s)
  if s == "" or s:sub(1, 1) == "-" or s:find("[%z\1-\31\127]") then
    return ("%s '%s' must not be empty, start with '-' or contain control characters"):format(what, text.show(s))
  end
  return nil
end

-- Loads the runtime module `name`. Returns module | nil, message.
function M.load(name)
  if type(name) ~= "string" or not name:match(M.NAME) then
    return nil, ("runtime '%s' is not a runtime name (docker, podman, bwrap, host)"):format(text.show(tostring(name)))
  end
  local mod, err, why = require("moat.loader").try("moat.runtime." .. name)
  if not mod then
    if why == "missing" then
      return nil, ("no runtime '%s': the runtimes are docker, podman, bwrap and host"
        .. " (or a module moat/runtime/%s.lua of your own)"):format(name, name)
    end
    return nil, err
  end
  mod.name = mod.name or name
  return mod
end

local function _client(mod)
  if mod.client ~= nil then return mod.client end
  if mod.name == "host" then return nil end
  return mod.name
end

local function _auto(opts)
  local reasons = {}
  for _, name in ipairs(M.AUTO) do
    local mod, err = M.load(name)
    if not mod then return nil, err end
    local ok, why = mod.probe({ run = opts.run or M.run, image = opts.image })
    if ok then return mod, "auto", reasons end
    reasons[#reasons + 1] = { name = name, reason = why, hint = mod.install_hint }
  end
  local lines = { "no usable runtime: moat needs docker (with a daemon), podman or bubblewrap" }
  for _, r in ipairs(reasons) do
    lines[#lines + 1] = ("  %s: %s\n    hint: %s"):format(r.name, r.reason or "not usable", r.hint or "")
  end
  lines[#lines + 1] = "  or run without isolation with --runtime host"
  return nil, table.concat(lines, "\n"), "unavailable"
end

-- Chooses the runtime. opts: requested (--runtime), config (runtime:), env (MOAT_RUNTIME), image,
-- run (probe runner, default M.run). Returns module, how ("--runtime", "config", "MOAT_RUNTIME",
-- "auto"), skipped = { {name, reason} } | nil, message, "usage" | "unavailable".
function M.choose(opts)
  for _, how in ipairs({ { opts.requested, "--runtime" }, { opts.config, "config" }, { opts.env, "MOAT_RUNTIME" } }) do
    local name = how[1]
    if name and name ~= "" then
      local mod, err = M.load(name)
      if not mod then return nil, err, "usage" end
      -- Asked for by name: only check that the client program exists; the runtime reports the rest.
      local client = _client(mod)
      if client and not proc.which(client) then
        return nil, ("runtime %s (from %s) is not usable: no %s on PATH\n  hint: %s")
          :format(mod.name, how[2], client, mod.install_hint or ""), "unavailable"
      end
      return mod, how[2], {}
    end
  end
  return _auto(opts)
end

return M
