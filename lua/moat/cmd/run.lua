-- `moat run [DIR] [options] [-- COMMAND …]`: options -> moat.session -> output and exit status.
local args = require("moat.args")
local cli = require("moat.cli")
local exit = require("moat.exit")
local session = require("moat.session")
local text = require("moat.text")
local ui = require("moat.ui")

local M = {}

M.SPEC = {
  ["--runtime"] = "value", ["--image"] = "value", ["--env"] = "list", ["-e"] = "--env",
  ["--secret"] = "list", ["--mask"] = "flag", ["--no-mask"] = "flag", ["--timeout"] = "value",
  ["--jobs"] = "value", ["--dry-run"] = "flag", ["--interactive"] = "flag", ["-i"] = "--interactive",
  ["--keep"] = "flag", ["--config"] = "value", ["--trust"] = "flag",
  ["--profile"] = "value", ["--env-file"] = "list", ["--name"] = "value",
}

-- One line of help per SPEC option (moat help run, the man page and completion read it).
M.OPTIONS = {
  { "--runtime R", "docker, podman, bwrap or host (default: config, MOAT_RUNTIME, auto)" },
  { "--image I", "container image (wins over the config)" },
  { "-e, --env NAME[=VALUE]", "extra plain environment variable; NAME alone passes the host's NAME (repeatable)" },
  { "--profile P", "merge profile P of the config over its base (default: MOAT_PROFILE)" },
  { "--env-file FILE", "read secrets and values from a dotenv file (repeatable)" },
  { "--name N", "the run's name (wins over the config's name)" },
  { "--secret NAME=REF", "extra secret reference (repeatable)" },
  { "--config FILE", "read FILE instead of DIR/moat.yaml" },
  { "--mask", "mask secret values in the command's output (default: when not a terminal)" },
  { "--no-mask", "never mask the command's output" },
  { "--timeout SECONDS", "per backend call (default 60)" },
  { "--jobs N", "backend processes at once (default 8)" },
  { "--dry-run", "print the plan and the runtime argv; resolve and launch nothing" },
  { "--trust", "trust the workspace's config and .moat/ as they are now, then run" },
  { "-i, --interactive", "attach a TTY" },
  { "--keep", "do not remove the container afterwards" },
}

-- Returns the positive number of seconds in `s` | nil.
function M.seconds(s)
  local n = tonumber(s)
  if not n or n <= 0 or n ~= n or n == math.huge then return nil end
  return n
end

local function _options(ctx, argv)
  local opts, pos, rest = args.parse(argv, M.SPEC)
  local hint = (not opts or #pos > 1 or #pos == 1 and not rest) and args.forgot_dashdash("moat run", argv, M.SPEC)
  if not opts then cli.usage_error(ctx, pos .. (hint and "; " .. hint or "")) end
  if #pos > 1 then cli.usage_error(ctx, "moat run takes one DIR; " .. hint) end
  if hint then cli.usage_error(ctx, text.show(pos[1]) .. " is not a directory; " .. hint) end
  if opts.mask and opts.no_mask then cli.usage_error(ctx, "--mask and --no-mask contradict each other") end
  if opts.timeout then
    opts.timeout = M.seconds(opts.timeout) or cli.usage_error(ctx, "--timeout must be a positive number of seconds")
  end
  if opts.jobs then
    local n = math.tointeger(tonumber(opts.jobs))
    if not n or n < 1 then cli.usage_error(ctx, "--jobs must be a whole number of at least 1") end
    opts.jobs = n
  end
  if opts.image then
    local why = require("moat.config").check_arg(opts.image)
    if why or opts.image == "" or opts.image:find("%s") then
      cli.usage_error(ctx, "--image " .. (why or "must be a non-empty image reference without spaces"))
    end
  end
  if opts.name and not opts.name:match("^[A-Za-z0-9][A-Za-z0-9_.-]*$") then
    cli.usage_error(ctx, "--name must be letters, digits, '.', '_' or '-' (it names the container)")
  end
  if rest and #rest == 0 then cli.usage_error(ctx, "nothing after --: name the command to run") end
  for _, a in ipairs(rest or {}) do
    if a:find("%z") then cli.usage_error(ctx, "command arguments must not contain NUL bytes") end
  end
  return opts, pos[1] or ".", rest
end

local function _dry_run(s)
  local p, rt = s.plan, s.runtime
  local launch = session.launch_of(s)
  local out = {}
  local function put(...) out[#out + 1] = table.concat({ ... }) end
  put("runtime: ", rt.name, " (", s.how, ")")
  if s.cfg.profile then put("profile: ", s.cfg.profile) end
  put("image: ", p.image, rt.uses_image == false and ("  (ignored by " .. rt.name .. ")") or "")
  put("workspace: ", p.workspace, " -> /workspace")
  put("command: ", p.command and text.quote(p.command) or "(the image's default)")
  put("argv: ", text.quote(launch.argv))
  if launch.cwd then put("cwd: ", launch.cwd) end
  for _, e in ipairs(p.env) do put("env: ", e.name) end
  for _, e in ipairs(p.secrets) do
    put("secret: ", e.name, "  ", e.backend, "  ", e.plain and "(plain value)" or text.show(e.ref),
      e.optional and "  (optional)" or e.has_default and "  (default if not found)" or "")
  end
  for _, n in ipairs(launch.notes or {}) do put("note: ", n) end
  for _, n in ipairs(s.notes or {}) do put("note: ", n) end
  put("dry run: nothing was resolved or launched")
  io.stdout:write(table.concat(out, "\n"), "\n")
  return 0
end

-- Returns whether each of moat's stdout and stderr should carry masked output.
function M.masking(opts, sys)
  if opts.no_mask then return false, false end
  if opts.mask then return true, true end
  return not sys.isatty(1), not sys.isatty(2)
end

-- Entry point: returns the exit status.
function M.main(argv, ctx)
  local opts, dir, command = _options(ctx, argv)
  -- From here to the end INT, TERM and HUP are handled: they stop backends or are forwarded.
  local _stops <close> = require("moat.proc").hold_stops() -- luacheck: ignore 211 (held for its <close>)
  local s, err, kind = session.open({
    dir = dir, config = opts.config, secrets = opts.secret, env = opts.env, runtime = opts.runtime,
    image = opts.image, command = command, interactive = opts.interactive, keep = opts.keep,
    jobs = opts.jobs, timeout = opts.timeout, version = ctx.version, launch = true, trust = opts.trust,
    audit = not opts.dry_run, dry_run = opts.dry_run, purpose = "run", name = opts.name, env_files = opts.env_file,
    profile = require("moat.config").chosen_profile(opts.profile, require("moat.c.system").environ()),
  })
  if not s then exit.fail_kind(err, kind) end
  if opts.dry_run then return _dry_run(s) end
  local res
  res, err, kind = session.resolve(s)
  if not res then exit.fail_kind(err, kind) end
  local mask_out, mask_err = M.masking(opts, require("moat.c.system"))
  local r
  r, err, kind = session.run(s, { mask_stdout = mask_out, mask_stderr = mask_err,
    on_signal = function(name, n)
      ui.debug(1, ("caught SIG%s (%d); %s"):format(name, n, n == 1 and "forwarded" or "stopping the command"))
    end })
  if not r then exit.fail_kind(err, kind) end
  return r.status
end

return M
