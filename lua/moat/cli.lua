-- The command line: dispatches `moat <command>` to the module moat.cmd.<command>.
local exit = require("moat.exit")
local ui = require("moat.ui")

local M = {}

M.commands = {
  { name = "run", summary = "resolve secrets and run the command in a container",
    usage = [=[
moat run [DIR] [--runtime R] [--image I] [-e NAME=VALUE] [--secret NAME=REF]
         [--mask|--no-mask] [--timeout SECONDS] [--jobs N] [--dry-run] [-i] [--keep]
         [--config FILE] [-v] [-- COMMAND [ARG...]]

Loads DIR/moat.yaml (else DIR/agent.yaml; DIR defaults to .), resolves every secret on the
host, launches the container with the values in its environment only, and exits with the
command's status.
  --runtime R        docker, podman, bwrap or host (default: config, MOAT_RUNTIME, auto)
  --image I          container image (wins over the config)
  -e NAME=VALUE      extra plain environment variable (repeatable)
  --secret NAME=REF  extra secret reference (repeatable)
  --mask / --no-mask mask secret values in the command's output (default: on when not a terminal)
  --timeout SECONDS  per backend call (default 60)
  --jobs N           backend processes at once (default 8)
  --dry-run          print the plan and the runtime argv; resolve and launch nothing
  -i, --interactive  attach a TTY
  --keep             do not remove the container afterwards]=] },
  { name = "secrets", summary = "validate (and with --resolve, fetch) the secrets of a config",
    usage = [=[
moat secrets check [DIR] [--resolve] [--json] [--config FILE] [--timeout SECONDS] [--jobs N]

Validates the config and every reference and asks each backend in use whether it is usable.
With --resolve, fetches every secret and reports ok or failed per name (never a value).
Exit 0 when all is well, 69 when a secret failed, 78 for an invalid config.]=] },
  { name = "config", summary = "print the loaded, normalized config",
    usage = [=[
moat config [DIR] [--json] [--config FILE]

Prints the config moat would use for DIR (secret references are shown; they are not values).
An invalid config prints every problem with file:line:col and exits 78.]=] },
  { name = "audit", summary = "show or verify the audit log of a run",
    usage = [=[
moat audit [RUN | --last] [--verify] [--json]]=] },
  { name = "runs", summary = "list recorded runs", usage = "moat runs [--json]" },
  { name = "backends", summary = "list secret backends and where each comes from",
    usage = "moat backends [DIR] [--json]" },
  { name = "trust", summary = "trust the Lua files under DIR/.moat/", usage = "moat trust [DIR]" },
  { name = "untrust", summary = "forget the trust recorded for DIR", usage = "moat untrust [DIR]" },
  { name = "version", summary = "print moat's version", usage = "moat version" },
  { name = "help", summary = "show help for moat or one command", usage = "moat help [COMMAND]" },
}

local by_name = {}
for _, c in ipairs(M.commands) do by_name[c.name] = c end

-- Returns the general usage text.
function M.usage()
  local lines = { "usage: moat <command> [options]", "", "commands:" }
  for _, c in ipairs(M.commands) do
    lines[#lines + 1] = ("  %-10s %s"):format(c.name, c.summary)
  end
  lines[#lines + 1] = ""
  lines[#lines + 1] = "Run 'moat help COMMAND' for a command's options."
  return table.concat(lines, "\n")
end

local function _help(args)
  local name = args[1]
  if not name then
    io.stdout:write(M.usage(), "\n")
    return 0
  end
  local c = by_name[name]
  if not c then
    exit.fail(exit.USAGE, "no such command '" .. name .. "'\n" .. M.usage())
  end
  io.stdout:write("usage: ", c.usage, "\n")
  return 0
end

local function _dispatch(argv, ctx)
  local name = argv[1]
  if name == nil or name == "-h" or name == "--help" then
    io.stderr:write(M.usage(), "\n")
    return name and 0 or exit.USAGE
  end
  if name == "--version" then name = "version" end
  local c = by_name[name]
  if not c then
    exit.fail(exit.USAGE, "unknown command '" .. name .. "'\n" .. M.usage())
  end
  local rest = table.move(argv, 2, #argv, 1, {})
  for _, a in ipairs(rest) do
    if a == "--" then break end
    if a == "-h" or a == "--help" then return _help({ name }) end
  end
  -- -v may appear anywhere before "--"; it is global.
  local filtered, seen_dd = {}, false
  for _, a in ipairs(rest) do
    if not seen_dd and (a == "-v" or a == "--verbose") then
      ui.verbose = ui.verbose + 1
    else
      if a == "--" then seen_dd = true end
      filtered[#filtered + 1] = a
    end
  end
  if name == "help" then return _help(filtered) end
  if name == "version" then
    io.stdout:write("moat ", ctx.version, "\n")
    return 0
  end
  local mod = require("moat.cmd." .. name)
  ctx.command = c
  return mod.main(filtered, ctx)
end

-- Raises a usage failure for command `c` with `msg`.
function M.usage_error(ctx, msg)
  exit.fail(exit.USAGE, msg .. "\nusage: " .. ctx.command.usage:match("^[^\n]*"))
end

-- Runs moat with `argv` (array of strings); returns the process exit status.
function M.main(argv, ctx)
  ctx = ctx or {}
  ctx.version = ctx.version or "dev"
  local status
  local ok, err = xpcall(_dispatch, function(e)
    if exit.is_failure(e) then return e end
    return debug.traceback(tostring(e), 2)
  end, argv, ctx)
  if ok then
    status = err or 0
  elseif exit.is_failure(err) then
    ui.error(err.message)
    status = err.code
  else
    ui.error("internal error (a bug in moat; please report it):\n" .. tostring(err))
    status = exit.SOFTWARE
  end
  io.stdout:flush()
  return status
end

return M
