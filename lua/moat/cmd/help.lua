-- `moat help [COMMAND]`, `moat help --man`: help made from moat.cli's command entries and
-- each command module's SPEC (the options its parser accepts) and OPTIONS (one line each:
-- { "-e, --env NAME[=VALUE]", "what it does" }). An option in SPEC without a line still
-- shows, so nothing the parser accepts is ever left out.
local args = require("moat.args")
local cli = require("moat.cli")
local exit = require("moat.exit")
local text = require("moat.text")

local M = {}

M.SPEC = { ["--man"] = "flag" }
M.OPTIONS = {
  { "--man", "print the manual page (roff, for man -l) instead" },
}

M.UNDESCRIBED = "(not described yet)"

M.EXIT = {
  { "0-255", "the command's own status: moat run reached the command" },
  { tostring(exit.USAGE), "usage error" },
  { tostring(exit.UNAVAILABLE), "a secret could not be resolved, or no runtime is usable" },
  { tostring(exit.SOFTWARE), "internal error (a bug in moat)" },
  { tostring(exit.IOERR), "the audit log could not be written" },
  { tostring(exit.NOPERM), "a policy denied the run, the workspace (its .moat/ or its config's guarded part)"
    .. " is not trusted, or the workspace is where moat keeps its state" },
  { tostring(exit.CONFIG), "invalid config (file:line:col in the message)" },
}

M.ENVIRONMENT = {
  { "MOAT_RUNTIME", "the runtime when neither --runtime nor the config names one" },
  { "MOAT_HOME", "audit logs, keys and trust records (default ~/.moat; must be absolute)" },
  { "MOAT_PROFILE", "the profile when --profile is not given" },
  { "MOAT_NETWORK", "the network (private, none, host) when the config names none" },
  { "MOAT_GRACE_MS", "how long the command has to stop after a forwarded TERM or HUP (default 10000)" },
  { "MOAT_LUA_PATH", "directories (colon-separated) searched for Lua modules before the user's" },
  { "XDG_CONFIG_HOME", "the user's Lua modules live in $XDG_CONFIG_HOME/moat/lua (default ~/.config)" },
  { "MOAT_SITE_DIR", "the site's directory: policy.lua and lua/ (default /etc/moat)" },
  { "NO_COLOR", "when set and not empty, messages are not coloured" },
}

-- Returns the command module's SPEC and OPTIONS for command entry `c` (empty when it has none).
function M.tables(c)
  if c.spec then return c.spec, {} end
  local mod = require("moat.cmd." .. c.name)
  if type(mod) ~= "table" then return {}, {} end
  return type(mod.SPEC) == "table" and mod.SPEC or {}, type(mod.OPTIONS) == "table" and mod.OPTIONS or {}
end

-- Returns the option names and the argument name of a help line's left side ("-e, --env NAME").
function M.split_left(left)
  local names, arg = {}, nil
  for word in left:gmatch("[^%s,]+") do
    if word:sub(1, 1) == "-" then names[#names + 1] = word else arg = arg and (arg .. " " .. word) or word end
  end
  return names, arg
end

-- Returns the options of command entry `c`: { {left, text, names = {...}, long, kind, arg} },
-- described ones in OPTIONS order, then any SPEC option without a line, then the global ones.
function M.options(c)
  local spec, described = M.tables(c)
  local rows, seen = {}, {}
  for _, o in ipairs(described) do
    local names, arg = M.split_left(o[1])
    local long = names[#names]
    if spec[long] then
      rows[#rows + 1] = { left = o[1], text = o[2], names = names, long = long, kind = spec[long], arg = arg }
      for _, n in ipairs(names) do seen[n] = true end
    end
  end
  for _, n in ipairs(args.names(spec)) do
    local kind = spec[n]
    if not seen[n] and not (type(kind) == "string" and kind:sub(1, 2) == "--") then
      local arg = kind ~= "flag" and "VALUE" or nil
      rows[#rows + 1] = { left = n .. (arg and " " .. arg or ""), text = M.UNDESCRIBED, names = { n },
        long = n, kind = kind, arg = arg }
    end
  end
  for _, o in ipairs(cli.GLOBAL_OPTIONS) do
    local names = M.split_left(o[1])
    rows[#rows + 1] = { left = o[1], text = o[2], names = names, long = names[#names], kind = "flag", global = true }
  end
  return rows
end

local function _columns(pairs_, indent)
  local width = 0
  for _, p in ipairs(pairs_) do width = math.max(width, #p[1]) end
  width = math.min(width, 24)
  local out = {}
  for _, p in ipairs(pairs_) do
    if #p[1] > width then
      out[#out + 1] = indent .. p[1]
      out[#out + 1] = indent .. (" "):rep(width + 2) .. p[2]
    else
      out[#out + 1] = indent .. p[1] .. (" "):rep(width + 2 - #p[1]) .. p[2]
    end
  end
  return out
end

-- Returns the full help text of command entry `c`.
function M.text(c)
  local lines = {}
  for i, s in ipairs(c.synopsis) do lines[#lines + 1] = (i == 1 and "usage: " or "   or: ") .. s end
  lines[#lines + 1] = ""
  lines[#lines + 1] = c.about
  lines[#lines + 1] = ""
  lines[#lines + 1] = "options:"
  local pairs_ = {}
  for _, o in ipairs(M.options(c)) do pairs_[#pairs_ + 1] = { o.left, o.text } end
  for _, l in ipairs(_columns(pairs_, "  ")) do lines[#lines + 1] = l end
  lines[#lines + 1] = ""
  lines[#lines + 1] = "examples:"
  for _, e in ipairs(c.examples) do lines[#lines + 1] = "  " .. e end
  return table.concat(lines, "\n") .. "\n"
end

-- Returns `s` safe in roff text: backslashes and hyphens escaped, no line starting a request.
local function _roff(s)
  s = text.escape(s, true):gsub("\\", "\\e"):gsub("%-", "\\-")
  return (s:gsub("^([.'])", "\\&%1"):gsub("\n([.'])", "\n\\&%1"))
end

local function _man_option(out, o)
  local names = {}
  for i, n in ipairs(o.names) do names[i] = "\\fB" .. _roff(n) .. "\\fR" end
  out[#out + 1] = ".TP"
  out[#out + 1] = table.concat(names, ", ") .. (o.arg and (" \\fI" .. _roff(o.arg) .. "\\fR") or "")
  out[#out + 1] = _roff(o.text)
end

local function _man_command(out, c)
  out[#out + 1] = ".SS " .. _roff(c.name)
  out[#out + 1] = ".nf"
  for _, s in ipairs(c.synopsis) do out[#out + 1] = _roff(s) end
  out[#out + 1] = ".fi"
  out[#out + 1] = ".PP"
  out[#out + 1] = _roff(c.about)
  for _, o in ipairs(M.options(c)) do
    if not o.global then _man_option(out, o) end
  end
  out[#out + 1] = ".PP"
  out[#out + 1] = "Examples:"
  out[#out + 1] = ".RS"
  out[#out + 1] = ".nf"
  for _, e in ipairs(c.examples) do out[#out + 1] = _roff(e) end
  out[#out + 1] = ".fi"
  out[#out + 1] = ".RE"
end

local function _man_table(out, title, rows)
  out[#out + 1] = ".SH " .. title
  for _, r in ipairs(rows) do
    out[#out + 1] = ".TP"
    out[#out + 1] = "\\fB" .. _roff(r[1]) .. "\\fR"
    out[#out + 1] = _roff(r[2])
  end
end

-- Returns moat's manual page (roff): every command's synopsis, about, options and examples.
function M.man()
  local out = { '.TH MOAT 1 "" "moat" "User Commands"', ".SH NAME",
    "moat \\- run a command in a container with secrets resolved on the host",
    ".SH SYNOPSIS", ".B moat", ".I command", "[\\fIoptions\\fR] [\\fB\\-\\-\\fR \\fICOMMAND\\fR [\\fIARG\\fR...]]",
    ".SH DESCRIPTION", _roff([[
moat resolves the secrets a project's moat.yaml names on the host, through backends such as
environment variables, 1Password (op), AWS SSM and Secrets Manager, and runs a command in a
container (docker, podman, bwrap, or the host itself) with the values in its environment only.
Every run is recorded in a signed, tamper-evident audit log.]]), ".SH COMMANDS" }
  for _, c in ipairs(cli.commands) do _man_command(out, c) end
  out[#out + 1] = ".SH \"COMMON OPTIONS\""
  for _, o in ipairs(M.options(cli.by_name.version)) do _man_option(out, o) end
  _man_table(out, "\"EXIT STATUS\"", M.EXIT)
  _man_table(out, "ENVIRONMENT", M.ENVIRONMENT)
  out[#out + 1] = ".SH \"SEE ALSO\""
  out[#out + 1] = "docker(1), podman(1), bwrap(1)"
  return table.concat(out, "\n") .. "\n"
end

-- Writes the help of command `name` on stdout; returns 0.
function M.show(name)
  io.stdout:write(M.text(cli.by_name[name]))
  return 0
end

-- Entry point: returns the exit status.
function M.main(argv, ctx)
  local opts, pos = args.parse(argv, M.SPEC)
  if not opts then cli.usage_error(ctx, pos) end
  if #pos > 1 or (opts.man and #pos > 0) then cli.usage_error(ctx, "give at most one COMMAND") end
  if opts.man then
    io.stdout:write(M.man())
    return 0
  end
  if not pos[1] then
    io.stdout:write(cli.usage(), "\n")
    return 0
  end
  if not cli.by_name[pos[1]] then cli.unknown_command(pos[1]) end
  return M.show(pos[1])
end

return M
