-- The command line: dispatches `moat <command>` to the module moat.cmd.<command>. Each
-- command's help is made by moat.cmd.help from the entry below (synopsis, about, examples)
-- and the command module's SPEC (the options its parser accepts) and OPTIONS (one line each).
local exit = require("moat.exit")
local text = require("moat.text")
local ui = require("moat.ui")

local M = {}

-- Options every command takes; the dispatcher handles them before the command runs.
M.GLOBAL_SPEC = { ["--verbose"] = "flag", ["-v"] = "--verbose", ["--help"] = "flag", ["-h"] = "--help" }
M.GLOBAL_OPTIONS = {
  { "-v, --verbose", "progress on stderr even when it is not a terminal; twice adds debug lines" },
  { "-h, --help", "print this help on stdout and exit 0" },
}

M.commands = {
  { name = "run", summary = "resolve secrets and run the command in a container",
    synopsis = { "moat run [DIR] [options] [-- COMMAND [ARG...]]" },
    about = [[
Loads DIR/moat.yaml (else DIR/agent.yaml; DIR defaults to .), resolves every secret on the
host, launches the container with the values in its environment only, and exits with the
command's status. Options and DIR may come in any order; everything after -- is the command.]],
    examples = { "moat run -- make test", "moat run --runtime host --dry-run ./app -- env" } },
  { name = "secrets", summary = "validate (and with --resolve, fetch) the secrets of a config",
    synopsis = { "moat secrets check [DIR] [options]" },
    about = [[
Validates the config and every reference and asks each backend in use whether it is usable.
With --resolve, fetches every secret and reports ok or failed per name (never a value).
Exit 0 when all is well, 69 when a secret failed, 78 for an invalid config.]],
    examples = { "moat secrets check", "moat secrets check ./app --resolve --json" } },
  { name = "config", summary = "print the loaded, normalized config",
    synopsis = { "moat config [DIR] [--json] [--config FILE]" },
    about = [[
Prints the config moat would use for DIR (secret references are shown; they are not values).
An invalid config prints every problem with file:line:col and exits 78.]],
    examples = { "moat config", "moat config ./app --json" } },
  { name = "audit", summary = "show, verify or export the audit log of a run",
    synopsis = {
      "moat audit [RUN | NAME | --last] [--json]",
      "moat audit [RUN | NAME | --last] --verify [--key FINGERPRINT|FILE]",
      "moat audit --verify --all [--key FINGERPRINT|FILE]",
      "moat audit --verify BUNDLE [--key FINGERPRINT|FILE]",
      "moat audit [RUN | NAME | --last] --export FILE",
    },
    about = [[
Shows the records of a run (the newest when no RUN is given), verifies its hash chain and
signature and the cross-run chain in runs.jsonl, or exports a portable bundle and checks one.
RUN is a run id or a unique prefix of one; NAME is a run's name. --verify exits 1 when a run
is unfinished or invalid.]],
    examples = { "moat audit --last", "moat audit --verify --all" } },
  { name = "runs", summary = "list recorded runs",
    synopsis = { "moat runs [--name NAME] [--json]" },
    about = "Lists the recorded runs, newest first, with their status and whether each verifies.",
    examples = { "moat runs", "moat runs --name nightly --json" } },
  { name = "backends", summary = "list secret backends and where each comes from",
    synopsis = { "moat backends [DIR] [--json]" },
    about = [[
Lists every secret backend moat can use (built-in, MOAT_LUA_PATH, the user's and the site's
directories, a trusted workspace), the file each comes from and whether it is usable.]],
    examples = { "moat backends", "moat backends ./app --json" } },
  { name = "trust", summary = "trust DIR's config and the Lua under DIR/.moat/",
    synopsis = { "moat trust [DIR] [--config FILE]" },
    about = [[
Records what the workspace may do: the SHA-256 of every file under DIR/.moat/ (backends,
modules, policy.lua) and of each guarded item of its config (secrets, env files, runtime,
mounts, network, profiles). moat run and secrets check --resolve refuse (exit 77) once any of
it changes, until it is trusted again.]],
    examples = { "moat trust", "moat trust ./app --config ./app/ci.yaml" } },
  { name = "untrust", summary = "forget the trust recorded for DIR",
    synopsis = { "moat untrust [DIR]" },
    about = "Forgets the trust recorded for DIR; its .moat/ Lua no longer loads and its config needs trust again.",
    examples = { "moat untrust", "moat untrust ./app" } },
  { name = "completion", summary = "print a shell completion script",
    synopsis = { "moat completion bash|zsh|fish" },
    about = "Prints the completion script for the shell; load it from the shell's startup file.",
    examples = { "source <(moat completion bash)", "moat completion fish > ~/.config/fish/completions/moat.fish" } },
  { name = "version", summary = "print moat's version", synopsis = { "moat version" },
    about = "Prints moat's version.", examples = { "moat version", "moat --version" }, spec = {} },
  { name = "help", summary = "show help for moat or one command",
    synopsis = { "moat help [COMMAND]", "moat help --man" },
    about = "Prints the help of COMMAND (the same as moat COMMAND --help), or of moat itself.",
    examples = { "moat help run", "moat help --man > moat.1" } },
}

M.by_name = {}
for _, c in ipairs(M.commands) do M.by_name[c.name] = c end

-- Returns the command names, in help order.
function M.names()
  local out = {}
  for i, c in ipairs(M.commands) do out[i] = c.name end
  return out
end

-- Returns the general usage text.
function M.usage()
  local lines = { "usage: moat <command> [options]", "", "commands:" }
  for _, c in ipairs(M.commands) do
    lines[#lines + 1] = ("  %-10s  %s"):format(c.name, c.summary)
  end
  lines[#lines + 1] = ""
  lines[#lines + 1] = "Run 'moat help COMMAND' (or moat COMMAND --help) for a command's options."
  return table.concat(lines, "\n")
end

-- Raises a usage failure for an unknown command `name`, suggesting a close one.
function M.unknown_command(name)
  local near = require("moat.args").suggest(name, M.names())
  exit.fail(exit.USAGE, ("unknown command '%s'%s\n%s"):format(text.show(name),
    near and ("; did you mean " .. near .. "?") or "", M.usage()))
end

-- Returns argv without the global -v/--verbose before "--" (counted into ui.verbose) and
-- whether -h/--help came before "--".
local function _globals(rest)
  local filtered, seen_dd, help = {}, false, false
  for _, a in ipairs(rest) do
    if not seen_dd and (a == "-v" or a == "--verbose") then
      ui.verbose = ui.verbose + 1
    elseif not seen_dd and (a == "-h" or a == "--help") then
      help = true
    else
      if a == "--" then seen_dd = true end
      filtered[#filtered + 1] = a
    end
  end
  return filtered, help
end

local function _dispatch(argv, ctx)
  local name = argv[1]
  if name == nil then
    io.stderr:write(M.usage(), "\n")
    return exit.USAGE
  end
  if name == "-h" or name == "--help" then name = "help" end
  if name == "--version" then name = "version" end
  local c = M.by_name[name] or M.unknown_command(name)
  local filtered, help = _globals(table.move(argv, 2, #argv, 1, {}))
  ctx.command = c
  if help then return require("moat.cmd.help").show(name) end
  if name == "version" then
    if #filtered > 0 then M.usage_error(ctx, "moat version takes no arguments") end
    io.stdout:write("moat ", ctx.version, "\n")
    return 0
  end
  return require("moat.cmd." .. name).main(filtered, ctx)
end

-- Parses `argv` of a command taking the options of `spec` and at most one DIR (default ".");
-- returns opts and DIR's real path, or raises the usage error.
function M.one_dir(ctx, argv, spec)
  local opts, pos, rest = require("moat.args").parse(argv, spec)
  if not opts then M.usage_error(ctx, pos) end
  if rest or #pos > 1 then M.usage_error(ctx, ("moat %s takes at most one DIR"):format(ctx.command.name)) end
  local real, err = require("moat.trust").realpath(pos[1] or ".")
  if not real then exit.fail(exit.USAGE, err) end
  return opts, real
end

-- Raises a usage failure for the current command with `msg`.
function M.usage_error(ctx, msg)
  local c = ctx.command
  exit.fail(exit.USAGE, ("%s\nusage: %s\nRun 'moat help %s' for every option."):format(msg, c.synopsis[1], c.name))
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
