-- The bubblewrap runtime: the host's root read-only in new namespaces (the network's too, but with
-- network: host), the workspace at /workspace, a fresh /tmp, /dev and /proc, moat's state and the
-- user's home hidden; values only in the environ it is exec'd with (never --setenv).
-- The image is ignored: the sandbox runs the host's own programs.
local proc = require("moat.proc")
local runtime = require("moat.runtime")
local text = require("moat.text")

local M = {
  name = "bwrap",
  uses_image = false,
  description = "bubblewrap sandbox (host root read-only, new namespaces); the image is ignored",
  install_hint = "install bubblewrap (Debian: apt-get install bubblewrap)",
}

M.DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

-- Host directories replaced by an empty tmpfs: homes hold credentials (~/.aws, ~/.ssh, moat's
-- own keys) and /run holds daemon sockets (docker.sock) that would undo the sandbox.
M.HIDDEN = { home = true, root = true, run = true }
-- Mounted fresh below rather than bound from the host.
local FRESH = { proc = true, dev = true, tmp = true, workspace = true }

-- Variables of moat's environment kept in the sandbox's environ (HOME is /tmp there).
M.KEEP = { "TERM", "LANG", "LC_ALL", "LC_CTYPE", "LC_MESSAGES", "TZ", "USER", "LOGNAME", "NO_COLOR", "COLORTERM" }

local function _path(what, s)
  if s == "" or s:sub(1, 1) ~= "/" or s:find("[%z\1-\31\127]") then
    return nil, ("%s '%s' must be an absolute path without control characters"):format(what, text.show(s))
  end
  return s
end

-- Says whether bwrap can start a sandbox here. ctx.run(argv, timeout_ms) -> result.
function M.probe(ctx)
  local r = ctx.run({ "bwrap", "--ro-bind", "/", "/", "--unshare-all", "--", "true" }, 5000)
  if not r then return nil, "bubblewrap is not installed (no bwrap on PATH)" end
  if r.timed_out or r.code ~= 0 then
    return nil, "bwrap cannot create a sandbox here (user namespaces may be disabled)"
  end
  return true
end

-- Returns the bwrap arguments that rebuild the host's root read-only, one top-level entry at a
-- time so that /workspace and the mount points can be made in the sandbox's own root.
function M.root_args(root)
  local lfs = require("lfs")
  root = root or "/"
  local names = {}
  for n in lfs.dir(root) do
    if n ~= "." and n ~= ".." then names[#names + 1] = n end
  end
  table.sort(names)
  local args = {}
  local function add(...) for _, a in ipairs({ ... }) do args[#args + 1] = a end end
  for _, n in ipairs(names) do
    local p = "/" .. n
    local a = lfs.symlinkattributes(root == "/" and p or root .. p)
    -- Skipped: made fresh below, vanished meanwhile, or a name we will not pass on.
    local skip = FRESH[n] or not a or n:find("[%z\1-\31\127]")
    if not skip and M.HIDDEN[n] then
      if a.mode == "directory" then add("--tmpfs", p) end
    elseif not skip and a.mode == "link" then
      add("--symlink", a.target, p)
    elseif not skip and (a.mode == "directory" or a.mode == "file") then
      add("--ro-bind", p, p)
    end
  end
  return args
end

-- Returns the realpath of `d` when it is a directory worth hiding: absolute, not / itself, and
-- not under a top-level directory that the sandbox already hides or makes fresh.
local function _private(d)
  if type(d) ~= "string" or d:sub(1, 1) ~= "/" then return nil end
  local real = require("moat.c.system").realpath(d)
  if not real or real == "/" or real:find("[%z\1-\31\127]") then return nil end
  if require("lfs").attributes(real, "mode") ~= "directory" then return nil end
  local top = real:match("^/([^/]+)")
  if M.HIDDEN[top] or FRESH[top] then return nil end
  return real
end

-- Returns the realpaths of the host directories that hold moat's state or the user's
-- credentials, wherever they are (/opt, /srv, behind symlinks): HOME, $MOAT_HOME (default
-- ~/.moat), $XDG_CONFIG_HOME (default ~/.config) and the site config dir (MOAT_SITE_DIR,
-- default /etc/moat). Each is hidden under an empty tmpfs; one inside another is left out.
function M.private_dirs(environ)
  environ = environ or {}
  local home = environ.HOME
  if home and home:sub(1, 1) ~= "/" then home = nil end
  local site = environ.MOAT_SITE_DIR
  if not (site and site:sub(1, 1) == "/") then site = require("moat.loader").site_dir() end
  local candidates = { home, environ.MOAT_HOME or (home and home .. "/.moat"),
    environ.XDG_CONFIG_HOME or (home and home .. "/.config"), site }
  local found = {}
  for i = 1, 4 do
    local real = _private(candidates[i])
    if real then found[#found + 1] = real end
  end
  table.sort(found)
  local out = {}
  for _, d in ipairs(found) do
    local last = out[#out]
    if not (last and (d == last or d:sub(1, #last + 1) == last .. "/")) then out[#out + 1] = d end
  end
  return out
end

-- Returns true when `cmd` names a file the sandbox could execute (searched on `path`).
function M.findable(cmd, path)
  local lfs = require("lfs")
  if cmd:find("/", 1, true) then
    -- Only host paths outside what the sandbox mounts fresh can be checked from here.
    if cmd:sub(1, 1) ~= "/" or cmd:match("^/workspace/") or cmd:match("^/tmp/") then return true end
    return lfs.attributes(cmd, "mode") ~= nil
  end
  return proc.which(cmd, path) ~= nil
end

-- Refuses a workspace or mount that is not an absolute path, and a command the sandbox cannot find.
function M.validate(spec)
  local ok, err = _path("workspace", spec.workspace)
  for _, m in ipairs(spec.mounts or {}) do
    if not ok then break end
    ok, err = _path("mount", m.host)
    if ok then ok, err = _path("mount", m.container) end
  end
  if not ok then return nil, err end
  local net = spec.network or "private"
  if net ~= "private" and net ~= "none" and net ~= "host" then
    return nil, ("network '%s' is not one bwrap knows (private, none, host)"):format(text.show(net)), "usage"
  end
  local cmd = (spec.command or { "sh" })[1]
  if not M.findable(cmd, M.DEFAULT_PATH) then
    return nil, cmd .. ": command not found in the sandbox (PATH=" .. M.DEFAULT_PATH .. ")", "not_found"
  end
  return true
end

-- Returns how the sandbox gets its network: "host" (shared), "none" (its own namespace with
-- only a loopback) or "private" (its own namespace, outbound through slirp4netns, which never
-- reaches the host's loopback), and for private the moat-init and slirp4netns paths; private
-- falls back to none, with a note, when either is missing.
function M.network(spec)
  local net = spec.network or "private"
  if net ~= "private" then return net end
  local init = spec.init or require("moat.shim").path()
  local slirp = spec.slirp
  if slirp == nil then
    slirp = proc.which("slirp4netns", (spec.environ or {}).PATH or M.DEFAULT_PATH)
      or proc.which("slirp4netns", M.DEFAULT_PATH)
  end
  if init and slirp then return "private", init, slirp end
  return "none", nil, nil, ("network private needs %s; the sandbox runs with no network at all"
    .. " (install slirp4netns, or set network: none or host)"):format(init and "slirp4netns" or "moat-init beside moat")
end

-- Returns the launch for `spec` with `env` (see moat.runtime); validate(spec) has passed. The
-- sandbox always has its own network namespace but with network: host.
function M.launch(spec, env)
  local net, init, slirp, why = M.network(spec)
  -- Run as root, bwrap would leave the command every capability: enough to unmount the tmpfs
  -- over moat's home or drop the network's reject route. It gets none.
  local argv = { "bwrap", "--die-with-parent", "--unshare-all", "--cap-drop", "ALL" }
  local function add(...) for _, a in ipairs({ ... }) do argv[#argv + 1] = a end end
  if net == "host" then add("--share-net") end
  -- Without a TTY of its own the command gets a new session, so it cannot push input into
  -- moat's terminal (TIOCSTI); an interactive one keeps the terminal as its controlling one.
  if not spec.interactive then add("--new-session") end
  for _, a in ipairs(spec.root_args or M.root_args()) do add(a) end
  add("--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp")
  for _, d in ipairs(M.private_dirs(spec.environ)) do add("--tmpfs", d) end
  add("--bind", spec.workspace, "/workspace")
  for _, m in ipairs(spec.mounts or {}) do
    add(m.ro and "--ro-bind" or "--bind", m.host, m.container)
  end
  add("--remount-ro", "/", "--chdir", "/workspace", "--")
  for _, a in ipairs(spec.command or { "sh" }) do add(a) end
  -- moat-init starts bwrap, attaches slirp4netns to the sandbox before the command runs, and
  -- ends it with the run.
  if net == "private" then argv = { init, "--slirp", slirp, "--", table.unpack(argv) } end
  local notes = { "the image is ignored: bwrap runs the host's programs with the host's root read-only" }
  local c = spec.container or {}
  if c.memory or c.cpus then notes[#notes + 1] = "container.memory and container.cpus are not applied by bwrap" end
  if why then
    notes[#notes + 1] = why
    if env then require("moat.ui").warn(why) end
  end
  return {
    argv = argv,
    env = runtime.environ(spec.environ, M.KEEP, { PATH = M.DEFAULT_PATH, HOME = "/tmp" }, env),
    group = not (spec.interactive and spec.tty),
    stdin = spec.interactive and true or nil,
    notes = notes,
  }
end

return M
