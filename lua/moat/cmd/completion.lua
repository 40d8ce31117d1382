-- `moat completion bash|zsh|fish`: a completion script made from the same tables as the help
-- (moat.cli's commands, each command's SPEC and OPTIONS), so a new option completes as soon
-- as its command's parser accepts it. `--list runs|profiles` prints what the scripts ask for
-- at completion time: run ids and names, the config's profiles.
local args = require("moat.args")
local cli = require("moat.cli")

local M = {}

M.SPEC = { ["--list"] = "value" }
M.OPTIONS = {
  { "--list WHAT", "print the run ids and names (runs) or the config's profiles (profiles), one a line" },
}

M.SHELLS = { "bash", "zsh", "fish" }

-- What a command's positional words are.
M.POSITIONAL = {
  run = "dir", secrets = "check", config = "dir", backends = "dir", trust = "dir", untrust = "dir",
  audit = "runs", completion = "shells", help = "commands",
}

-- Returns the runtime names --runtime takes.
function M.runtimes()
  local out = {}
  for i, n in ipairs(require("moat.runtime").AUTO) do out[i] = n end
  out[#out + 1] = "host"
  return out
end

-- Returns how the value of option row `o` completes: "choices", list | "runs" | "profiles" |
-- "file" | "free"; nil for a flag.
function M.value(o)
  if o.kind == "flag" then return nil end
  if o.long == "--runtime" then return "choices", M.runtimes() end
  if o.long == "--profile" then return "profiles" end
  if o.long == "--list" then return "choices", { "runs", "profiles" } end
  local arg = o.arg or ""
  if arg:find("FILE") or arg:find("DIR") or arg == "F" then return "file" end
  return "free"
end

-- Returns the commands with their option rows (moat.cmd.help.options), in help order.
function M.model()
  local help = require("moat.cmd.help")
  local out = {}
  for _, c in ipairs(cli.commands) do
    out[#out + 1] = { name = c.name, summary = c.summary, options = help.options(c), positional = M.POSITIONAL[c.name] }
  end
  return out
end

local function _words(list) return table.concat(list, " ") end

-- The option names and value-taking option names of command `c`.
local function _names(c, seen)
  local all, valued = {}, {}
  for _, o in ipairs(c.options) do
    for _, n in ipairs(o.names) do
      all[#all + 1] = n
      if o.kind ~= "flag" and not seen[n] then
        seen[n] = true
        valued[#valued + 1] = n
      end
    end
  end
  return all, valued
end

local BASH = [=[
# bash completion for moat; made by `moat completion bash`.
_moat_list() { moat completion --list "$1" 2>/dev/null; }
_moat() {
  local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]} cmd="" i dd=0 npos=0
  for ((i = 1; i < COMP_CWORD; i++)); do
    local w=${COMP_WORDS[i]}
    if [[ -z $cmd ]]; then
      [[ $w != -* ]] && cmd=$w
    elif [[ $w == -- ]]; then
      dd=$i; break
    elif [[ $w != -* && " @VALUED@ " != *" ${COMP_WORDS[i-1]} "* ]]; then
      npos=$((npos + 1))
    fi
  done
  if [[ -z $cmd ]]; then
    COMPREPLY=($(compgen -W "@COMMANDS@ -h --help -v --verbose --version" -- "$cur")); return
  fi
  if ((dd > 0)); then
    if ((COMP_CWORD == dd + 1)); then COMPREPLY=($(compgen -c -- "$cur")); else COMPREPLY=($(compgen -f -- "$cur")); fi
    return
  fi
  case "$cmd $prev" in
@VALUES@
  esac
  local opts=""
  case $cmd in
@OPTIONS@
  esac
  if [[ $cur == -* ]]; then COMPREPLY=($(compgen -W "$opts" -- "$cur")); return; fi
  case $cmd in
@POSITIONAL@
  esac
}
complete -F _moat -o bashdefault -o default moat
]=]

local BASH_POSITIONAL = {
  dir = [[COMPREPLY=($(compgen -d -- "$cur"))]],
  check = [[((npos == 0)) && COMPREPLY=($(compgen -W "check" -- "$cur")) || COMPREPLY=($(compgen -d -- "$cur"))]],
  runs = [[COMPREPLY=($(compgen -W "$(_moat_list runs)" -- "$cur"))]],
  shells = [[COMPREPLY=($(compgen -W "]] .. _words(M.SHELLS) .. [[" -- "$cur"))]],
}

-- Returns the bash completion script for `model` (M.model()).
function M.bash(model)
  local values, options, positional, valued_all, commands, seen = {}, {}, {}, {}, {}, {}
  for _, c in ipairs(model) do
    commands[#commands + 1] = c.name
    local all, valued = _names(c, seen)
    table.move(valued, 1, #valued, #valued_all + 1, valued_all)
    options[#options + 1] = ("    %s) opts=%q ;;"):format(c.name, _words(all))
    for _, o in ipairs(c.options) do
      local how, choices = M.value(o)
      local action = ({ choices = choices and ("compgen -W %q -- \"$cur\""):format(_words(choices)),
        runs = 'compgen -W "$(_moat_list runs)" -- "$cur"', profiles = 'compgen -W "$(_moat_list profiles)" -- "$cur"',
        file = 'compgen -f -- "$cur"' })[how]
      for _, n in ipairs(how and o.names or {}) do
        values[#values + 1] = ('    "%s %s") %sreturn ;;'):format(c.name, n,
          action and ("COMPREPLY=($(" .. action .. ")); ") or "")
      end
    end
    local p = c.positional == "commands" and ("COMPREPLY=($(compgen -W %q -- \"$cur\"))"):format("@COMMANDS@")
      or BASH_POSITIONAL[c.positional]
    if p then positional[#positional + 1] = ("    %s) %s ;;"):format(c.name, p) end
  end
  local out = BASH:gsub("@(%u+)@", { VALUES = table.concat(values, "\n"), OPTIONS = table.concat(options, "\n"),
    POSITIONAL = table.concat(positional, "\n"), VALUED = _words(valued_all) })
  return (out:gsub("@COMMANDS@", _words(commands)))
end

-- Returns `s` inside single quotes for zsh and fish.
local function _sq(s, fish)
  return "'" .. s:gsub(fish and "[\\']" or "'", fish and "\\%0" or "'\\''") .. "'"
end

local ZSH = [=[
#compdef moat
# zsh completion for moat; made by `moat completion zsh`.
_moat_list() {
  local -a vals
  vals=(${(f)"$(moat completion --list $1 2>/dev/null)"})
  compadd -a vals
}
_moat() {
  local -a commands
  commands=(
@COMMANDS@
  )
  if (( CURRENT == 2 )); then
    _describe -t commands 'moat command' commands
    return
  fi
  local i
  for (( i = 3; i < CURRENT; i++ )); do
    if [[ ${words[i]} == -- ]]; then
      words=("${(@)words[i+1,-1]}")
      (( CURRENT -= i ))
      _normal
      return
    fi
  done
  local cmd=${words[2]}
  words=("${(@)words[2,-1]}")
  (( CURRENT -= 1 ))
  case $cmd in
@CASES@
  esac
}
if [[ $funcstack[1] == _moat ]]; then
  _moat "$@"
else
  compdef _moat moat
fi
]=]

local ZSH_POSITIONAL = {
  dir = { "'1::DIR:_files -/'" },
  check = { "'1:subcommand:(check)'", "'2::DIR:_files -/'" },
  runs = { "'1::RUN:_moat_list runs'" },
  shells = { "'1:shell:(" .. _words(M.SHELLS) .. ")'" },
}

local function _zsh_option(o)
  local desc = o.text:gsub("[%[%]\\]", "\\%0")
  local how, choices = M.value(o)
  local action = ({ choices = choices and ("(" .. _words(choices) .. ")"), runs = "_moat_list runs",
    profiles = "_moat_list profiles", file = "_files", free = " " })[how]
  local value = how and (":" .. (o.arg or "VALUE"):gsub(":", "\\:") .. ":" .. action) or ""
  local names = #o.names > 1 and ("{" .. table.concat(o.names, ",") .. "}") or o.names[1]
  local excl = #o.names > 1 and ("(" .. _words(o.names) .. ")") or ""
  if o.kind == "list" then excl = "*" end
  return (excl ~= "" and ("'" .. excl .. "'") or "") .. names .. _sq("[" .. desc .. "]" .. value)
end

-- Returns the zsh completion script for `model` (M.model()).
function M.zsh(model)
  local commands, cases, names = {}, {}, {}
  for _, c in ipairs(model) do
    names[#names + 1] = c.name
    commands[#commands + 1] = "    " .. _sq(c.name .. ":" .. c.summary)
    local lines = {}
    for _, o in ipairs(c.options) do lines[#lines + 1] = _zsh_option(o) end
    for _, p in ipairs(ZSH_POSITIONAL[c.positional] or {}) do lines[#lines + 1] = p end
    if c.positional == "commands" then lines[#lines + 1] = "'1::command:(@NAMES@)'" end
    cases[#cases + 1] = "    " .. c.name .. ")\n      _arguments \\\n        "
      .. table.concat(lines, " \\\n        ") .. " ;;"
  end
  local out = ZSH:gsub("@(%u+)@", { COMMANDS = table.concat(commands, "\n"), CASES = table.concat(cases, "\n") })
  return (out:gsub("@NAMES@", _words(names)))
end

local FISH = [=[
# fish completion for moat; made by `moat completion fish`.
function __moat_after_dashdash
    contains -- -- (commandline -opc)
end
complete -c moat -f
complete -c moat -n __fish_use_subcommand -s h -l help -d 'print help'
complete -c moat -n __fish_use_subcommand -l version -d "print moat's version"
complete -c moat -n '__fish_seen_subcommand_from run; and __moat_after_dashdash' -F -a '(__fish_complete_command)'
]=]

local FISH_POSITIONAL = {
  dir = "-a '(__fish_complete_directories)'",
  check = "-a 'check (__fish_complete_directories)'",
  runs = "-a '(moat completion --list runs 2>/dev/null)'",
  shells = "-a '" .. _words(M.SHELLS) .. "'",
}

local function _fish_option(c, o)
  local parts = { "complete -c moat -n",
    _sq("__fish_seen_subcommand_from " .. c.name .. "; and not __moat_after_dashdash") }
  for _, n in ipairs(o.names) do
    parts[#parts + 1] = n:match("^%-%-") and ("-l " .. n:sub(3)) or ("-s " .. n:sub(2))
  end
  local how, choices = M.value(o)
  if how == "file" then parts[#parts + 1] = "-r -F"
  elseif how then parts[#parts + 1] = "-x" end
  if how == "choices" then parts[#parts + 1] = "-a " .. _sq(_words(choices), true) end
  if how == "runs" or how == "profiles" then
    parts[#parts + 1] = "-a " .. _sq("(moat completion --list " .. how .. " 2>/dev/null)", true)
  end
  parts[#parts + 1] = "-d " .. _sq(o.text, true)
  return table.concat(parts, " ")
end

-- Returns the fish completion script for `model` (M.model()).
function M.fish(model)
  local out, names = { FISH }, {}
  for _, c in ipairs(model) do names[#names + 1] = c.name end
  for _, c in ipairs(model) do
    out[#out + 1] = ("complete -c moat -n __fish_use_subcommand -a %s -d %s"):format(c.name, _sq(c.summary, true))
    for _, o in ipairs(c.options) do out[#out + 1] = _fish_option(c, o) end
    local p = c.positional == "commands" and ("-a " .. _sq(_words(names), true)) or FISH_POSITIONAL[c.positional]
    if p then
      out[#out + 1] = ("complete -c moat -n %s %s"):format(
        _sq("__fish_seen_subcommand_from " .. c.name .. "; and not __moat_after_dashdash"), p)
    end
  end
  return table.concat(out, "\n") .. "\n"
end

local function _list(what)
  local out = {}
  if what == "runs" then
    local ok, list = pcall(function() return require("moat.auditlog").list() end)
    local seen = {}
    for _, e in ipairs(ok and list or {}) do
      for _, w in ipairs({ e.id, e.name }) do
        if type(w) == "string" and w:match("^[%w_.@+-]+$") and not seen[w] then
          seen[w] = true
          out[#out + 1] = w
        end
      end
    end
  elseif what == "profiles" then
    local ok, cfg = pcall(require("moat.config").load, ".")
    for _, n in ipairs(ok and cfg and cfg.profile_names or {}) do
      if n:match("^[%w_.@+-]+$") then out[#out + 1] = n end
    end
  end
  return out
end

-- Entry point: returns the exit status.
function M.main(argv, ctx)
  local opts, pos = args.parse(argv, M.SPEC)
  if not opts then cli.usage_error(ctx, pos) end
  if opts.list then
    if #pos > 0 or (opts.list ~= "runs" and opts.list ~= "profiles") then
      cli.usage_error(ctx, "--list takes runs or profiles, and no shell")
    end
    for _, w in ipairs(_list(opts.list)) do io.stdout:write(w, "\n") end
    return 0
  end
  local shell = pos[1]
  if #pos ~= 1 or not (shell == "bash" or shell == "zsh" or shell == "fish") then
    local near = shell and #pos == 1 and args.suggest(shell, M.SHELLS)
    cli.usage_error(ctx, "name one shell: bash, zsh or fish" .. (near and ("; did you mean " .. near .. "?") or ""))
  end
  io.stdout:write(M[shell](M.model()))
  return 0
end

return M
