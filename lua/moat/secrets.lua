-- The secrets pipeline: dedupes the plan's references, groups them per backend, runs every
-- backend's resolve as a task so all backends work at once, and collects every failure.
-- Values stay in res.values; everything else this module produces is safe to print.
local registry = require("moat.registry")
local scrub = require("moat.scrub")
local show = require("moat.text").show
local count = require("moat.text").count

local M = {}

M.MAX_VALUE = 128 * 1024          -- bytes; larger values are refused by name
M.OUTPUT_CAP = 16 * 1024 * 1024   -- bytes a backend process may print before it is killed
M.DEFAULT_TIMEOUT = 60            -- seconds per backend call
M.DEFAULT_JOBS = 8                -- backend processes alive at once
-- After a backend program exits (its group killed), how long a process that left the group
-- (setsid) may hold its output open before moat stops reading: what it printed is what it gave.
M.LINGER_MS = 500

-- Returns nil when `value` may be handed over, else why not.
local function _refuse(value)
  if type(value) ~= "string" then return "the backend returned a " .. type(value) .. ", not a string" end
  if value:find("%z") then
    return "the value contains a NUL byte, which an environment variable cannot hold"
  end
  if #value > M.MAX_VALUE then
    return ("the value is %d bytes, over the %d KiB limit"):format(#value, M.MAX_VALUE // 1024)
  end
  return nil
end

local function _is_enoent(msg, errno)
  return errno == 2 or tostring(msg):find("No such file or directory", 1, true) ~= nil
end

-- Returns a failure {kind, reason, fix} for a process result that did not run to its end
-- (timeout, output cap, signal), or nil when it exited normally, held output (r.held: the
-- program exited, an escaped process kept its pipes) included.
function M.run_failure(r, prog, timeout_s)
  prog = prog or "the backend's program"
  if r.timed_out then
    return { kind = "timeout",
      reason = ("%s did not finish within %s s and was killed"):format(prog, tostring(timeout_s or "the")),
      fix = ("check that %s works on its own (network, a prompt waiting for input), or raise --timeout")
        :format(prog) }
  end
  if r.truncated then
    return { kind = "output_limit",
      reason = ("%s printed more than %d MiB and was killed"):format(prog, M.OUTPUT_CAP // (1024 * 1024)),
      fix = ("check what %s prints when run on its own"):format(prog) }
  end
  if r.signal then
    local name = r.signal
    if type(r.signal) == "number" then name = require("moat.c.signal").name(r.signal) or r.signal end
    return { kind = "backend_error", reason = ("%s was killed by signal %s"):format(prog, tostring(name)),
      fix = ("run %s on its own to see why it dies"):format(prog) }
  end
  return nil
end

local function _environ(map)
  map = map or require("moat.c.system").environ()
  return map, require("moat.proc").environ(map)
end

-- ctx.run: runs argv (never a shell), with moat's environment and o.env (a map) over it;
-- returns {code, signal, stdout, stderr, timed_out, truncated, ms} | nil, message, errno when
-- the program cannot be started. Refuses a value in argv.
local function _run(ctx, state, argv, o)
  o = o or {}
  if type(argv) ~= "table" or type(argv[1]) ~= "string" or argv[1] == "" then
    error("ctx.run needs an argv table of strings", 3)
  end
  for i, a in ipairs(argv) do
    if type(a) ~= "string" or a:find("%z") then
      error(("ctx.run: argv[%d] must be a string without NUL"):format(i), 3)
    end
    for _, v in ipairs(state.known) do
      if #v >= 6 and a:find(v, 1, true) then error("ctx.run: a secret value must never be put in argv", 3) end
    end
  end
  local timeout_s = o.timeout or ctx.timeout
  ctx.log("run", table.concat(argv, " "))
  local sys = require("moat.c.system")
  local t0 = sys.monotonic_ms()
  local env = state.env_list
  if o.env then
    local map = {}
    for k, v in pairs(state.env_map) do map[k] = v end
    for k, v in pairs(o.env) do map[k] = v end
    env = require("moat.proc").environ(map)
  end
  local r, msg, errno = require("moat.proc").run(argv, {
    stdin = o.stdin, stdout = "pipe", stderr = "pipe", env = env,
    cap = M.OUTPUT_CAP, timeout = math.floor(timeout_s * 1000), group = true, linger = M.LINGER_MS,
    -- A moat that dies (a stop it does not hold, SIGKILL) takes its backend calls with it.
    pdeathsig = true,
  })
  if not r then
    local missing = _is_enoent(msg, errno)
    -- Out of descriptors (EMFILE, ENFILE), processes (EAGAIN) or memory (ENOMEM): too many
    -- jobs for this machine's limits, not a missing program.
    local files, procs = errno == 24 or errno == 23, errno == 11 or errno == 12
    local jobs = ("lower --jobs (now %s) or raise the limit with "):format(tostring(state.opts.jobs))
    ctx.last_failure = files
      and { kind = "resource", reason = ("cannot start %s: too many open files (the limit is %s; see ulimit -n)")
        :format(argv[1], tostring((sys.getrlimit("nofile")))), fix = jobs .. "ulimit -n" }
      or procs and { kind = "resource", reason = ("cannot start %s: %s (see ulimit -u)")
        :format(argv[1], errno == 11 and "too many processes" or "out of memory"), fix = jobs .. "ulimit -u" }
      or missing
      and { kind = "unavailable", reason = ("%s is not installed (not found on PATH)"):format(argv[1]),
        fix = ("install %s or put it on PATH"):format(argv[1]) }
      or { kind = "unavailable", reason = ("cannot run %s: %s"):format(argv[1], tostring(msg)),
        fix = ("check that %s can be run"):format(argv[1]) }
    return nil, msg, errno or (missing and 2 or nil)
  end
  r.ms = r.ms or (sys.monotonic_ms() - t0)
  ctx.last_failure = M.run_failure(r, argv[1], timeout_s) or ctx.last_failure
  ctx.log(("%s %s in %d ms"):format(argv[1], r.code and ("exited " .. r.code)
    or ("was killed by signal " .. tostring(r.signal)), r.ms))
  return r
end

-- Builds the ctx a backend sees. `state` is shared by every backend of one resolve:
-- { known = {values}, opts = {jobs, timeout}, env_map, env_list, done = {}, on_done = fn }.
local function _context(scheme, state)
  local proc = require("moat.proc")
  local ui = require("moat.ui")
  local ctx = { scheme = scheme, timeout = state.opts.timeout, jobs = state.opts.jobs,
    json = require("moat.c.json") }

  ctx.sanitize = function(text, extra)
    local vals = {}
    for _, v in ipairs(state.known) do vals[#vals + 1] = v end
    for _, v in ipairs(extra or {}) do vals[#vals + 1] = v end
    return scrub.text(text, vals)
  end

  ctx.log = function(...)
    local parts = {}
    for i = 1, select("#", ...) do parts[#parts + 1] = tostring((select(i, ...))) end
    ui.debug(1, ("backend %s: %s"):format(scheme, ctx.sanitize(table.concat(parts, " "))))
  end

  ctx.env = function(name) return state.env_map[name] end

  ctx.run = function(argv, o) return _run(ctx, state, argv, o) end

  -- Runs the functions in `fns` concurrently (each may call ctx.run); returns their results.
  ctx.gather = function(fns)
    return proc.gather(fns, { jobs = ctx.jobs })
  end

  -- Describes a result that ended by timeout, cap or signal: {kind, reason, fix} | nil.
  ctx.run_failure = function(r, prog)
    return M.run_failure(r, prog, ctx.timeout)
  end

  ctx.ok = function(req, value) state.settle(scheme, req, true, value) end
  ctx.fail = function(req, failure) state.settle(scheme, req, false, failure) end
  return ctx
end

local function _ms(sys, t0)
  return math.max(0, math.floor(sys.monotonic_ms() - t0))
end

-- Runs one backend's resolve over its requests; never raises.
local function _run_backend(scheme, group, state)
  local sys = require("moat.c.system")
  local t0 = sys.monotonic_ms()
  local mod, err = registry.get(scheme)
  local ctx
  if mod then
    ctx = _context(scheme, state)
    local ok, e = pcall(mod.resolve, group.requests, ctx)
    if not ok then
      local why = scrub.text(tostring(e), state.known, 300)
      for _, req in ipairs(group.requests) do
        state.settle(scheme, req, false, { kind = "backend_error",
          reason = "the backend raised an error: " .. why,
          fix = ("fix the backend module moat.backends.%s (see `moat backends` for its file)"):format(scheme) })
      end
    end
  end
  for _, req in ipairs(group.requests) do
    if not state.done[req] then
      local f = (ctx and ctx.last_failure) or { kind = "no_value",
        reason = mod and "the backend returned no value for this reference"
          or ("the backend cannot be loaded: " .. tostring(err)),
        fix = ("check the backend module moat.backends.%s"):format(scheme) }
      state.settle(scheme, req, false, f)
    end
  end
  return _ms(sys, t0)
end

-- Runs the backend tasks; then whatever the backends left behind (a process that escaped its
-- group and was re-parented to moat) is killed and reaped, whether the gather ended or raised.
local function _gather(tasks, jobs)
  if #tasks == 0 then return end
  local proc = require("moat.proc")
  local ok, err = pcall(proc.gather, tasks, { jobs = jobs })
  proc.reap_strays()
  if not ok then error(err, 0) end
end

local function _new_state(opts)
  local state = { opts = { jobs = opts.jobs or M.DEFAULT_JOBS, timeout = opts.timeout or M.DEFAULT_TIMEOUT },
    known = {}, done = {}, settle = function() end }
  state.env_map, state.env_list = _environ(opts.env)
  return state
end

-- Groups the plan's references per backend, each distinct reference once: returns groups
-- (scheme -> { requests }), order (schemes in first-use order), by_ref ("scheme\0ref" -> request).
local function _group(plan)
  local groups, order, by_ref = {}, {}, {}
  -- Plain values come from plan.build beside the plan, never from a backend.
  for _, s in ipairs(plan.secrets) do
    local key = s.backend .. "\0" .. s.ref
    local req = not s.plain and by_ref[key]
    if req then
      req.names[#req.names + 1] = s.name
    elseif not s.plain then
      local g = groups[s.backend]
      if not g then
        g = { requests = {} }
        groups[s.backend], order[#order + 1] = g, s.backend
      end
      req = { name = s.name, names = { s.name }, ref = s.ref, parsed = s.parsed }
      g.requests[#g.requests + 1] = req
      by_ref[key] = req
    end
  end
  return groups, order, by_ref
end

-- Returns the settle function backends report through: the first word on a request counts.
local function _settler(state, by_ref, outcome, t_start)
  local sys = require("moat.c.system")
  return function(scheme, req, ok, what)
    -- A backend may hand back a copy of a request; find ours by reference.
    local mine = type(req) == "table" and by_ref[scheme .. "\0" .. tostring(req.ref)]
    if not mine or state.done[mine] then return end
    state.done[mine] = true
    local ms = _ms(sys, t_start)
    local why = ok and _refuse(what)
    if why then
      outcome[mine] = { ok = false, ms = ms, kind = "invalid", reason = why,
        fix = "store the value without NUL bytes, or pass large data as a mounted file instead" }
    elseif ok then
      outcome[mine] = { ok = true, ms = ms, value = what }
      state.known[#state.known + 1] = what
    else
      what = type(what) == "table" and what or { reason = tostring(what) }
      outcome[mine] = { ok = false, ms = ms, kind = what.kind or "backend_error",
        reason = what.reason or "the backend reported a failure", fix = what.fix }
    end
  end
end

-- Returns the record of plan entry `s` and its value (nil when it failed).
local function _record(s, o, state)
  local rec = { name = s.name, ref = s.ref, backend = s.backend, ms = o.ms, ok = o.ok }
  if not o.ok then
    -- Last line of defence: strip every value moat knows from what people will read.
    rec.kind = o.kind
    rec.reason = scrub.text(o.reason, state.known)
    rec.fix = o.fix and scrub.text(o.fix, state.known) or nil
  end
  return rec, o.ok and o.value or nil
end

-- Returns the outcome `o` of plan entry `s`, or the one that replaces a *not found* for an
-- optional secret (outcome "skipped", no value) or one with a default (outcome "defaulted", the
-- default from `plain`). Every other failure (auth, network, timeout, permission) stands.
function M.tolerate(s, o, plain)
  if o.ok or o.kind ~= "not_found" or not (s.optional or s.has_default) then return o end
  if not s.has_default then return { ok = true, ms = o.ms, outcome = "skipped", reason = o.reason } end
  local v = plain[s.name] or ""
  local why = _refuse(v)
  if why then
    return { ok = false, ms = o.ms, kind = "invalid", reason = "the default cannot be used: " .. why,
      fix = "shorten the default, or store the value in a backend" }
  end
  return { ok = true, ms = o.ms, value = v, outcome = "defaulted", reason = o.reason }
end

-- Resolves every secret of `plan`. opts: plain (map NAME -> value from plan.build), jobs (8),
-- timeout (seconds, 60), progress = fn(msg), env = map the backends see and run their programs
-- with (default: moat's environment).
-- Returns res = { ok, values = {NAME = value}, records = {...} in plan order, failures = {...} };
-- a skipped or defaulted record has ok = true, outcome and record ("secret.skipped" | "secret.defaulted").
function M.resolve(plan, opts)
  opts = opts or {}
  local progress = opts.progress or function() end
  local state = _new_state(opts)
  local plain = opts.plain or {}
  for _, v in pairs(plain) do state.known[#state.known + 1] = v end
  local groups, order, by_ref = _group(plan)
  local outcome = {}
  state.settle = _settler(state, by_ref, outcome, require("moat.c.system").monotonic_ms())

  local tasks = {}
  for _, scheme in ipairs(order) do
    local g = groups[scheme]
    tasks[#tasks + 1] = function()
      progress(("asking %s for %s"):format(scheme, count(#g.requests, "secret")))
      local ms = _run_backend(scheme, g, state)
      progress(("%s answered in %d ms"):format(scheme, ms))
      return ms
    end
  end
  _gather(tasks, state.opts.jobs)

  local values, records, failures = {}, {}, {}
  for _, s in ipairs(plan.secrets) do
    local o = s.plain and { ok = true, ms = 0, value = plain[s.name] or "" }
      or outcome[by_ref[s.backend .. "\0" .. s.ref]]
    if o.ok and s.plain and _refuse(o.value) then
      o = { ok = false, ms = 0, kind = "invalid", reason = _refuse(o.value),
        fix = "store the value without NUL bytes, or pass large data as a mounted file instead" }
    end
    o = M.tolerate(s, o, plain)
    local rec, value = _record(s, o, state)
    if o.outcome then
      rec.outcome, rec.kind, rec.record = o.outcome, "not_found", "secret." .. o.outcome
      rec.reason = scrub.text(o.reason or "not found", state.known)
    end
    values[s.name] = value
    records[#records + 1] = rec
    if not rec.ok then failures[#failures + 1] = rec end
  end
  return { ok = #failures == 0, values = values, records = records, failures = failures }
end

-- Asks every backend used by `plan` whether it is usable: its optional check(ctx, requests),
-- given the requests it would resolve (so it can check each region, account…). opts as for
-- resolve. Returns { {backend, count, ok, reason, fix} } in first-use order.
function M.check(plan, opts)
  opts = opts or {}
  local state = _new_state(opts)
  -- Nothing is fetched, but what the host already holds is known: plain values and the host
  -- variables env:// names. A backend CLI that echoes one in its failure must not show it.
  for _, v in pairs(opts.plain or {}) do state.known[#state.known + 1] = v end
  for _, s in ipairs(plan.secrets) do
    local v = s.backend == "env" and s.parsed and state.env_map[s.parsed.var]
    if v then state.known[#state.known + 1] = v end
  end
  local out, by = {}, {}
  for _, s in ipairs(plan.secrets) do
    if not by[s.backend] then
      by[s.backend] = { backend = s.backend, count = 0, ok = true, requests = {} }
      out[#out + 1] = by[s.backend]
    end
    local c = by[s.backend]
    c.count = c.count + 1
    c.requests[#c.requests + 1] = { name = s.name, names = { s.name }, ref = s.ref, parsed = s.parsed }
  end
  local tasks = {}
  for _, c in ipairs(out) do
    if c.backend ~= "plain" then
      tasks[#tasks + 1] = function()
        local mod, err = registry.get(c.backend)
        if not mod then
          c.ok, c.reason = false, "cannot be loaded: " .. tostring(err)
          return
        end
        if not mod.check then return end
        local ok, good, reason, fix = pcall(mod.check, _context(c.backend, state), c.requests)
        if not ok then
          c.ok, c.reason = false, "the backend's check raised an error: " .. scrub.text(tostring(good), {}, 300)
        elseif not good then
          c.ok, c.reason = false, scrub.text(reason or "the backend is not usable", state.known)
          c.fix = fix and scrub.text(fix, state.known) or nil
        end
      end
    end
  end
  _gather(tasks, state.opts.jobs)
  for _, c in ipairs(out) do c.requests = nil end
  return out
end

-- Returns the text for people describing `failures` (records from resolve): one block each.
function M.report(failures)
  local lines = {}
  lines[#lines + 1] = ("%d secret%s could not be resolved:"):format(#failures, #failures == 1 and "" or "s")
  for _, f in ipairs(failures) do
    lines[#lines + 1] = ("  %s (%s, backend %s): %s [%s]"):format(f.name, show(f.ref), f.backend,
      f.reason or "failed", f.kind or "error")
    if f.fix then lines[#lines + 1] = "    fix: " .. f.fix end
  end
  return table.concat(lines, "\n")
end

return M
