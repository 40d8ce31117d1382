-- Policy scripts: the site's (${MOAT_SITE_DIR:-/etc/moat}/policy.lua), the user's
-- (${XDG_CONFIG_HOME:-~/.config}/moat/policy.lua) and a trusted workspace's (.moat/policy.lua),
-- run in that order on a read-only copy of the plan before any backend is contacted. Each
-- returns function(plan, ctx); ctx.deny(target, reason) stops the run, ctx.warn(msg) prints.
-- A script that fails to load or raises is a denial, never a pass.
local M = {}

local _loader = function() return require("moat.loader") end

-- Returns the policy scripts that exist, in run order: { {path, kind = "site"|"user"|"workspace"} }.
-- A workspace script is listed only when moat.trust has activated its workspace.
function M.scripts()
  local loader = _loader()
  local lfs = require("lfs")
  local out = {}
  -- symlinkattributes: a dangling link is listed (and then denied), never skipped.
  local function add(path, kind)
    if lfs.symlinkattributes(path, "mode") then out[#out + 1] = { path = path, kind = kind } end
  end
  add(loader.site_dir() .. "/policy.lua", "site")
  add(loader.user_dir() .. "/policy.lua", "user")
  local ok, trust = pcall(require, "moat.trust")
  local ws = ok and trust.active()
  if ws then add(ws .. "/.moat/policy.lua", "workspace") end
  return out
end

-- Returns a read-only view of `t` (deep): writes raise, reads, ipairs, pairs and # work.
local function _readonly(t, seen)
  if type(t) ~= "table" then return t end
  seen = seen or {}
  if seen[t] then return seen[t] end
  local copy = {}
  local proxy = setmetatable({}, {
    __index = copy,
    __newindex = function() error("the plan is read-only in a policy script", 2) end,
    __len = function() return #copy end,
    __pairs = function() return next, copy, nil end,
    __metatable = false,
  })
  seen[t] = proxy
  for k, v in pairs(t) do copy[k] = _readonly(v, seen) end
  return proxy
end

-- Returns the plan as policy scripts see it: name, workspace, image, command, runtime,
-- interactive, container, mounts, env, secrets = { {name, ref, backend, plain, parsed, where} }.
-- Plain secret values are not in it (their ref reads "(plain value)"). Read-only; every call
-- builds a fresh copy, so each script gets its own.
function M.view(plan)
  local secrets = {}
  for i, s in ipairs(plan.secrets or {}) do
    secrets[i] = { name = s.name, ref = s.ref, backend = s.backend, plain = s.plain and true or false,
      parsed = s.parsed, where = s.where }
  end
  local env = {}
  for i, e in ipairs(plan.env or {}) do env[i] = { name = e.name, value = e.value } end
  return _readonly({
    name = plan.name, workspace = plan.workspace, image = plan.image, command = plan.command,
    runtime = plan.runtime, interactive = plan.interactive, container = plan.container or {},
    mounts = plan.mounts or {}, env = env, secrets = secrets, network = plan.network, profile = plan.profile,
  })
end

-- Returns a shallow copy of library `lib` without the names in `drop`.
local function _clone(lib, drop)
  local out = {}
  for k, v in pairs(lib) do
    if not (drop and drop[k]) then out[k] = v end
  end
  return out
end

local _BASE = { "assert", "error", "ipairs", "next", "pairs", "pcall", "rawequal", "rawget", "rawlen",
  "rawset", "select", "setmetatable", "tonumber", "tostring", "type", "xpcall", "_VERSION" }

-- Opens a file for reading only: a script may read a list it keeps beside it, never write.
local function _open_read(path, mode)
  mode = mode or "r"
  if mode ~= "r" and mode ~= "rb" then error("io.open in a policy script is read-only (mode r or rb)", 2) end
  return io.open(path, mode)
end

-- Finds a module a policy script requires: only Lua source from MOAT_LUA_PATH, the user's or the
-- site's lua directory, compiled with the script's own globals. moat's modules, C modules and
-- workspace files are out of reach, so a script cannot patch what the run relies on.
local function _require_in(env, path)
  local cache = {}
  return function(name)
    if type(name) ~= "string" then error("require expects a module name", 2) end
    if cache[name] ~= nil then return cache[name] end
    local file, kind = _loader().find(name)
    if not file or not (kind == "env" or kind == "user" or kind == "site") then
      error(("%s: module '%s' is not available to policy scripts (only Lua files in MOAT_LUA_PATH,"
        .. " the user's or the site's lua directory)"):format(path, name), 2)
    end
    local chunk = assert(_loader().loadfile(file, env))
    cache[name] = chunk(name, file) or true
    return cache[name]
  end
end

-- Returns a fresh globals table for one script: the standard library without debug, package,
-- collectgarbage, coroutines, file writes, processes or binary chunks. Libraries are copies, and
-- getmetatable hides the metatables of strings and userdata, so nothing a script changes is seen
-- by moat or by the next script.
local function _sandbox(path, print_fn)
  local env = {}
  for _, k in ipairs(_BASE) do env[k] = _G[k] end
  env.string = _clone(string, { dump = true })
  env.table, env.math, env.utf8 = _clone(table), _clone(math), _clone(utf8)
  env.os = { clock = os.clock, date = os.date, difftime = os.difftime, getenv = os.getenv, time = os.time }
  env.io = { open = _open_read, lines = function(file, ...)
    if type(file) ~= "string" then error("io.lines in a policy script needs a file name", 2) end
    return io.lines(file, ...)
  end }
  env.getmetatable = function(v)
    if type(v) ~= "table" then return nil end
    return getmetatable(v)
  end
  env.load = function(chunk, name)
    if type(chunk) ~= "string" then return nil, "load in a policy script takes source text only" end
    return load(chunk, name, "t", env)
  end
  env.print = print_fn
  env.require = _require_in(env, path)
  env._G = env
  return env
end

-- Describes a deny target for people: a secret entry becomes its name, a string stays.
local function _target(target)
  if type(target) == "table" then
    local name = rawget(target, "name") or target.name
    if name then return tostring(name) end
    return "the run"
  end
  if target == nil then return "the run" end
  return tostring(target)
end

-- Finds the innermost stack frame running code of `path`; returns its current line or nil.
local function _line_in(path, level)
  local src = "@" .. path
  for l = level, 60 do
    local info = debug.getinfo(l, "Sl")
    if not info then break end
    if info.source == src and info.currentline and info.currentline > 0 then return info.currentline end
  end
  return nil
end

-- Formats an error raised by script `path`: always names the file and, where known, the line.
local function _error_text(path, err, line)
  -- Never tostring() a script's object here: its __tostring would run outside the script's pcall.
  local msg = type(err) == "string" and err or ("error object (a " .. type(err) .. ")")
  local prefix = path .. ":"
  if msg:sub(1, #prefix) == prefix then return msg end
  if line then return ("%s:%d: %s"):format(path, line, msg) end
  return path .. ": " .. msg
end

-- Reads the source of `script`; returns text | nil, why (the why names the file).
local function _source(script)
  local path = script.path
  -- Stat first: a dangling link, a directory or a FIFO is a denial, and a FIFO must not block.
  local mode, serr = require("lfs").attributes(path, "mode")
  if not mode then
    local link = require("lfs").symlinkattributes(path, "mode") == "link"
    return nil, ("cannot load %s: %s"):format(path, link and "it is a symlink to nowhere" or tostring(serr))
  elseif mode ~= "file" then
    return nil, ("cannot load %s: it is a %s, not a Lua file"):format(path, mode)
  end
  local src, err
  if script.kind == "workspace" then
    src, err = require("moat.trust").read_trusted("policy.lua")
  else
    src, err = _loader().read(path)
  end
  if not src then return nil, ("cannot load %s: %s"):format(path, tostring(err)) end
  return src
end

-- Runs one script on a fresh copy of `plan`. Appends to `denials` ({script, target, reason})
-- and `warnings`; the script reaches neither list except through ctx.deny and ctx.warn.
local function _run(script, plan, denials, warnings, opts)
  local path = script.path
  local function deny(target, reason)
    denials[#denials + 1] = { script = path, kind = script.kind, target = _target(target),
      reason = reason ~= nil and tostring(reason) or "denied by policy" }
  end
  local function warn(msg)
    local text = ("policy %s: %s"):format(path, tostring(msg))
    warnings[#warnings + 1] = text
    if opts.warn then opts.warn(text) end
  end
  local src, err = _source(script)
  local chunk
  if src then chunk, err = _loader().load(src, path, _sandbox(path, warn)) end
  if not chunk then
    deny("policy script", src and ("cannot load %s: %s"):format(path, tostring(err)) or err)
    return
  end
  local ctx = {
    script = path, kind = script.kind,
    deny = function(target, reason) deny(target, reason) end,
    warn = warn,
    sensitive = function(name) return require("moat.plan").sensitive(tostring(name)) end,
  }
  local function handler(e)
    return _error_text(path, e, _line_in(path, 2))
  end
  local ok, fn = xpcall(chunk, handler)
  if not ok then
    deny("policy script", "the script raised an error: " .. tostring(fn))
  elseif type(fn) ~= "function" then
    deny("policy script", ("%s must return function(plan, ctx), not %s"):format(path, type(fn)))
  else
    local rok, rerr = xpcall(fn, handler, M.view(plan), ctx)
    if not rok then deny("policy script", "the script raised an error: " .. tostring(rerr)) end
  end
end

-- Runs every policy script on `plan`. opts: scripts (list of {path, kind}, default M.scripts()),
-- warn = fn(text) (default ui.warn). Returns true | nil, denials = { {script, kind, target, reason} },
-- and in both cases the warnings as a further result.
function M.check(plan, opts)
  opts = opts or {}
  if opts.warn == nil then opts.warn = function(text) require("moat.ui").warn(text) end end
  local scripts = opts.scripts or M.scripts()
  local denials, warnings = {}, {}
  if #scripts == 0 then return true, warnings end
  for _, script in ipairs(scripts) do
    _run(script, plan, denials, warnings, opts)
  end
  if #denials > 0 then return nil, denials, warnings end
  return true, warnings
end

-- Returns the text for people listing `denials`.
function M.report(denials)
  local lines = { ("the run was denied by policy (%d reason%s):"):format(#denials, #denials == 1 and "" or "s") }
  for _, d in ipairs(denials) do
    lines[#lines + 1] = ("  %s: %s (%s)"):format(d.target, d.reason, d.script)
  end
  return table.concat(lines, "\n")
end

return M
