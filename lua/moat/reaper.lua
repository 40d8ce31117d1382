-- The reaper: a watchdog that outlives moat. The supervisor starts it before the runtime
-- client as `moat-init --reap MOAT_PID -- CLEANUP...` (init/reap.c, the static helper installed
-- beside moat, so that it costs a run almost nothing to start). While moat lives it only notes
-- moat's children, every 200 ms and when poked (M.poke, once the client runs); on every path
-- moat survives, moat kills it. When moat dies without that (SIGKILL, a crash), it kills the
-- children it saw (their process groups when they lead one) and runs the launch's cleanup
-- (e.g. `docker rm -f moat-<run>`) at PASSES_MS, so a container still being created is caught
-- as well. It never holds a value: its argv is the cleanup command, its environ the client's
-- without values.
local M = {}

M.PASSES_MS = { 0, 1000, 3000 }    -- when, after moat is gone, the cleanup runs (init/reap.c)

-- Returns the argv that starts the reaper for `launch` (its cleanup argv, optional) watching
-- moat (this process) | nil, message when moat-init is not beside moat. opts.init: the
-- moat-init to use (default: the one beside moat's executable; false: none).
function M.argv(launch, opts)
  local init = opts and opts.init
  if init == nil then init = require("moat.shim").path() end
  if not init then return nil, "moat-init is not installed beside moat (it is built and installed with it)" end
  local argv = { init, "--reap", tostring(require("moat.c.system").getpid()), "--" }
  for _, a in ipairs(launch.cleanup or {}) do argv[#argv + 1] = a end
  return argv
end

-- Asks the reaper `p` to look at moat's children now (SIGURG, which it waits for; ignored by
-- default, so one that comes before it listens does no harm).
function M.poke(p)
  p:kill("URG")
end

-- Starts the reaper for `launch` (its cleanup argv and reap_env, both optional). Returns the
-- process handle | nil, message, errno.
function M.start(launch, opts)
  local argv, err = M.argv(launch, opts)
  if not argv then return nil, err end
  -- Its own process group: a Ctrl-C at the terminal reaches moat's group, not the reaper. An
  -- exit moat did not plan (an internal error) leaves it running: it cleans up then.
  return require("moat.c.proc").spawn(argv, { stdout = "null", stderr = "null", group = true, outlive = true,
    env = launch.reap_env or { "PATH=" .. (os.getenv("PATH") or "/usr/bin:/bin") } })
end

return M
