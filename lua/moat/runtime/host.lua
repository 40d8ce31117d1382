-- The host runtime: the command itself in the workspace directory, no isolation at all; used only
-- when asked for by name. Values only in the environ it is exec'd with, built from scratch.
local M = {
  name = "host",
  uses_image = false,
  explicit_only = true,
  description = "no isolation: the command runs on the host in the workspace (only when asked for)",
  install_hint = "",
}

-- Variables of moat's environment the command keeps; everything else is left out.
M.KEEP = { "PATH", "HOME", "USER", "LOGNAME", "SHELL", "TERM", "LANG", "LC_ALL", "LC_CTYPE", "LC_MESSAGES",
  "TZ", "TMPDIR", "NO_COLOR", "COLORTERM" }
M.DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

-- Returns the path `cmd` runs as: searched on `path` when it has no "/", relative to `cwd` otherwise;
-- nil when there is no such file.
function M.which(cmd, path, cwd)
  local lfs = require("lfs")
  if cmd:find("/", 1, true) then
    local p = cmd:sub(1, 1) == "/" and cmd or (cwd .. "/" .. cmd)
    return lfs.attributes(p, "mode") and cmd or nil
  end
  for dir in path:gmatch("[^:]+") do
    local p = dir .. "/" .. cmd
    if lfs.attributes(p, "mode") == "file" then return p end
  end
  return nil
end

-- The host can always run a command.
function M.probe()
  return true
end

-- Returns the launch for `spec` (see moat.runtime).
function M.prepare(spec)
  local env = {}
  for _, k in ipairs(M.KEEP) do
    local v = spec.environ and spec.environ[k]
    if v then env[k] = v end
  end
  env.PATH = env.PATH or M.DEFAULT_PATH
  for _, v in ipairs(spec.vars or {}) do
    if v.value ~= nil then env[v.name] = v.value end
  end
  local out = {}
  for k, v in pairs(env) do out[#out + 1] = k .. "=" .. v end
  table.sort(out)
  local notes = { "the image is ignored and nothing is isolated: the command runs on the host" }
  if #(spec.mounts or {}) > 0 then notes[#notes + 1] = "mounts: are not applied by the host runtime" end
  local argv = {}
  for i, a in ipairs(spec.command or { "sh" }) do argv[i] = a end
  local missing
  local found = M.which(argv[1], env.PATH, spec.workspace)
  if found then
    argv[1] = found
  else
    missing = argv[1] .. ": command not found (PATH=" .. env.PATH .. ")"
  end
  return {
    argv = argv,
    env = out,
    cwd = spec.workspace,
    not_found = missing,
    group = not (spec.interactive and spec.tty),
    stdin = spec.interactive and true or nil,
    notes = notes,
  }
end

return M
