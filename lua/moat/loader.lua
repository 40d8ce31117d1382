-- Where `require` finds Lua modules: MOAT_LUA_PATH, user, site, trusted workspace, built-in.
-- Files load as text only, never bytecode, and never from the current directory.
local M = {}

M.dirs = {}       -- ordered list of { dir = "...", kind = "env" | "user" | "site" | "workspace" | "builtin" }
M.origin = {}     -- module name -> { file = path, kind = kind }
M._builtins = {}  -- module name -> the built-in module loaded beside a shadowing file

-- True when something exists at `path`, without opening it (a FIFO must not block the
-- search; reading it is refused later by name).
local function _readable(path)
  return require("lfs").attributes(path, "mode") ~= nil
end

-- Returns the user configuration directory (XDG_CONFIG_HOME or ~/.config) plus "/moat".
function M.user_dir()
  local xdg = os.getenv("XDG_CONFIG_HOME")
  if xdg and xdg:sub(1, 1) == "/" then return xdg .. "/moat" end
  local home = os.getenv("HOME") or ""
  -- A relative HOME would make the search depend on the current directory.
  if home:sub(1, 1) ~= "/" then return "/nonexistent/.config/moat" end
  return home .. "/.config/moat"
end

-- Returns the site configuration directory (MOAT_SITE_DIR overrides the build-time default).
function M.site_dir()
  local env = os.getenv("MOAT_SITE_DIR")
  if env and env:sub(1, 1) == "/" then return env end
  return M._site_default or "/etc/moat"
end

-- The largest Lua source file read.
M.MAX_BYTES = 4 << 20

-- Reads one Lua source file (a regular file of at most MAX_BYTES); refuses precompiled
-- chunks. Returns source | nil, message.
function M.read(path)
  local src, err = require("moat.c.system").read_file(path, M.MAX_BYTES)
  if not src then return nil, err end
  if src:sub(1, 1) == "\27" then
    return nil, path .. ": precompiled Lua (bytecode) is refused; ship the source file"
  end
  return src
end

-- Compiles Lua source text read from `path` (text mode only). Returns chunk | nil, message.
function M.load(src, path, env)
  if env then return load(src, "@" .. path, "t", env) end
  return load(src, "@" .. path, "t")
end

-- Loads one Lua source file as text; refuses precompiled chunks. Returns chunk | nil, message.
function M.loadfile(path, env)
  local src, err = M.read(path)
  if not src then return nil, err end
  return M.load(src, path, env)
end

-- The directories searched: M.dirs once setup() ran; before that (moat's modules used as a
-- library, as the specs do) the directories of package.path's "?.lua" entries.
local function _dirs()
  if #M.dirs > 0 then return M.dirs end
  local out = {}
  for entry in package.path:gmatch("[^;]+") do
    local dir = entry:match("^(/.-)/%?%.lua$")
    if dir then out[#out + 1] = { dir = dir, kind = "path" } end
  end
  return out
end

-- True when the built-in module `name` is precompiled into the moat binary (only the build's
-- own chunks: no bytecode is ever read from a directory).
local function _embedded(name, d)
  return d.kind == "builtin" and d.dir == M._builtin_dir and M._has_chunk ~= nil and M._has_chunk(name)
end

-- Finds the file for module `name`: returns path, kind, embedded | nil, list of paths tried.
-- `embedded` is true when the built-in module comes precompiled with the binary; `path` is
-- then where its source sits in the built-in directory.
function M.find(name)
  local rel = name:gsub("%.", "/")
  local tried = {}
  for _, d in ipairs(_dirs()) do
    if _embedded(name, d) then return d.dir .. "/" .. rel .. ".lua", d.kind, true end
    for _, pat in ipairs({ "%s/%s.lua", "%s/%s/init.lua" }) do
      local path = pat:format(d.dir, rel)
      if _readable(path) then return path, d.kind end
      tried[#tried + 1] = path
    end
  end
  return nil, tried
end

-- Core modules hold the security of the audit log, of trust and of module loading itself:
-- only the built-in copy of these ever loads (formatting, moat.audit, stays overridable).
M.CORE = { ["moat.loader"] = true, ["moat.boot"] = true, ["moat.trust"] = true, ["moat.auditlog"] = true }

-- Returns true when module `name` may only come from the built-in directory.
function M.is_core(name)
  return M.CORE[name] or name:match("^moat%.auditlog%.") ~= nil or name:match("^moat%.trust%.") ~= nil
end

local function _compile(path, kind)
  -- Read once: the bytes checked are the bytes compiled, even if the file changes meanwhile.
  local src, rerr = M.read(path)
  if not src then error(rerr, 0) end
  if kind == "workspace" then
    local ok, why = false, "workspace Lua is not trusted"
    if M.workspace_check then ok, why = M.workspace_check(path, src) end
    if not ok then error(why, 0) end
  end
  local chunk, err = M.load(src, path)
  if not chunk then error(err, 0) end
  return chunk
end

-- The built-in module `name`'s chunk: precompiled into the binary when `embedded`, else
-- compiled from its source at `path`.
local function _builtin_chunk(name, path, embedded)
  local chunk = embedded and M._load_chunk(name)
  return chunk or _compile(path, "builtin")
end

local function _searcher(name)
  local path, kind, embedded = M.find(name)
  if not path then
    return "\n\tno file '" .. table.concat(kind, "'\n\tno file '") .. "'"
  end
  if kind ~= "builtin" and M.is_core(name) then
    error(("%s cannot replace moat's built-in %s: the audit chain, its signing, trust and the"
      .. " loader are not overridable; remove the file (record formatting is moat.audit)"):format(path, name), 0)
  end
  local chunk = kind == "builtin" and _builtin_chunk(name, path, embedded) or _compile(path, kind)
  M.origin[name] = { file = path, kind = kind }
  return chunk, path
end

-- Returns the built-in module `name` even when a user, site or workspace file shadows it, so
-- that the shadowing file can wrap one function of it. Raises when there is no built-in one.
function M.builtin(name)
  local o = M.origin[name]
  if package.loaded[name] ~= nil and (not o or o.kind == "builtin") then return package.loaded[name] end
  if M._builtins[name] ~= nil then return M._builtins[name] end
  local dir = M._builtin_dir
  local path = dir and (dir .. "/" .. name:gsub("%.", "/") .. ".lua")
  local embedded = dir and _embedded(name, { kind = "builtin", dir = dir })
  if not path or not (embedded or _readable(path)) then error("moat has no built-in module " .. name, 2) end
  local mod = _builtin_chunk(name, path, embedded)(name, path)
  if mod == nil then mod = true end
  M._builtins[name] = mod
  return mod
end

-- Requires module `name` if some directory has it. Returns module | nil, message, "missing"
-- (no file anywhere) or "broken" (a file exists but fails to load).
function M.try(name)
  if package.loaded[name] ~= nil or package.preload[name] then return require(name) end
  if not M.find(name) then return nil, "no module " .. name, "missing" end
  local ok, mod = pcall(require, name)
  if not ok then return nil, tostring(mod), "broken" end
  return mod
end

-- Returns every file `<prefix>/<name>.lua` in the search order (or in `dirs`, a list shaped
-- like M.dirs), shadowed ones included: { {name, module, file, kind} }, sorted by name then order.
function M.files(prefix, dirs)
  local lfs = require("lfs")
  local rel = prefix:gsub("%.", "/")
  local out = {}
  for rank, d in ipairs(dirs or _dirs()) do
    local dir = d.dir .. "/" .. rel
    if lfs.attributes(dir, "mode") == "directory" then
      for f in lfs.dir(dir) do
        local n = f:match("^([a-z][a-z0-9_]*)%.lua$")
        if n then
          out[#out + 1] = { name = n, module = prefix .. "." .. n, file = dir .. "/" .. f, kind = d.kind,
            rank = rank, dir = d }
        end
      end
    end
  end
  table.sort(out, function(a, b)
    if a.name ~= b.name then return a.name < b.name end
    return a.rank < b.rank
  end)
  return out
end

-- Only directories that exist join the search: every require would otherwise try
-- (and fail) to open files in each missing one, which costs measurable startup time.
local function _insert(dir, kind)
  if dir and dir ~= "" and dir:sub(1, 1) == "/" and _readable(dir) then
    M.dirs[#M.dirs + 1] = { dir = dir, kind = kind }
  end
end

-- Installs the search order. opts: builtin = dir, site = build-time site dir, and from the
-- binary has_chunk(name) -> bool, load_chunk(name) -> function | nil, message.
function M.setup(opts)
  M._site_default = opts.site
  M._builtin_dir = opts.builtin
  M._has_chunk, M._load_chunk = opts.has_chunk, opts.load_chunk
  M.dirs = {}
  -- The paths first: _insert's check loads lfs, which must not be looked for in Lua's
  -- default directories (a dozen failed opens) nor in ./
  package.path = ""
  -- C modules: only absolute system directories (lfs), never ./
  local cpath = {}
  for entry in package.cpath:gmatch("[^;]+") do
    if entry:sub(1, 1) == "/" then cpath[#cpath + 1] = entry end
  end
  package.cpath = table.concat(cpath, ";")
  package.searchers[2] = _searcher
  for dir in (os.getenv("MOAT_LUA_PATH") or ""):gmatch("[^:]+") do _insert(dir, "env") end
  _insert(M.user_dir() .. "/lua", "user")
  _insert(M.site_dir() .. "/lua", "site")
  _insert(opts.builtin, "builtin")
end

-- Adds a trusted workspace directory just before the built-in modules; `check(path, source)`
-- must approve every file loaded from it (-> true | nil, why). Adding it again replaces it.
function M.add_workspace(dir, check)
  for i = #M.dirs, 1, -1 do
    if M.dirs[i].kind == "workspace" then table.remove(M.dirs, i) end
  end
  for i, d in ipairs(M.dirs) do
    if d.kind == "builtin" then
      table.insert(M.dirs, i, { dir = dir, kind = "workspace" })
      break
    end
  end
  M.workspace_check = check
end

return M
