-- Supervising a launch in the foreground: spawn the runtime client, relay (and mask) its output,
-- forward INT/TERM/HUP, force a stop on a second signal, clean up, return its status.
local proc = require("moat.c.proc")
local signal = require("moat.c.signal")

local M = {}

M.GRACE_MS = 10000     -- after a forwarded TERM/HUP, how long the command has to stop by itself
M.CAP = 64 * 1024 * 1024

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

-- Runs `launch` (see moat.runtime) in the foreground until it ends. opts:
--   mask = array of values to conceal in the output (nil/empty: no masking),
--   mask_stdout / mask_stderr = bool (which streams go through the masker),
--   stdout / stderr = fn(data) writers (default: moat's own), on_start = fn(pid),
--   on_signal = fn(name, count), grace_ms.
-- Returns { status, code, signal, signals = {names}, forced = bool, ms } | nil, message, errno
-- when the client could not be started.
function M.run(launch, opts)
  opts = opts or {}
  local masking = opts.mask and #opts.mask > 0
  local mask_out = masking and opts.mask_stdout
  local mask_err = masking and opts.mask_stderr
  local stream = mask_out or mask_err
  -- The maskers are built before the spawn: if one cannot be, nothing has run.
  local maskers = {}
  local mask
  if stream then mask = require("moat.c.mask") end
  if mask_out then maskers.out = mask.new(opts.mask) end
  if mask_err then maskers.err = mask.new(opts.mask) end
  local write_out = opts.stdout or _writer(io.stdout)
  local write_err = opts.stderr or _writer(io.stderr)
  local caught = { "INT", "TERM", "HUP" }
  signal.catch(caught)
  local started = _now()
  local p, err, errno = proc.spawn(launch.argv, {
    env = launch.env, cwd = launch.cwd, stdin = launch.stdin,
    stdout = mask_out and "pipe" or "inherit", stderr = mask_err and "pipe" or "inherit",
    stream = stream or nil, cap = stream and M.CAP or nil, group = launch.group ~= false,
  })
  if not p then
    signal.restore()
    return nil, err, errno
  end
  if opts.on_start then
    -- If recording the start fails (say, the audit log is full), the container must not
    -- outlive moat: kill the client, remove the container, then let the error through.
    local ok, e = pcall(opts.on_start, p:pid())
    if not ok then
      p:kill("KILL")
      if launch.cleanup then _quiet(launch.cleanup, launch.env) end
      p:close()
      signal.restore()
      error(e, 0)
    end
  end

  local function relay()
    if not stream then return end
    local o, e = p:drain()
    if maskers.out and o and #o > 0 then write_out(maskers.out:feed(o)) end
    if maskers.err and e and #e > 0 then write_err(maskers.err:feed(e)) end
  end

  local signals, forced, deadline = {}, false, nil
  local grace = opts.grace_ms or M.GRACE_MS
  local function force()
    if forced then return end
    forced = true
    p:kill("KILL")
    if launch.cleanup then _quiet(launch.cleanup, launch.env) end
  end
  local function forward(name)
    local argv = launch.signal and launch.signal(name)
    if argv then
      _quiet(argv, launch.env)
    else
      p:kill(name)
    end
  end

  while not p:done() do
    local wait = 1000
    if deadline then wait = math.max(0, math.min(wait, deadline - _now())) end
    proc.wait({ p }, wait)
    relay()
    for _, num in ipairs(signal.pending()) do
      local name = signal.name(num) or tostring(num)
      signals[#signals + 1] = name
      if opts.on_signal then opts.on_signal(name, #signals) end
      if p:done() then break end
      if #signals == 1 then
        forward(name)
        -- INT may just interrupt what the command is doing; TERM and HUP ask it to end.
        if name ~= "INT" then deadline = _now() + grace end
      else
        force()
      end
    end
    if deadline and not p:done() and _now() >= deadline then force() end
  end
  relay()
  if maskers.out then write_out(maskers.out:finish()) end
  if maskers.err then write_err(maskers.err:finish()) end
  local r = p:result()
  p:close()
  signal.restore()
  -- A client that died by a signal may leave its container running; remove it by name.
  if not forced and launch.cleanup and (r.signal or #signals > 0) then _quiet(launch.cleanup, launch.env) end
  return {
    status = M.status(r), code = r.code, signal = r.signal, signals = signals, forced = forced,
    ms = _now() - started,
  }
end

return M
