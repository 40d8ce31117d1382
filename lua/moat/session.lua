-- The pipeline that `run`, `run --dry-run` and `secrets check` share, in one direction:
--   config -> trust -> plan -> policy -> runtime (validate) -> audit -> resolve -> launch -> wait
-- Each step returns the session or nil, message, kind (see moat.exit.OF_KIND); commands map
-- that to output and an exit code. Values live only in the session's `values` and in the
-- launched child's environ.
local exit = require("moat.exit")
local ui = require("moat.ui")

local M = {}


-- Calls `fn` on the audit run; an audit failure of any shape becomes nil, message, "audit".
local function _audit(fn, ...)
  local ok, a, b, c = pcall(fn, ...)
  if ok and a then return a end
  local msg = ok and tostring(b or "the audit log could not be written")
    or exit.is_failure(a) and a.message or tostring(a)
  if not msg:find("^audit") then msg = "audit log: " .. msg end
  -- An unusable MOAT_HOME (relative, unset) is the user's setting to fix (78); the rest is I/O.
  return nil, msg, (ok and c == "config") and "config" or "audit"
end

-- Opens the audit run for `s` once; returns it | nil, message, "audit".
local function _log(s)
  if s.log then return s.log end
  local p = s.plan
  local log, err, kind = _audit(require("moat.auditlog").start, {
    name = p.name, workspace = p.workspace, runtime = s.runtime and s.runtime.name or p.runtime,
    image = s.runtime and s.runtime.uses_image == false and nil or p.image, command = p.command,
    version = s.opts.version, profile = s.opts.profile, purpose = s.opts.purpose,
  })
  if not log then return nil, err, kind end
  s.log = log
  return log
end

local function _commit(s)
  if not s.log then return true end
  return _audit(s.log.commit, s.log)
end

-- Finishes the audit run (if one is open) with `fields`; returns true | nil, message, "audit".
function M.finish(s, fields)
  if not s.log or s.finished then return true end
  s.finished = true
  return _audit(s.log.finish, s.log, fields)
end

local function _fail(s, fields, msg, kind)
  local ok, err = M.finish(s, fields)
  if not ok then ui.error(err) end
  return nil, msg, kind
end

-- Ends the session for stop signal `sig` (INT, TERM, HUP) before anything was launched: the
-- run is finished as interrupted. Returns nil, message, 128+N (the exit status).
function M.interrupted(s, sig)
  local status = 128 + require("moat.c.signal").number(sig)
  return _fail(s, { outcome = "interrupted", signal = sig, exit = status },
    ("interrupted by SIG%s; nothing was launched"):format(sig), status)
end

-- Returns the stop signal (INT, TERM, HUP) that arrived since the last look, or nil.
local function _stopped()
  return require("moat.proc").stop_signal()
end

-- Returns MOAT_GRACE_MS (ms a command has after a forwarded TERM or HUP) when set, else nil.
local function _grace(s)
  local n = math.tointeger(tonumber(s.environ.MOAT_GRACE_MS or ""))
  return n and n >= 0 and n or nil
end

-- Returns MOAT_NETWORK's network (none, host, a docker network) | nil, message.
local function _network(environ)
  local v = environ.MOAT_NETWORK
  if v == nil or v == "" then return nil end
  if not v:match("^[%w][%w_.-]*$") then return nil, "MOAT_NETWORK must be a network name such as none or host" end
  return v
end

-- Applies the command-line options that override the plan (command, image, interactive) and
-- settles what policies see: the runtime asked for, the network, the profile. Returns true |
-- nil, message, kind.
local function _apply(s, o, cfg)
  local p = s.plan
  local net, nerr = _network(s.environ)
  if nerr then return nil, nerr, "usage" end
  -- network: in the config (or its profile) wins over MOAT_NETWORK, as runtime: does.
  p.network, p.profile = cfg.network or net or "private", cfg.profile or o.profile
  if o.name then p.name = o.name end
  if o.command then p.command = o.command end
  if o.interactive then p.interactive = true end
  if o.image then
    p.image = o.image
  elseif not p.image then
    local img, warns = require("moat.images").pick(cfg.dependencies)
    p.image = img
    for _, w in ipairs(warns) do p.warnings[#p.warnings + 1] = w end
  end
  -- Policy scripts see the runtime that was asked for (auto-detection comes after them).
  p.runtime = o.runtime or p.runtime or (s.environ.MOAT_RUNTIME ~= "" and s.environ.MOAT_RUNTIME) or nil
  return true
end

-- Checks the workspace's trust: its place, its .moat/ Lua and the guarded part of its config.
-- A session that fetches values (o.audit) needs all of it trusted (o.trust records it first);
-- one that fetches nothing only warns about the config. Enables trusted workspace Lua.
local function _trust(o, cfg)
  local trust = require("moat.trust")
  local st, err = trust.status(cfg.dir, cfg)
  if not st then return nil, err, "trust" end
  local bad = trust.placement(st.real)
  if bad then return nil, bad, "denied" end
  local open = st.state == "untrusted" or st.state == "changed"
  if open and o.trust then
    local rec, terr = trust.trust(st.real, cfg)
    if not rec then return nil, terr, "audit" end
    ui.progress(("trusted %s"):format(st.real))
    st = assert(trust.status(st.real, cfg))
    open = false
  end
  if open and (o.audit or not st.lua_ok) then return nil, trust.message(st), "trust" end
  if open then ui.warn(trust.message(st)) end
  local ok, aerr = trust.activate(st.real, st)
  if ok == nil then return nil, aerr, "trust" end
  return true
end

-- Loads the config of `o.dir`, enables its trusted workspace Lua and builds the plan.
local function _load(s, o)
  local uerr = require("moat.plan").usage({ secrets = o.secrets, env = o.env })
  if uerr then return nil, uerr, "usage" end
  local cfg, err, kind = require("moat.config").load(o.dir or ".", o.config,
    { profile = o.profile, env_files = o.env_files })
  if not cfg then return nil, err, kind end
  local ok, terr, tkind = _trust(o, cfg)
  if not ok then return nil, terr, tkind end
  local plan, plain, pkind = require("moat.plan").build(cfg, { secrets = o.secrets, env = o.env })
  if not plan then return nil, plain, pkind end
  -- From here on, what runs: the profile merged and the env files read (trust saw the file's words).
  cfg = cfg.effective or cfg
  s.plan, s.plain, s.cfg = plan, plain, cfg
  local applied, aerr, akind = _apply(s, o, cfg)
  if not applied then return nil, aerr, akind end
  for _, w in ipairs(plan.warnings) do ui.warn(w) end
  return s
end

-- Runs every policy script; a denial is recorded when the session is audited.
local function _policy(s)
  local policy = require("moat.policy")
  local ok, denials = policy.check(s.plan)
  if ok then return s end
  if s.opts.audit then
    local log, err, kind = _log(s)
    if not log then return nil, err, kind end
    local rec, rerr = _audit(log.record, log, "policy.denied", { denials = denials })
    if not rec then return _fail(s, { outcome = "failed", kind = "audit", exit = exit.IOERR }, rerr, "audit") end
    return _fail(s, { outcome = "denied", exit = exit.NOPERM }, policy.report(denials), "denied")
  end
  return nil, policy.report(denials), "denied"
end

-- Chooses the runtime and checks its arguments: nothing is fetched before they pass.
local function _runtime(s, o)
  local runtime = require("moat.runtime")
  local rt, how, skipped = runtime.choose({ requested = o.runtime, config = s.cfg.runtime,
    env = s.environ.MOAT_RUNTIME, image = s.plan.image })
  if not rt then return nil, how, skipped end
  for _, r in ipairs(skipped) do ui.debug(1, ("runtime %s skipped: %s"):format(r.name, r.reason)) end
  ui.debug(1, ("runtime %s (%s)"):format(rt.name, how))
  local p = s.plan
  -- private is each runtime's default: the spec names only another choice.
  local network = p.network ~= "private" and p.network or nil
  local names = {}
  for _, e in ipairs(p.env) do names[#names + 1] = e.name end
  for _, e in ipairs(p.secrets) do names[#names + 1] = e.name end
  local sys = require("moat.c.system")
  s.runtime, s.how = rt, how
  s.spec = {
    run_id = require("moat.auditlog").new_id(), name = p.name, workspace = p.workspace, image = p.image,
    command = p.command, interactive = p.interactive and true or false, tty = sys.isatty(0) and sys.isatty(1),
    keep = o.keep and true or false, network = network, names = names, mounts = p.mounts,
    container = p.container, environ = s.environ,
  }
  local ok, err, kind = rt.validate(s.spec)
  -- A dry run shows a command that cannot be found rather than stopping at it.
  if not ok and kind == "not_found" and o.dry_run then
    s.notes = { err }
  elseif not ok then
    return nil, err, kind or "config"
  end
  return s
end

-- Opens a session: config, trust, plan, policy and (with o.launch) the runtime, validated.
-- o: dir, config, secrets = {"NAME=REF"}, env = {"NAME=VALUE"}, runtime, image, command,
-- interactive, keep, jobs, timeout, version, audit (record the run; values are fetched),
-- launch (a runtime is needed), dry_run, trust (trust the workspace first), purpose ("run" |
-- "check"), profile (merged over the config's base), env_files (--env-file paths), name (the run
-- name, over the config's). Returns session | nil, message, kind.
function M.open(o)
  local s = { opts = o, environ = require("moat.c.system").environ() }
  local ok, err, kind = _load(s, o)
  if ok then ok, err, kind = _policy(s) end
  if ok and o.launch then ok, err, kind = _runtime(s, o) end
  if not ok then return nil, err, kind end
  return s
end

-- Returns whether resolving the plan asks any backend (plain values are not asked for).
local function _asks(plan)
  for _, e in ipairs(plan.secrets) do
    if not e.plain then return true end
  end
  return false
end

-- Resolves the plan's secrets with moat.secrets (not even loaded when there are none).
local function _fetch(s)
  if #s.plan.secrets == 0 then return true, { ok = true, values = {}, records = {}, failures = {} } end
  return pcall(require("moat.secrets").resolve, s.plan, { plain = s.plain, jobs = s.opts.jobs,
    timeout = s.opts.timeout, progress = ui.progress })
end

-- Resolves every secret of the session, recording each outcome when audited.
-- Returns res (see moat.secrets.resolve) | nil, message, kind.
function M.resolve(s)
  local log, err, kind
  if s.opts.audit then
    log, err, kind = _log(s)
    if not log then return nil, err, kind end
    -- run.started is durable before any backend is asked: a log that cannot be written stops
    -- the run here (74), not after secrets were fetched. With no backend to ask, it goes in
    -- the launch's durable batch (one fsync less).
    local ok, cerr = true, nil
    if _asks(s.plan) then ok, cerr = _commit(s) end
    if not ok then return _fail(s, { outcome = "failed", kind = "audit", exit = exit.IOERR }, cerr, "audit") end
  end
  -- A stop signal now, or while backends run (they are stopped), ends the run as interrupted.
  local sig = _stopped()
  if sig then return M.interrupted(s, sig) end
  -- Processes that escape a backend's group (setsid) come back to moat when orphaned, so that
  -- moat can end them (moat.secrets does); the supervisor decides the same for the launch.
  local sys = require("moat.c.system")
  sys.subreaper(true)
  local done, res = _fetch(s)
  sys.subreaper(false)
  if not done then
    sig = require("moat.proc").interrupted(res)
    if not sig then error(res, 0) end
    return M.interrupted(s, sig)
  end
  for _, rec in ipairs(log and res.records or {}) do
    local ok, rerr = _audit(log.record, log, rec.record or (rec.ok and "secret.resolved" or "secret.failed"), rec)
    if not ok then return _fail(s, { outcome = "failed", kind = "audit", exit = exit.IOERR }, rerr, "audit") end
  end
  if not res.ok then
    local msg = require("moat.secrets").report(res.failures)
    _fail(s, { outcome = "failed", kind = "secrets", exit = exit.UNAVAILABLE })
    return nil, msg, "secrets", res
  end
  s.values = res.values
  return res
end

-- Returns the launch of a resolved session (or, without values, the argv a dry run shows).
function M.launch_of(s)
  local env
  if s.values then
    env = {}
    for _, e in ipairs(s.plan.env) do env[e.name] = e.value end
    for name, v in pairs(s.values) do env[name] = v end
  end
  return s.runtime.launch(s.spec, env)
end

-- Returns the values to mask in the command's output.
local function _mask_values(s)
  local list = {}
  for _, e in ipairs(s.plan.secrets) do
    local v = s.values[e.name]
    if v and v ~= "" then list[#list + 1] = v end
  end
  return list
end

-- Returns the line a person sees before the launch: runtime, image, network, secrets by backend.
function M.summary(s)
  local rt, p = s.runtime, s.plan
  local by, order = {}, {}
  for _, e in ipairs(p.secrets) do
    if not by[e.backend] then by[e.backend], order[#order + 1] = 0, e.backend end
    by[e.backend] = by[e.backend] + 1
  end
  local parts = {}
  for _, b in ipairs(order) do parts[#parts + 1] = ("%d %s"):format(by[b], b) end
  local text = require("moat.text")
  return ("%s, %s, network %s, %s%s"):format(rt.name,
    rt.uses_image == false and "host filesystem (image ignored)" or ("image " .. text.show(p.image)),
    rt.name == "host" and "host (no isolation)" or p.network, text.count(#p.secrets, "secret"),
    #parts > 0 and (" (" .. table.concat(parts, ", ") .. ")") or "")
end

-- Launches the resolved session and waits for it. hooks: mask_stdout, mask_stderr, on_signal.
-- The launch intent is recorded (durably) before anything is spawned. Returns the supervisor's
-- result (status, code, signal, ms) | nil, message, kind.
function M.run(s, hooks)
  local rt, p = s.runtime, s.plan
  ui.progress("running on " .. M.summary(s))
  -- The output maskers come first: values too large to mask refuse the run before anything.
  local maskers, merr = require("moat.supervise").maskers({ mask = _mask_values(s),
    mask_stdout = hooks.mask_stdout, mask_stderr = hooks.mask_stderr })
  if not maskers then return _fail(s, { outcome = "failed", kind = "mask", exit = exit.CONFIG }, merr, "config") end
  -- A runtime that cannot prepare the launch (say, the image cannot be inspected) runs nothing.
  local launch, lerr = M.launch_of(s)
  if not launch then
    return _fail(s, { outcome = "failed", kind = "launch", exit = exit.UNAVAILABLE }, lerr, "unavailable")
  end
  local ok, err = _audit(s.log.record, s.log, "container.started", { runtime = rt.name,
    image = rt.uses_image ~= false and p.image or nil, container = launch.container })
  if ok then ok, err = _commit(s) end
  if not ok then
    if launch.finish then launch.finish() end
    return _fail(s, { outcome = "failed", kind = "audit", exit = exit.IOERR }, err, "audit")
  end
  -- A stop signal that came after the backends ended still means that nothing runs.
  local sig = _stopped()
  if sig then
    if launch.finish then launch.finish() end
    return M.interrupted(s, sig)
  end
  io.stdout:flush()
  local r, serr, errno = require("moat.supervise").run(launch, {
    mask = _mask_values(s), mask_stdout = hooks.mask_stdout, mask_stderr = hooks.mask_stderr,
    on_signal = hooks.on_signal, grace_ms = _grace(s), reaper = true, maskers = maskers,
  })
  if not r then
    -- Only the host runtime execs the command itself; for it, behave like a shell.
    local status = rt.name == "host" and (errno == 13 and 126 or 127) or exit.UNAVAILABLE
    local msg = ("cannot start %s: %s"):format(rt.name, serr)
    local _, ferr = M.finish(s, { outcome = "failed", kind = "launch", exit = status })
    if ferr then ui.error(ferr) end
    return nil, msg, status
  end
  -- The command has run: a failing audit write is reported but does not replace its status.
  local wrote, werr = _audit(s.log.record, s.log, "container.exited",
    { status = r.status, code = r.code, signal = r.signal, ms = r.ms })
  if wrote then wrote, werr = M.finish(s, { outcome = "exited", exit = r.status, ms = r.ms }) end
  if not wrote then ui.error(werr) end
  return r
end

return M
