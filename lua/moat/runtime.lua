-- Choosing the runtime of a run: --runtime, then the config's runtime:, then MOAT_RUNTIME, then the
-- first usable of docker, podman, bwrap. Runtimes are modules moat.runtime.<name>, replaceable
-- like backends. A runtime module has:
--   name, description, install_hint, uses_image (bool), explicit_only (bool, optional)
--   probe(ctx) -> true | nil, reason      ctx = { run = fn(argv, timeout_ms) -> result|nil, image }
--   prepare(spec) -> launch
-- spec   = { run_id, name, workspace, image, command|nil, interactive, tty, keep, network|nil,
--            vars = { {name, value|nil} }, mounts = { {host, container, ro} }, container = {memory, cpus},
--            environ = map of moat's environment }
-- launch = { argv, env = {"K=V"}, cwd|nil, group = bool, stdin = true|nil, notes = {..}|nil,
--            container|nil (name), cleanup = argv|nil (after a forced stop), signal = fn(sig) -> argv|nil,
--            not_found = message|nil (the command cannot be found: exit 127 without launching) }
local exit = require("moat.exit")

local M = {}

M.AUTO = { "docker", "podman", "bwrap" }

-- Runs `argv` with stdin from /dev/null, output captured, killed after `timeout_ms`.
-- Returns the result table | nil when the program cannot be started.
function M.run(argv, timeout_ms)
  local proc = require("moat.c.proc")
  local env = {}
  for k, v in pairs(require("moat.c.system").environ()) do env[#env + 1] = k .. "=" .. v end
  local p = proc.spawn(argv, { env = env, stdout = "pipe", stderr = "pipe", timeout = timeout_ms,
    cap = 1024 * 1024 })
  if not p then return nil end
  while not p:done() do proc.wait({ p }, timeout_ms) end
  return p:result()
end

-- Returns the full path of program `name` on `path` (default: moat's PATH) | nil.
function M.which(name, path)
  local lfs = require("lfs")
  for dir in (path or os.getenv("PATH") or ""):gmatch("[^:]+") do
    local p = dir .. "/" .. name
    if lfs.attributes(p, "mode") == "file" then return p end
  end
  return nil
end

-- Loads the runtime module `name`; raises a usage failure when there is none.
function M.load(name)
  if type(name) ~= "string" or not name:match("^[a-z][a-z0-9_-]*$") then
    exit.fail(exit.USAGE, ("runtime '%s' is not a runtime name (docker, podman, bwrap, host)")
      :format(tostring(name):gsub("[%z\1-\31\127]", "?")))
  end
  local ok, mod = pcall(require, "moat.runtime." .. name)
  if not ok then
    if tostring(mod):find("module 'moat.runtime." .. name .. "' not found", 1, true) then
      exit.fail(exit.USAGE, ("no runtime '%s': the runtimes are docker, podman, bwrap and host"
        .. " (or a module moat/runtime/%s.lua of your own)"):format(name, name))
    end
    error(mod, 0)
  end
  mod.name = mod.name or name
  return mod
end

local function _client(mod)
  if mod.client ~= nil then return mod.client end
  if mod.name == "host" then return nil end
  return mod.name
end

-- Chooses the runtime. opts: requested (--runtime), config (runtime:), env (MOAT_RUNTIME), image,
-- run (probe runner, default M.run). Returns module, how ("--runtime", "config", "MOAT_RUNTIME",
-- "auto"); raises exit 69 with install hints when no runtime is usable.
function M.choose(opts)
  local run = opts.run or M.run
  for _, how in ipairs({ { opts.requested, "--runtime" }, { opts.config, "config" }, { opts.env, "MOAT_RUNTIME" } }) do
    local name = how[1]
    if name and name ~= "" then
      local mod = M.load(name)
      -- Asked for by name: only check that the client program exists; the runtime reports the rest.
      local client = _client(mod)
      if client and not M.which(client) then
        exit.fail(exit.UNAVAILABLE, ("runtime %s (from %s) is not usable: no %s on PATH\n  hint: %s")
          :format(mod.name, how[2], client, mod.install_hint or ""))
      end
      return mod, how[2]
    end
  end
  local reasons = {}
  for _, name in ipairs(M.AUTO) do
    local mod = M.load(name)
    local ok, why = mod.probe({ run = run, image = opts.image })
    if ok then return mod, "auto", reasons end
    reasons[#reasons + 1] = { name = name, reason = why, hint = mod.install_hint }
  end
  local lines = { "no usable runtime: moat needs docker (with a daemon), podman or bubblewrap" }
  for _, r in ipairs(reasons) do
    lines[#lines + 1] = ("  %s: %s\n    hint: %s"):format(r.name, r.reason or "not usable", r.hint or "")
  end
  lines[#lines + 1] = "  or run without isolation with --runtime host"
  exit.fail(exit.UNAVAILABLE, table.concat(lines, "\n"))
end

return M
