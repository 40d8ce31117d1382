-- Coroutine scheduler over moat.c.proc: tasks run concurrently, each M.run yields until
-- its child is done, and one C wait call watches every child at once.
local C = require "moat.c.proc"
local signal = require "moat.c.signal"

local M = {}

-- The signals that stop a run: while they are held, each is only recorded, and it wakes waits.
M.STOPS = { "INT", "TERM", "HUP" }
-- How long backends have, after a stop signal, to end by themselves before they are killed.
M.STOP_GRACE_MS = 2000

local _holds = 0
-- What an interrupted gather raises: { signal = "INT" }.
local Interrupted = { __tostring = function(e) return "interrupted by SIG" .. e.signal end }

-- A task coroutine -> its scheduler; weak so finished tasks vanish.
local _sched_of = setmetatable({}, { __mode = "k" })
-- What a task yields, so a stray coroutine.yield in a task is caught.
local _PARK = {}

local function _current()
  local co, main = coroutine.running()
  if main then return nil end
  return _sched_of[co], co
end

local function _wake(s, co)
  s.ready[#s.ready + 1] = co
end

local function _park()
  if coroutine.yield(_PARK) ~= _PARK then
    error("moat.proc: a task was resumed by something other than its scheduler", 2)
  end
end

local function _finish(g, i, ok, value)
  if g.finished then return end
  if ok then
    g.results[i] = value
    g.left = g.left - 1
    if g.left > 0 then return end
  else
    g.err = value
  end
  g.finished = true
  if g.waiter then _wake(g.sched, g.waiter) end
end

local function _add_task(s, g, i, fn)
  local co = coroutine.create(function() return fn() end)
  _sched_of[co] = s
  s.tasks[co] = { group = g, index = i }
  _wake(s, co)
end

local function _resume(s, co)
  local ok, res = coroutine.resume(co, _PARK)
  local t = s.tasks[co]
  if ok and coroutine.status(co) == "suspended" then
    if res ~= _PARK then
      ok, res = false, debug.traceback(co, "moat.proc: a task yielded outside moat.proc")
    else
      return
    end
  elseif not ok and type(res) == "string" then
    res = debug.traceback(co, res)
  end
  s.tasks[co] = nil
  _finish(t.group, t.index, ok, res)
end

local function _new_group(s, n, waiter)
  return { sched = s, left = n, results = {}, finished = n == 0, waiter = waiter }
end

-- Catches INT, TERM and HUP until the returned token is closed (calls nest): from then on
-- they only wake waits, and stop_signal or the supervisor decides what each means.
function M.hold_stops()
  if _holds == 0 then
    signal.catch(M.STOPS)
    signal.pending()
  end
  _holds = _holds + 1
  return setmetatable({}, { __close = function(tok)
    if rawget(tok, "closed") then return end
    rawset(tok, "closed", true)
    _holds = _holds - 1
    if _holds == 0 then signal.restore() end
  end })
end

-- Returns the name of a stop signal (INT, TERM, HUP) that arrived since the last call while
-- stops were held, or nil; the signals it saw are consumed.
function M.stop_signal()
  if _holds == 0 then return nil end
  local found
  for _, n in ipairs(signal.pending()) do
    local name = signal.name(n)
    if not found and (name == "INT" or name == "TERM" or name == "HUP") then found = name end
  end
  return found
end

-- Returns the signal's name when `e` is what an interrupted gather raised, else nil.
function M.interrupted(e)
  return getmetatable(e) == Interrupted and e.signal or nil
end

-- Asks every process in `list` to stop (TERM to its group), gives them the stop grace (cut
-- short by another stop signal), then kills and reaps whatever is left.
local function _stop_all(list)
  for _, p in ipairs(list) do p:kill("TERM") end
  local deadline = require("moat.c.system").monotonic_ms() + M.STOP_GRACE_MS
  while true do
    local left = {}
    for _, p in ipairs(list) do if not p:done() then left[#left + 1] = p end end
    local now = require("moat.c.system").monotonic_ms()
    if #left == 0 or now >= deadline then break end
    C.wait(left, deadline - now)
    if M.stop_signal() then break end
  end
  for _, p in ipairs(list) do p:close() end
end

-- Runs ready tasks and waits on children until group g is finished; raises an Interrupted
-- error when a stop signal arrives.
local function _loop(s, g)
  while true do
    while #s.ready > 0 and not g.finished do
      _resume(s, table.remove(s.ready, 1))
    end
    if g.finished then return end
    local list = {}
    for p in pairs(s.waiting) do list[#list + 1] = p end
    if #list == 0 then
      error("moat.proc: every task is blocked and no process is running")
    end
    for _, p in ipairs(C.wait(list)) do
      local co = s.waiting[p]
      s.waiting[p] = nil
      _wake(s, co)
    end
    local sig = M.stop_signal()
    if sig then error(setmetatable({ signal = sig }, Interrupted), 0) end
  end
end

-- Hands a process slot to the next queued task, or frees it.
local function _release(s)
  local co = table.remove(s.queue, 1)
  if co then _wake(s, co) else s.alive = s.alive - 1 end
end

local function _run_sync(argv, opts)
  local p, msg, errno = C.spawn(argv, opts)
  if not p then return nil, msg, errno end
  while not p:done() do C.wait({ p }) end
  local r = p:result()
  p:close()
  return r
end

-- Returns the path program `cmd` runs as: an executable file searched on the absolute entries
-- of `path` (default PATH) when it has no "/" (moat.c.proc's search, the one spawn uses), else
-- `cmd` itself when it exists (relative to `cwd`); nil when there is no such file.
function M.which(cmd, path, cwd)
  local c = require("moat.c.proc")
  if cwd and cmd:find("/", 1, true) and cmd:sub(1, 1) ~= "/" then
    return c.which(cwd .. "/" .. cmd) and cmd or nil
  end
  return c.which(cmd, path)
end

-- Returns the fields after the command name of /proc/<pid>/stat (state first) | nil.
function M.stat(pid)
  local f = io.open("/proc/" .. pid .. "/stat", "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  -- The command name is in parentheses and may itself hold spaces or parentheses.
  local rest = s and s:match("^.*%) (.*)$")
  if not rest then return nil end
  local fields = {}
  for w in rest:gmatch("%S+") do fields[#fields + 1] = w end
  return fields
end

-- Returns the pids of `pid`'s children (running or not yet reaped).
function M.children(pid)
  local out = {}
  local f = io.open(("/proc/%d/task/%d/children"):format(pid, pid), "rb")
  if f then
    for n in f:read("a"):gmatch("%d+") do out[#out + 1] = tonumber(n) end
    f:close()
    return out
  end
  -- Without CONFIG_PROC_CHILDREN: every process whose parent is `pid`.
  for n in require("lfs").dir("/proc") do
    local st = n:match("^%d+$") and M.stat(n)
    if st and tonumber(st[2]) == pid then out[#out + 1] = tonumber(n) end
  end
  return out
end

-- How long reap_strays waits for killed strays to be gone.
M.STRAY_WAIT_MS = 2000

-- Kills (with their groups when they lead one, as a setsid process does) and reaps moat's
-- children that no process handle tracks: descendants that left their group and, moat being
-- their subreaper, were re-parented to it. Their own children come to moat next and go the same
-- way. Returns how many were killed.
function M.reap_strays()
  local sys = require("moat.c.system")
  if not C.has_children() then return 0 end
  local me, seen, n = sys.getpid(), {}, 0
  local deadline = sys.monotonic_ms() + M.STRAY_WAIT_MS
  while true do
    local left = 0
    for _, pid in ipairs(M.children(me)) do
      if not C.tracks(pid) then
        if not seen[pid] then
          local st = M.stat(pid)
          sys.kill(st and tonumber(st[3]) == pid and -pid or pid, "KILL")
          seen[pid], n = true, n + 1
        end
        if C.reap(pid) == false then left = left + 1 end
      end
    end
    if left == 0 or sys.monotonic_ms() >= deadline then return n end
    C.wait({}, 10)
  end
end

-- Returns the environ list {"K=V", ...}, sorted, for the map `env` (default: moat's own).
function M.environ(env)
  env = env or require("moat.c.system").environ()
  local out = {}
  for k, v in pairs(env) do out[#out + 1] = k .. "=" .. v end
  table.sort(out)
  return out
end

-- run(argv, opts) -> { code, signal, stdout, stderr, timed_out, truncated, ms } | nil, msg, errno
-- Inside a gather task it yields while the child runs; elsewhere it waits for it.
function M.run(argv, opts)
  local s, co = _current()
  if not s then return _run_sync(argv, opts) end
  if s.alive >= s.jobs then
    s.queue[#s.queue + 1] = co
    _park()
  else
    s.alive = s.alive + 1
  end
  local p, msg, errno = C.spawn(argv, opts)
  if not p then
    _release(s)
    return nil, msg, errno
  end
  s.waiting[p] = co
  _park()
  _release(s)
  local r = p:result()
  p:close()
  return r
end

-- gather(fns, { jobs = 8 }) -> array of each function's first return value, in order.
-- While stops are held (hold_stops), a stop signal ends it: every child is stopped and an
-- error that M.interrupted recognises is raised.
-- Inside a task the functions join the running scheduler and share its process limit.
function M.gather(fns, opts)
  local s, co = _current()
  if s then
    local g = _new_group(s, #fns, co)
    for i, fn in ipairs(fns) do _add_task(s, g, i, fn) end
    if not g.finished then _park() end
    if g.err ~= nil then error(g.err, 0) end
    return g.results
  end
  local jobs = opts and opts.jobs or 8
  assert(math.type(jobs) == "integer" and jobs >= 1, "gather: jobs must be an integer >= 1")
  s = { jobs = jobs, alive = 0, queue = {}, ready = {}, waiting = {}, tasks = {} }
  local g = _new_group(s, #fns)
  for i, fn in ipairs(fns) do _add_task(s, g, i, fn) end
  local ok, err = pcall(_loop, s, g)
  -- Children of tasks that can no longer be resumed are killed and reaped (asked first when
  -- a stop signal ended the gather).
  local left = {}
  for p in pairs(s.waiting) do left[#left + 1] = p end
  if not ok and M.interrupted(err) then _stop_all(left) end
  for _, p in ipairs(left) do p:close() end
  if not ok then error(err, 0) end
  if g.err ~= nil then error(g.err, 0) end
  return g.results
end

return M
