-- The reaper: a watchdog that outlives moat. The supervisor starts it (moat itself, re-executed
-- as `moat __reaper MOAT_PID -- CLEANUP...`) before the runtime client; it watches moat, noting moat's
-- children as they come. Nothing happens while moat lives, and on every path moat survives it
-- kills the reaper itself. When moat dies without that (SIGKILL, a crash), the reaper kills the
-- children it saw (their process groups when they lead one) and runs the launch's cleanup (e.g.
-- `docker rm -f moat-<run>`) a few times, so a container still being created is caught as well.
-- It never holds a value: its argv is the cleanup command, its environ the client's without values.
local M = {}

M.COMMAND = "__reaper"
M.TICK_MS = 200                    -- how often moat and its children are looked at
M.PASSES_MS = { 0, 1000, 3000 }    -- when, after moat is gone, the cleanup runs
M.CLEANUP_TIMEOUT_MS = 30000

-- Returns ppid, pgid, start time (clock ticks since boot) of `pid` | nil when it is gone.
local function _info(pid)
  local f = require("moat.proc").stat(pid)
  if not f then return nil end
  return tonumber(f[2]), tonumber(f[3]), f[20]
end

-- Returns the program that runs the reaper: moat's own executable.
function M.program()
  return require("lfs").symlinkattributes("/proc/self/exe", "target") or "/proc/self/exe"
end

-- Starts the reaper for `launch` (its cleanup argv and reap_env, both optional). opts.program:
-- the moat executable (default: this process's). Returns the process handle | nil, message, errno.
function M.start(launch, opts)
  opts = opts or {}
  local argv = { opts.program or M.program(), M.COMMAND, tostring(require("moat.c.system").getpid()), "--" }
  for _, a in ipairs(launch.cleanup or {}) do argv[#argv + 1] = a end
  -- Its own process group: a Ctrl-C at the terminal reaches moat's group, not the reaper.
  return require("moat.c.proc").spawn(argv, { stdout = "null", stderr = "null", group = true,
    env = launch.reap_env or { "PATH=" .. (os.getenv("PATH") or "/usr/bin:/bin") } })
end

-- Kills `pid`'s process group when it leads one, else `pid` alone (never a group it only
-- shares, such as moat's own job).
local function _kill(pid, pgid)
  require("moat.c.system").kill(pgid == pid and -pid or pid, "KILL")
end

-- Watches `parent` until it is gone; returns the children it had: { [pid] = {pgid, start} }.
local function _watch(parent, me)
  local C = require("moat.c.proc")
  local seen = {}
  while true do
    local ppid = _info(me)
    if ppid ~= parent then return seen end
    for _, pid in ipairs(require("moat.proc").children(parent)) do
      if pid ~= me and not seen[pid] then
        local _, pgid, start = _info(pid)
        if pgid then seen[pid] = { pgid = pgid, start = start } end
      end
    end
    C.wait({}, M.TICK_MS)
  end
end

-- Entry point of `moat __reaper MOAT_PID -- CLEANUP...` (args as the CLI gets them); returns the
-- exit status.
function M.main(args)
  local parent = math.tointeger(tonumber(args[2] or ""))
  if not parent or args[3] ~= "--" then
    io.stderr:write("moat: __reaper is internal to moat run\n")
    return 64
  end
  local cleanup = table.move(args, 4, #args, 1, {})
  local seen = _watch(parent, require("moat.c.system").getpid())
  for pid, c in pairs(seen) do
    -- Only a process that is still the one seen (same start time) is killed: pids are reused.
    local _, _, start = _info(pid)
    if start and start == c.start then _kill(pid, c.pgid) end
  end
  if #cleanup == 0 then return 0 end
  local sys, C = require("moat.c.system"), require("moat.c.proc")
  local t0 = sys.monotonic_ms()
  for _, at in ipairs(M.PASSES_MS) do
    local wait = t0 + at - sys.monotonic_ms()
    if wait > 0 then C.wait({}, wait) end
    require("moat.proc").run(cleanup, { stdout = "null", stderr = "null", timeout = M.CLEANUP_TIMEOUT_MS })
  end
  return 0
end

return M
