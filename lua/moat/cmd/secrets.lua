-- `moat secrets check [DIR] [--resolve] [--json]`: validate the secrets of a config, ask each
-- backend in use whether it is usable, and with --resolve fetch everything (never printing a value).
local args = require("moat.args")
local cli = require("moat.cli")
local exit = require("moat.exit")
local session = require("moat.session")
local text = require("moat.text")
local ui = require("moat.ui")

local M = {}

local SPEC = {
  ["--resolve"] = "flag", ["--trust"] = "flag",
  ["--json"] = "flag", ["--config"] = "value", ["--timeout"] = "value",
  ["--jobs"] = "value", ["--secret"] = "list", ["--profile"] = "value", ["--env-file"] = "list",
}
M.SPEC = SPEC

-- One line of help per SPEC option (moat help secrets, the man page and completion read it).
M.OPTIONS = {
  { "--resolve", "fetch every secret and report ok or failed per name (never a value)" },
  { "--json", "print JSON" },
  { "--config FILE", "read FILE instead of DIR/moat.yaml" },
  { "--secret NAME=REF", "extra secret reference (repeatable)" },
  { "--profile P", "merge profile P of the config over its base (default: MOAT_PROFILE)" },
  { "--env-file FILE", "read secrets and values from a dotenv file (repeatable)" },
  { "--timeout SECONDS", "per backend call (default 60)" },
  { "--jobs N", "backend processes at once (default 8)" },
  { "--trust", "trust the workspace's config and .moat/ as they are now, then check" },
}

-- Returns the numeric options { timeout = seconds, jobs = n } or raises a usage error.
function M.limits(ctx, opts)
  local out = {}
  if opts.timeout then
    local t = tonumber(opts.timeout)
    if not t or t <= 0 or t ~= t or t > 86400 then
      cli.usage_error(ctx, "--timeout must be a number of seconds greater than 0")
    end
    out.timeout = t
  end
  if opts.jobs then
    local j = math.tointeger(tonumber(opts.jobs))
    if not j or j < 1 or j > 1024 then cli.usage_error(ctx, "--jobs must be a whole number from 1 to 1024") end
    out.jobs = j
  end
  return out
end

local function _json(list)
  local json = require("moat.c.json")
  io.stdout:write(assert(json.encode(json.array(list), { pretty = true })), "\n")
end

-- Returns a format for rows of status, name, backend and a last column, padded to the widest
-- of each in `list` (records or plan secrets), `status(x)` giving a row's status.
local function _row_format(list, status, last)
  local w = { 6, 0, 0 }
  for _, x in ipairs(list) do
    w[1], w[2], w[3] = math.max(w[1], #status(x)), math.max(w[2], #x.name), math.max(w[3], #x.backend)
  end
  return ("%%-%ds  %%-%ds  %%-%ds  %s\n"):format(w[1], w[2], w[3], last)
end

local function _validate(plan, plain, limits, as_json)
  local checks = require("moat.secrets").check(plan, { jobs = limits.jobs, timeout = limits.timeout, plain = plain })
  local usable = {}
  local bad = 0
  for _, c in ipairs(checks) do
    usable[c.backend] = c
    if not c.ok then bad = bad + 1 end
  end
  if as_json then
    local json = require("moat.c.json")
    local list = {}
    for _, s in ipairs(plan.secrets) do
      local c = usable[s.backend]
      list[#list + 1] = { name = s.name, ref = s.ref, backend = s.backend, plain = s.plain,
        usable = c.ok, reason = c.reason or json.null, fix = c.fix or json.null }
    end
    _json(list)
  else
    local function status(s) return usable[s.backend].ok and "valid" or "failed" end
    local fmt = _row_format(plan.secrets, status, "%s")
    for _, s in ipairs(plan.secrets) do
      io.stdout:write(fmt:format(status(s), s.name, s.backend, text.show(s.ref)))
    end
    for _, c in ipairs(checks) do
      if not c.ok then
        io.stdout:write(("backend %s is not usable: %s\n"):format(c.backend, c.reason))
        if c.fix then io.stdout:write("  fix: ", c.fix, "\n") end
      end
    end
  end
  if bad > 0 then
    ui.error(("%d backend%s not usable"):format(bad, bad == 1 and " is" or "s are"))
    return exit.UNAVAILABLE
  end
  return 0
end

local function _resolve(res, as_json)
  if as_json then
    local json = require("moat.c.json")
    local list = {}
    for _, r in ipairs(res.records) do
      list[#list + 1] = { name = r.name, ref = r.ref, backend = r.backend, ok = r.ok, ms = r.ms,
        outcome = r.outcome or (r.ok and "ok" or "failed"),
        kind = r.kind or json.null, reason = r.reason or json.null, fix = r.fix or json.null }
    end
    _json(list)
  else
    local SHOWN = { skipped = "skipped", defaulted = "default" }
    local function status(r) return SHOWN[r.outcome] or (r.ok and "ok" or "failed") end
    local fmt = _row_format(res.records, status, "%d ms")
    for _, r in ipairs(res.records) do
      io.stdout:write(fmt:format(status(r), r.name, r.backend, r.ms))
      if r.outcome then
        io.stdout:write(("        %s: %s [%s]\n"):format(text.show(r.ref), r.reason, r.kind))
      elseif not r.ok then
        io.stdout:write(("        %s: %s [%s]\n"):format(text.show(r.ref), r.reason, r.kind))
        if r.fix then io.stdout:write("        fix: ", r.fix, "\n") end
      end
    end
  end
  -- res.values goes out of scope here: nothing prints or keeps it.
  if not res.ok then
    ui.error(("%d of %s could not be resolved"):format(#res.failures, text.count(#res.records, "secret")))
    return exit.UNAVAILABLE
  end
  return 0
end

-- Entry point: returns the exit status.
function M.main(argv, ctx)
  if argv[1] ~= "check" then
    cli.usage_error(ctx, argv[1] and ("unknown subcommand '" .. text.show(argv[1]) .. "'; did you mean check?")
      or "missing subcommand 'check'")
  end
  local opts, pos, rest = args.parse(table.move(argv, 2, #argv, 1, {}), SPEC)
  if not opts then cli.usage_error(ctx, pos) end
  if rest or #pos > 1 then cli.usage_error(ctx, "moat secrets check takes at most one DIR") end
  local limits = M.limits(ctx, opts)
  local s, err, kind = session.open({ dir = pos[1] or ".", config = opts.config, secrets = opts.secret,
    jobs = limits.jobs, timeout = limits.timeout, version = ctx.version, audit = opts.resolve,
    trust = opts.trust, env_files = opts.env_file,
    profile = require("moat.config").chosen_profile(opts.profile, require("moat.c.system").environ()),
    purpose = "check" })
  if not s then exit.fail_kind(err, kind) end
  if not opts.resolve then return _validate(s.plan, s.plain, limits, opts.json) end
  -- INT, TERM or HUP while fetching stops every backend and ends the audited run as interrupted.
  local _stops <close> = require("moat.proc").hold_stops() -- luacheck: ignore 211 (held for its <close>)
  local res, rerr, rkind, failed = session.resolve(s)
  if not res and not failed then exit.fail_kind(rerr, rkind) end
  local fok, ferr = session.finish(s, { outcome = res and "checked" or "failed", exit = res and 0 or exit.UNAVAILABLE })
  if not fok then exit.fail_kind(ferr, "audit") end
  return _resolve(res or failed, opts.json)
end

return M
