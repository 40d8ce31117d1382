-- Supervising a launch in the foreground: spawn the runtime client, relay (and mask) its output,
-- forward INT/TERM/HUP, force a stop on a second signal, clean up, return its status.
local proc = require("moat.c.proc")
local signal = require("moat.c.signal")

local M = {}

M.GRACE_MS = 10000     -- after a forwarded TERM/HUP, how long the command has to stop by itself
M.CAP = 64 * 1024 * 1024
M.LINGER_MS = 2000     -- after the client ended or was forced, how long escaped processes may hold its pipes

local function _now()
  return require("moat.c.system").monotonic_ms()
end

-- Runs `argv` to its end quietly (cleanup commands); returns the result or nil.
local function _quiet(argv, env)
  return (require("moat.proc").run(argv, { env = env, stdout = "null", stderr = "null", timeout = 30000 }))
end

-- Returns moat's exit status for a result: the code, or 128+N for a command killed by signal N.
function M.status(r)
  if r.signal then
    return 128 + (math.type(r.signal) == "integer" and r.signal or signal.number(r.signal))
  end
  return r.code
end

local function _writer(f)
  return function(data)
    if data and #data > 0 then
      f:write(data)
      f:flush()
    end
  end
end

-- Builds the output maskers for opts (mask = values, mask_stdout / mask_stderr = bool); returns
-- { out, err } (nil where a stream is not masked) | nil, message when they cannot be built (the
-- values are too large to mask), so that the caller can refuse before anything runs.
function M.maskers(opts)
  local masking = opts.mask and #opts.mask > 0
  local m = { out = masking and opts.mask_stdout or nil, err = masking and opts.mask_stderr or nil }
  local ok, err = pcall(function()
    if m.out then m.out = require("moat.scrub").masker(opts.mask) end
    if m.err then m.err = require("moat.scrub").masker(opts.mask) end
  end)
  if not ok then
    return nil, ("the secret values cannot be masked (%s): pass --no-mask, or put large data in a file")
      :format(tostring(err):match("([^:]*)$"):gsub("^%s+", ""))
  end
  return m
end

local function _spawn(launch, maskers)
  local stream = (maskers.out or maskers.err) and true or nil
  return proc.spawn(launch.argv, {
    env = launch.env, cwd = launch.cwd, stdin = launch.stdin,
    stdout = maskers.out and "pipe" or "inherit", stderr = maskers.err and "pipe" or "inherit",
    stream = stream, cap = stream and M.CAP or nil, group = launch.group ~= false,
    -- If moat dies without cleaning up (SIGKILL, a crash), the client dies with it; it gets
    -- back the user's umask and core limit that moat's hardening changed for itself.
    pdeathsig = true, restore_limits = true,
  })
end

-- Ends the companions (killed with their groups, reaped) and runs the launch's finish once.
local function _end_companions(list, launch)
  for _, c in ipairs(list or {}) do c:close() end
  if launch.finish and not launch.finished then
    launch.finished = true
    pcall(launch.finish)
  end
end

-- Spawns the launch's companions ({argv, stdin, env}: helpers that live as long as the run,
-- such as the feeder of the init shim's FIFO), before the client so that one that cannot
-- start means nothing ran. Returns the list | nil, message, errno.
local function _companions(launch)
  local list = {}
  for _, c in ipairs(launch.companions or {}) do
    local p, err, errno = proc.spawn(c.argv, { env = c.env, stdin = c.stdin, stdout = "null",
      stderr = "inherit", pdeathsig = true })
    if not p then
      _end_companions(list, launch)
      return nil, err, errno
    end
    list[#list + 1] = p
  end
  return list
end

-- Starts the reaper (with opts.reaper, see moat.reaper), the companions, then the client: one
-- that cannot start means nothing ran. Returns true | nil, message, errno.
local function _start(st)
  local err, errno
  -- What escapes the launch's groups comes back to moat (and is ended with the run), unless
  -- the launch says that its client's helpers are meant to outlive it (launch.strays == false).
  require("moat.c.system").subreaper(st.launch.strays ~= false)
  if st.opts.reaper then
    st.reaper, err, errno = require("moat.reaper").start(st.launch)
    if not st.reaper then return nil, "cannot start moat's reaper: " .. tostring(err), errno end
  end
  st.companions, err, errno = _companions(st.launch)
  if st.companions then st.p, err, errno = _spawn(st.launch, st.maskers) end
  -- The reaper notes the client now, not at its next look: moat may die before that.
  if st.p and st.reaper then require("moat.reaper").poke(st.reaper) end
  if st.p then return true end
  _end_companions(st.companions, st.launch)
  if st.reaper then st.reaper:close() end
  return nil, err, errno
end

-- The processes to wait on: the client and the companions still running.
local function _live(st)
  local list = { st.p }
  for _, c in ipairs(st.companions) do
    if not c:done() then list[#list + 1] = c end
  end
  return list
end

-- Relays what the client printed since the last call through the maskers.
local function _relay(st)
  if not (st.maskers.out or st.maskers.err) then return end
  local o, e = st.p:drain()
  if st.maskers.out and o and #o > 0 then st.write_out(st.maskers.out:feed(o)) end
  if st.maskers.err and e and #e > 0 then st.write_err(st.maskers.err:feed(e)) end
end

-- Kills the client's group and removes the container (once).
local function _force(st)
  if st.forced then return end
  st.forced = true
  st.p:kill("KILL")
  if st.launch.cleanup then _quiet(st.launch.cleanup, st.launch.reap_env or st.launch.env) end
  -- Pipes held by a process that left the group never close: stop waiting for them then.
  st.deadline = _now() + M.LINGER_MS
end

-- Once the client has ended, a process that left its group (setsid) may hold its pipes for
-- ever: they are waited on for LINGER_MS more, then closed.
local function _linger(st)
  if st.lingering or st.forced or _now() < (st.look_at or 0) then return end
  st.look_at = _now() + 100
  -- The client itself has ended and was reaped, while pipes it shared may still be open.
  if not st.p:exited() then return end
  st.lingering = true
  st.deadline = _now() + M.LINGER_MS
end

local function _on_signal(st, num)
  local name = signal.name(num) or tostring(num)
  st.signals[#st.signals + 1] = name
  if st.opts.on_signal then st.opts.on_signal(name, #st.signals) end
  if st.p:done() or st.lingering then return end
  if #st.signals > 1 then return _force(st) end
  local argv = st.launch.signal and st.launch.signal(name)
  if argv then _quiet(argv, st.launch.reap_env or st.launch.env) else st.p:kill(name) end
  -- INT may just interrupt what the command is doing; TERM and HUP ask it to end.
  if name ~= "INT" then st.deadline = _now() + (st.opts.grace_ms or M.GRACE_MS) end
end

-- Waits until the client is done, relaying output and handling signals; returns its result.
local function _wait(st)
  while not st.p:done() do
    local wait = 1000
    if st.deadline then wait = math.max(1, math.min(wait, st.deadline - _now())) end
    proc.wait(_live(st), wait)
    _relay(st)
    for _, num in ipairs(signal.pending()) do _on_signal(st, num) end
    if not st.p:done() then _linger(st) end
    if st.deadline and not st.p:done() and _now() >= st.deadline then
      if st.forced or st.lingering then return st.p:terminate(0) end
      _force(st)
    end
  end
  return st.p:result()
end

-- The maskers hold the values: they are wiped as soon as the output is relayed, not when
-- the collector gets to them (moat's exit does not free its Lua state).
local function _close_maskers(st)
  for _, m in pairs(st.maskers) do m:close() end
end

-- Runs `launch` (see moat.runtime) in the foreground until it ends. opts:
--   mask = array of values to conceal in the output (nil/empty: no masking),
--   mask_stdout / mask_stderr = bool (which streams go through the masker),
--   stdout / stderr = fn(data) writers (default: moat's own), on_signal = fn(name, count), grace_ms,
--   reaper = true (a watchdog cleans up if moat dies: see moat.reaper), maskers (from M.maskers).
-- Returns { status, code, signal, signals = {names}, forced = bool, ms } | nil, message, errno
-- when the client could not be started. The maskers are built before the spawn: if one
-- cannot be, nothing has run.
function M.run(launch, opts)
  opts = opts or {}
  local maskers, merr = opts.maskers, nil
  if not maskers then maskers, merr = M.maskers(opts) end
  if not maskers then return nil, merr end
  local st = { launch = launch, opts = opts, maskers = maskers, signals = {}, forced = false,
    write_out = opts.stdout or _writer(io.stdout), write_err = opts.stderr or _writer(io.stderr) }
  local _stops <close> = require("moat.proc").hold_stops() -- luacheck: ignore 211 (held for its <close>)
  local started = _now()
  local ok, err, errno = _start(st)
  if not ok then
    _close_maskers(st)
    return nil, err, errno
  end
  local p = st.p
  local r = _wait(st)
  _relay(st)
  if st.maskers.out then st.write_out(st.maskers.out:finish()) end
  if st.maskers.err then st.write_err(st.maskers.err:finish()) end
  _close_maskers(st)
  p:close()
  _end_companions(st.companions, launch)
  -- A client that died by a signal may leave its container running; remove it by name.
  if not st.forced and launch.cleanup and (r.signal or #st.signals > 0) then
    _quiet(launch.cleanup, launch.reap_env or launch.env)
  end
  -- Everything is cleaned up: the reaper is not needed any more.
  if st.reaper then st.reaper:close() end
  -- Nothing the command started outlives it: processes that left its group are ended too.
  require("moat.proc").reap_strays()
  return {
    status = M.status(r), code = r.code, signal = r.signal, signals = st.signals, forced = st.forced,
    ms = _now() - started,
  }
end

return M
