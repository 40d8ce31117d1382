-- The host runtime: the command itself in the workspace directory, no isolation at all; used only
-- when asked for by name. Values only in the environ it is exec'd with, built from scratch.
local proc = require("moat.proc")
local runtime = require("moat.runtime")

local M = {
  name = "host",
  client = false,
  uses_image = false,
  explicit_only = true,
  description = "no isolation: the command runs on the host in the workspace (only when asked for)",
  install_hint = "",
}

-- Variables of moat's environment the command keeps; everything else is left out.
M.KEEP = { "PATH", "HOME", "USER", "LOGNAME", "SHELL", "TERM", "LANG", "LC_ALL", "LC_CTYPE", "LC_MESSAGES",
  "TZ", "TMPDIR", "NO_COLOR", "COLORTERM" }
M.DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

-- The host can always run a command.
function M.probe()
  return true
end

local function _path(spec)
  local p = spec.environ and spec.environ.PATH
  return p or M.DEFAULT_PATH
end

-- Says whether the command can be found (exit 127 before anything is fetched when it cannot).
function M.validate(spec)
  local cmd = (spec.command or { "sh" })[1]
  if not proc.which(cmd, _path(spec), spec.workspace) then
    return nil, cmd .. ": command not found (PATH=" .. _path(spec) .. ")", "not_found"
  end
  return true
end

-- Returns the launch for `spec` with `env` (see moat.runtime).
function M.launch(spec, env)
  local argv = {}
  for i, a in ipairs(spec.command or { "sh" }) do argv[i] = a end
  argv[1] = proc.which(argv[1], _path(spec), spec.workspace) or argv[1]
  local notes = { "the image is ignored and nothing is isolated: the command runs on the host" }
  if #(spec.mounts or {}) > 0 then notes[#notes + 1] = "mounts: are not applied by the host runtime" end
  return {
    argv = argv,
    env = runtime.environ(spec.environ, M.KEEP, { PATH = M.DEFAULT_PATH }, env),
    cwd = spec.workspace,
    group = not (spec.interactive and spec.tty),
    stdin = spec.interactive and true or nil,
    notes = notes,
  }
end

return M
