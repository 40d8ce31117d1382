-- `moat run [DIR] [options] [-- COMMAND …]`: config -> plan -> policy -> runtime -> audit ->
-- resolve -> launch -> wait -> exit with the command's status.
local args = require("moat.args")
local cli = require("moat.cli")
local config = require("moat.config")
local exit = require("moat.exit")
local ui = require("moat.ui")

local M = {}

M.SPEC = {
  ["--runtime"] = "value", ["--image"] = "value", ["--env"] = "list", ["-e"] = "--env",
  ["--secret"] = "list", ["--mask"] = "flag", ["--no-mask"] = "flag", ["--timeout"] = "value",
  ["--jobs"] = "value", ["--dry-run"] = "flag", ["--interactive"] = "flag", ["-i"] = "--interactive",
  ["--keep"] = "flag", ["--config"] = "value",
}

-- Returns argv quoted for people (and shells): plain words as is, others in single quotes.
function M.quote(argv)
  local out = {}
  for i, a in ipairs(argv) do
    if a:match("^[%w_./@:+,=%%-]+$") then
      out[i] = a
    else
      out[i] = "'" .. a:gsub("'", "'\\''"):gsub("[%z\1-\31\127]", function(c)
        return ("\\x%02x"):format(c:byte())
      end) .. "'"
    end
  end
  return table.concat(out, " ")
end

local function _options(ctx, argv)
  local opts, pos, rest = args.parse(argv, M.SPEC)
  if not opts then cli.usage_error(ctx, pos) end
  if #pos > 1 then
    cli.usage_error(ctx, ("moat run takes one DIR; put the command after --: moat run %s -- %s")
      :format(pos[1], M.quote(table.move(pos, 2, #pos, 1, {}))))
  end
  if opts.mask and opts.no_mask then cli.usage_error(ctx, "--mask and --no-mask contradict each other") end
  if opts.timeout then
    local n = tonumber(opts.timeout)
    if not n or n <= 0 or n ~= n or n == math.huge then
      cli.usage_error(ctx, "--timeout must be a positive number of seconds")
    end
    opts.timeout = n
  end
  if opts.jobs then
    local n = math.tointeger(tonumber(opts.jobs))
    if not n or n < 1 then cli.usage_error(ctx, "--jobs must be a whole number of at least 1") end
    opts.jobs = n
  end
  if opts.image then
    local why = config.check_arg(opts.image)
    if why or opts.image == "" or opts.image:find("%s") then
      cli.usage_error(ctx, "--image " .. (why or "must be a non-empty image reference without spaces"))
    end
  end
  if rest and #rest == 0 then cli.usage_error(ctx, "nothing after --: name the command to run") end
  for _, a in ipairs(rest or {}) do
    if a:find("%z") then cli.usage_error(ctx, "command arguments must not contain NUL bytes") end
  end
  return opts, pos[1] or ".", rest
end

-- Returns the run's network setting from MOAT_NETWORK ("none" cuts the container off) | nil.
function M.network(environ)
  local v = environ.MOAT_NETWORK
  if v == nil or v == "" then return nil end
  if not v:match("^[%w][%w_.-]*$") then
    exit.fail(exit.USAGE, "MOAT_NETWORK must be a network name such as none or host")
  end
  return v
end

local function _spec(plan, rt, opts, run_id, environ, values)
  local sys = require("moat.c.system")
  local vars = {}
  for _, e in ipairs(plan.env) do vars[#vars + 1] = { name = e.name, value = e.value, plain = true } end
  for _, s in ipairs(plan.secrets) do
    vars[#vars + 1] = { name = s.name, value = values and values[s.name] or nil }
  end
  return {
    run_id = run_id, name = plan.name, workspace = plan.workspace, image = plan.image,
    command = plan.command, interactive = plan.interactive and true or false,
    tty = sys.isatty(0) and sys.isatty(1), keep = opts.keep and true or false,
    network = M.network(environ), vars = vars, mounts = plan.mounts, container = plan.container,
    environ = environ, runtime = rt.name,
  }
end

local function _dry_run(plan, rt, how, launch, spec)
  local out = {}
  local function put(...) out[#out + 1] = table.concat({ ... }) end
  put("runtime: ", rt.name, " (", how, ")")
  put("image: ", plan.image, rt.uses_image == false and ("  (ignored by " .. rt.name .. ")") or "")
  put("workspace: ", plan.workspace, " -> /workspace")
  put("command: ", plan.command and M.quote(plan.command) or "(the image's default)")
  put("argv: ", M.quote(launch.argv))
  if launch.cwd then put("cwd: ", launch.cwd) end
  for _, v in ipairs(spec.vars) do
    if v.plain then put("env: ", v.name) end
  end
  for _, s in ipairs(plan.secrets) do
    put("secret: ", s.name, "  ", s.backend, "  ", s.plain and "(plain value)" or s.ref)
  end
  for _, n in ipairs(launch.notes or {}) do put("note: ", n) end
  put("dry run: nothing was resolved or launched")
  io.stdout:write(table.concat(out, "\n"), "\n")
  return 0
end

local function _policy(plan, audit_start)
  local policy = require("moat.policy")
  local ok, denials = policy.check(plan)
  if ok then return end
  local run = audit_start()
  run:record("policy.denied", { denials = denials })
  run:finish({ outcome = "denied", exit = exit.NOPERM })
  exit.fail(exit.NOPERM, policy.report(denials))
end

-- Returns whether each of moat's stdout and stderr should carry masked output.
function M.masking(opts, sys)
  if opts.no_mask then return false, false end
  if opts.mask then return true, true end
  return not sys.isatty(1), not sys.isatty(2)
end

-- Entry point: returns the exit status.
function M.main(argv, ctx)
  local sys = require("moat.c.system")
  local opts, dir, command = _options(ctx, argv)
  local cfg = config.load(dir, opts.config)
  require("moat.trust").activate(cfg.dir)
  local plan = require("moat.plan").build(cfg, { secrets = opts.secret, env = opts.env })
  for _, w in ipairs(plan.warnings or {}) do ui.warn(w) end
  if command then plan.command = command end
  if opts.interactive then plan.interactive = true end
  if opts.image then
    plan.image = opts.image
  elseif not plan.image then
    local img, warns = require("moat.images").pick(cfg.dependencies)
    plan.image = img
    for _, w in ipairs(warns) do ui.warn(w) end
  end

  local environ = sys.environ()
  -- Policy scripts see the runtime that was asked for (auto-detection comes after them).
  plan.runtime = opts.runtime or plan.runtime or (environ.MOAT_RUNTIME ~= "" and environ.MOAT_RUNTIME) or nil
  local auditlog = require("moat.auditlog")
  local run
  local rt, how
  local function audit_start()
    if run then return run end
    local ok, r = pcall(auditlog.start, {
      name = plan.name, workspace = plan.workspace, runtime = rt and rt.name or plan.runtime,
      image = plan.image, command = plan.command, version = ctx.version,
    })
    if not ok then
      if exit.is_failure(r) then error(r, 0) end
      exit.fail(exit.IOERR, "audit log: " .. tostring(r))
    end
    run = r
    return run
  end

  _policy(plan, audit_start)

  local reasons
  rt, how, reasons = require("moat.runtime").choose({
    requested = opts.runtime, config = cfg.runtime, env = environ.MOAT_RUNTIME, image = plan.image,
  })
  for _, r in ipairs(reasons or {}) do ui.debug(1, ("runtime %s skipped: %s"):format(r.name, r.reason)) end
  ui.debug(1, ("runtime %s (%s)"):format(rt.name, how))

  if opts.dry_run then
    local id = auditlog.new_id()
    local spec = _spec(plan, rt, opts, id, environ, nil)
    return _dry_run(plan, rt, how, rt.prepare(spec), spec)
  end

  -- Refuse a bad image, mount or workspace path before any backend is asked for a value.
  rt.prepare(_spec(plan, rt, opts, auditlog.new_id(), environ, nil))
  run = audit_start()
  local secrets = require("moat.secrets")
  local res = secrets.resolve(plan, { jobs = opts.jobs, timeout = opts.timeout, progress = ui.progress })
  for _, rec in ipairs(res.records) do
    run:record(rec.ok and "secret.resolved" or "secret.failed", rec)
  end
  if not res.ok then
    run:finish({ outcome = "failed", kind = "secrets", exit = exit.UNAVAILABLE })
    exit.fail(exit.UNAVAILABLE, secrets.report(res.failures))
  end

  local spec = _spec(plan, rt, opts, run.id, environ, res.values)
  local launch = rt.prepare(spec)
  if launch.not_found then
    ui.error(launch.not_found)
    run:finish({ outcome = "failed", kind = "not_found", exit = 127 })
    return 127
  end

  local values = {}
  for _, s in ipairs(plan.secrets) do
    local v = res.values[s.name]
    if v and v ~= "" then values[#values + 1] = v end
  end
  local mask_out, mask_err = M.masking(opts, sys)
  io.stdout:flush()
  local r, err, errno = require("moat.run").foreground(launch, {
    mask = values, mask_stdout = mask_out, mask_stderr = mask_err,
    on_start = function()
      run:record("container.started", { runtime = rt.name, image = rt.uses_image ~= false and plan.image or nil,
        container = launch.container })
    end,
    on_signal = function(name, n)
      ui.debug(1, ("caught SIG%s (%d); %s"):format(name, n, n == 1 and "forwarded" or "stopping the command"))
    end,
  })
  if not r then
    -- Only the host runtime execs the command itself; for it, behave like a shell.
    local status = rt.name == "host" and (errno == 13 and 126 or 127) or exit.UNAVAILABLE
    run:finish({ outcome = "failed", kind = "launch", exit = status })
    exit.fail(status, ("cannot start %s: %s"):format(rt.name, err))
  end
  -- The command has run: a failing audit write is reported but does not replace its status.
  local ok, e = pcall(function()
    run:record("container.exited", { status = r.status, code = r.code, signal = r.signal, ms = r.ms })
    run:finish({ outcome = "exited", exit = r.status, ms = r.ms })
  end)
  if not ok then ui.error(exit.is_failure(e) and e.message or tostring(e)) end
  return r.status
end

return M
