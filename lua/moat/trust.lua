-- Workspace trust (the direnv model): `moat trust DIR` records in
-- $MOAT_HOME/trust/<sha256 of DIR's real path>.json the SHA-256 of every file under DIR/.moat/
-- and of each guarded item of a config that lives in the workspace (moat.trust.guard).
-- Workspace Lua loads, and the guarded config takes effect, only while that record matches
-- exactly: the agent in the container can write to the workspace, and a cloned repository is
-- someone else's words, so nothing there may choose secrets or run on the host unasked.
local lfs = require("lfs")
local sys = require("moat.c.system")
local json = require("moat.c.json")
local guard = require("moat.trust.guard")
local text = require("moat.text")

local M = {}

M.MAX_FILES = 10000     -- a .moat/ tree larger than this is refused rather than hashed
M.MAX_DEPTH = 32
M.MAX_FILE = 1024 * 1024         -- bytes of one file under .moat/ that trust hashes
M.MAX_TOTAL = 10 * 1024 * 1024   -- bytes of all of them: past either, trust refuses, naming it

M._active = nil         -- { real, record } once activate() approved a workspace

-- Returns the directory holding trust records ($MOAT_HOME/trust) | nil, message.
function M.dir()
  local home, err = require("moat.auditlog").home()
  if not home then return nil, err end
  return home .. "/trust"
end

-- Returns the real path of workspace `dir` | nil, message.
function M.realpath(dir)
  local real, err = sys.realpath(dir or ".")
  if not real then return nil, ("cannot find the workspace %s: %s"):format(dir or ".", tostring(err)) end
  if lfs.attributes(real, "mode") ~= "directory" then return nil, real .. " is not a directory" end
  return real
end

-- Returns the trust record's path for the workspace whose real path is `real` | nil, message.
function M.record_path(real)
  local dir, err = M.dir()
  if not dir then return nil, err end
  return dir .. "/" .. sys.sha256(real) .. ".json"
end

-- Returns the hash recorded for one entry under .moat/ and the bytes it counted | nil, message.
-- Files are hashed as a stream, capped; nothing is skipped silently.
local function _hash_entry(path, mode)
  if mode == "link" then
    -- Symlinks are recorded as links, never followed: their target could change silently.
    return "symlink:" .. sys.sha256(lfs.symlinkattributes(path, "target") or ""), 0
  elseif mode == "file" then
    local h, err = sys.sha256_file(path, M.MAX_FILE)
    if not h then return nil, "cannot hash " .. err end
    return h, lfs.attributes(path, "size") or 0
  end
  return "special:" .. tostring(mode), 0
end

-- Hashes every file under <real>/.moat/. Returns files = { ["lua/moat/x.lua"] = hex, ... }, count
-- | nil, message. Missing .moat/ gives an empty map.
function M.scan(real)
  local root = real .. "/.moat"
  local files, count, total = {}, 0, 0
  if lfs.attributes(root, "mode") ~= "directory" then return files, 0 end
  local function walk(dir, rel, depth)
    if depth > M.MAX_DEPTH then return nil, dir .. " is nested too deeply" end
    local names = {}
    for name in lfs.dir(dir) do
      if name ~= "." and name ~= ".." then names[#names + 1] = name end
    end
    table.sort(names)
    for _, name in ipairs(names) do
      local path, r = dir .. "/" .. name, rel == "" and name or (rel .. "/" .. name)
      local mode = lfs.symlinkattributes(path, "mode")
      if mode == "directory" then
        local ok, err = walk(path, r, depth + 1)
        if not ok then return nil, err end
      else
        count = count + 1
        if count > M.MAX_FILES then
          return nil, ("%s holds more than %d files"):format(root, M.MAX_FILES)
        end
        local h, n = _hash_entry(path, mode)
        if not h then return nil, n end
        files[r], total = h, total + n
        if total > M.MAX_TOTAL then
          return nil, ("%s holds more than %d bytes to hash"):format(root, M.MAX_TOTAL)
        end
      end
    end
    return true
  end
  local ok, done, err = pcall(walk, root, "", 0)
  if not ok then return nil, tostring(done) end
  if done ~= true then return nil, err end
  return files, count
end

-- Returns true when the workspace's .moat/ holds Lua that moat would load (any *.lua file).
function M.has_lua(files)
  for rel in pairs(files) do
    if rel:match("%.lua$") then return true end
  end
  return false
end

-- Returns the recorded trust for `real` | nil (never trusted), message (unreadable record).
function M.read_record(real)
  local path, perr = M.record_path(real)
  if not path then return nil, perr end
  local f = io.open(path, "rb")
  if not f then return nil end
  local data = f:read(1024 * 1024) or ""
  f:close()
  local rec = json.decode(data)
  if type(rec) ~= "table" or type(rec.files) ~= "table" or rec.workspace ~= real then
    return nil, path .. " is not a valid trust record; run moat trust again"
  end
  if type(rec.config) ~= "table" then rec.config = {} end
  return rec
end

-- Directories the agent must never be able to write, because moat reads them: real paths.
local function _private()
  local loader = require("moat.loader")
  local out = {}
  local function add(d, inside_too)
    if type(d) ~= "string" or d:sub(1, 1) ~= "/" then return end
    out[#out + 1] = { path = sys.realpath(d) or d:gsub("/+$", ""), inside = inside_too }
  end
  add(os.getenv("HOME"), false)
  add((require("moat.auditlog").home()), true)
  add(loader.user_dir(), true)
  add(loader.site_dir(), true)
  return out
end

-- Returns nil when the workspace whose real path is `real` may be used, else why not: it may
-- not equal or contain HOME, $MOAT_HOME or the user and site config directories, nor sit
-- inside $MOAT_HOME or those config directories (the agent must never write where moat reads).
function M.placement(real)
  local base = real == "/" and "/" or real .. "/"
  for _, d in ipairs(_private()) do
    local contains = d.path == real or d.path:sub(1, #base) == base
    local inside = d.inside and real:sub(1, #d.path + 1) == d.path .. "/"
    if contains or inside then
      return ("the workspace %s %s %s, which moat reads: the agent could change what moat does next;"
        .. " run moat from a project directory instead"):format(text.show(real),
        contains and (d.path == real and "is" or "contains") or "is inside", text.show(d.path))
    end
  end
  return nil
end

-- Returns the guarded config items of `cfg` when its file lives in workspace `real`, else
-- none: a config outside the workspace and command-line options are the user's own words.
local function _items(cfg, real)
  if not cfg or not guard.inside(cfg.file, real) then return {} end
  return guard.items(cfg, real)
end

-- Records the current files of workspace `dir` and the guarded items of its config `cfg`
-- (optional). Returns record { workspace, trusted_at, files = {rel = hex}, config = {key = hex},
-- count, path, items } | nil, message.
function M.trust(dir, cfg)
  local real, err = M.realpath(dir)
  if not real then return nil, err end
  local bad = M.placement(real)
  if bad then return nil, bad end
  local files, count = M.scan(real)
  if not files then return nil, count end
  local items, ierr = _items(cfg, real)
  if not items then return nil, ierr end
  local home, herr = require("moat.auditlog").ensure_home()
  if not home then return nil, herr end
  local tdir = home .. "/trust"
  if lfs.attributes(tdir, "mode") ~= "directory" then
    local ok, merr = sys.mkdir(tdir, tonumber("700", 8))
    if not ok and lfs.attributes(tdir, "mode") ~= "directory" then
      return nil, ("cannot create %s: %s"):format(tdir, tostring(merr))
    end
  end
  local config = {}
  for _, it in ipairs(items) do config[it.key] = it.hash end
  local rec = { version = 2, workspace = real, trusted_at = sys.now(), files = files, config = config }
  local path = M.record_path(real)
  local wok, werr = sys.write_file(path, assert(json.encode(rec, { pretty = true })) .. "\n", tonumber("600", 8))
  if not wok then return nil, ("cannot write %s: %s"):format(path, tostring(werr)) end
  rec.count, rec.path, rec.items = count, path, items
  return rec
end

-- Forgets the trust of workspace `dir`. Returns existed (bool), record path | nil, message.
function M.untrust(dir)
  local real, err = M.realpath(dir)
  if not real then return nil, err end
  local path, perr = M.record_path(real)
  if not path then return nil, perr end
  if lfs.attributes(path, "mode") == nil then return false, path end
  local ok, rerr = os.remove(path)
  if not ok then return nil, ("cannot remove %s: %s"):format(path, tostring(rerr)) end
  if M._active and M._active.real == real then M._active = nil end
  return true, path
end

-- Compares `now` (key -> hash) with `was`: returns changed, added, removed (sorted keys).
local function _diff(now, was)
  local changed, added, removed = {}, {}, {}
  for k, h in pairs(now) do
    if was[k] == nil then added[#added + 1] = k elseif was[k] ~= h then changed[#changed + 1] = k end
  end
  for k in pairs(was) do
    if now[k] == nil then removed[#removed + 1] = k end
  end
  table.sort(changed)
  table.sort(added)
  table.sort(removed)
  return changed, added, removed
end

-- Compares the workspace's .moat/ files and the guarded items of its config `cfg` (optional)
-- with its trust record. Returns { real, state = "none"|"trusted"|"untrusted"|"changed",
-- lua_ok, changed, added, removed (files), config = {changed, added, removed, show = key -> text},
-- files, items, record } ("none": nothing guarded and no record) | nil, message.
function M.status(dir, cfg)
  local real, err = M.realpath(dir)
  if not real then return nil, err end
  local files, serr = M.scan(real)
  if not files then return nil, serr end
  local items, ierr = _items(cfg, real)
  if not items then return nil, ierr end
  local rec, rerr = M.read_record(real)
  local now, show = {}, {}
  for _, it in ipairs(items) do now[it.key], show[it.key] = it.hash, it.show end
  local st = { real = real, files = files, items = items, record = rec, invalid = rerr }
  st.changed, st.added, st.removed = _diff(files, rec and rec.files or {})
  local c = { show = show }
  -- Without a config (moat backends, the loader), only the .moat/ files are compared.
  c.changed, c.added, c.removed = _diff(now, cfg and rec and rec.config or {})
  st.config = c
  local lua_diff = #st.changed + #st.added + #st.removed
  local config_diff = #c.changed + #c.added + #c.removed
  st.lua_ok = not M.has_lua(files) or (rec ~= nil and lua_diff == 0)
  if not rec then
    st.state = (M.has_lua(files) or #items > 0) and "untrusted" or "none"
  else
    st.state = (lua_diff + config_diff == 0) and "trusted" or "changed"
  end
  return st
end

local function _config_lines(lines, st)
  local c = st.config
  if not c then return end
  for _, k in ipairs(c.added) do lines[#lines + 1] = "  + " .. c.show[k] end
  for _, k in ipairs(c.changed) do lines[#lines + 1] = "  ~ " .. c.show[k] end
  for _, k in ipairs(c.removed) do lines[#lines + 1] = "  - " .. text.show(k) end
end

-- Returns the text for people explaining why the workspace of status `st` is refused.
function M.message(st)
  local lines = {}
  local cmd = "moat trust " .. text.quote_word(st.real)
  if st.state == "untrusted" then
    lines[1] = ("the workspace %s is not trusted; trusting it allows:"):format(st.real)
    for _, rel in ipairs(st.added) do lines[#lines + 1] = "  not trusted: .moat/" .. rel end
    if st.invalid then lines[#lines + 1] = "  (" .. st.invalid .. ")" end
  else
    lines[1] = ("the workspace %s changed since you trusted it:"):format(st.real)
    for _, rel in ipairs(st.changed) do lines[#lines + 1] = "  changed:  .moat/" .. rel end
    for _, rel in ipairs(st.added) do lines[#lines + 1] = "  appeared: .moat/" .. rel end
    for _, rel in ipairs(st.removed) do lines[#lines + 1] = "  vanished: .moat/" .. rel end
  end
  _config_lines(lines, st)
  lines[#lines + 1] = "moat runs no workspace Lua and takes no secrets, env files, runtime, mounts or network"
    .. " from a workspace config until you trust them (anything in the container can write there)."
  lines[#lines + 1] = "Review them, then run: " .. cmd .. "  (or moat run --trust)"
  return table.concat(lines, "\n")
end

-- Approves a file the loader is about to compile: `path` must be under the active workspace's
-- .moat/ and `src` must hash to the recorded value. Returns true | nil, why.
function M.check_file(path, src)
  local a = M._active
  if not a then return nil, path .. ": workspace Lua is not trusted (run moat trust)" end
  local prefix = a.real .. "/.moat/"
  if path:sub(1, #prefix) ~= prefix then
    return nil, path .. ": not under the trusted workspace " .. a.real
  end
  local rel = path:sub(#prefix + 1)
  local want = a.record.files[rel]
  if want == nil or want ~= sys.sha256(src) then
    local st = M.status(a.real) or { real = a.real, state = "changed", changed = { rel }, added = {}, removed = {} }
    if st.state == "trusted" then st.state, st.changed = "changed", { rel } end
    return nil, M.message(st)
  end
  return true
end

-- Reads `<workspace>/.moat/<rel>` of the active (trusted) workspace; returns source | nil, why.
-- The bytes returned are the bytes whose hash was checked.
function M.read_trusted(rel)
  local a = M._active
  if not a then return nil, "workspace Lua is not trusted (run moat trust)" end
  local path = a.real .. "/.moat/" .. rel
  local src, err = require("moat.loader").read(path)
  if not src then return nil, err end
  local ok, why = M.check_file(path, src)
  if not ok then return nil, why end
  return src, path
end

-- Returns the active workspace's real path, or nil when no workspace Lua is enabled.
function M.active()
  return M._active and M._active.real or nil
end

-- Enables the Lua of workspace `dir` (its .moat/lua on the module path, its .moat/policy.lua
-- for moat.policy); `st` is its status when the caller has it. Returns true when workspace Lua
-- is enabled, false when there is none | nil, message naming the files when they are
-- untrusted or changed since `moat trust`.
function M.activate(dir, st)
  local err
  if not st then st, err = M.status(dir) end
  if not st then return nil, err end
  if not M.has_lua(st.files) then
    -- Nothing under .moat/ would be loaded, so there is nothing to refuse.
    M._active = nil
    return false
  end
  if not st.lua_ok then return nil, M.message(st) end
  M._active = { real = st.real, record = st.record }
  local loader = require("moat.loader")
  if lfs.attributes(st.real .. "/.moat/lua", "mode") == "directory" then
    loader.add_workspace(st.real .. "/.moat/lua", M.check_file)
  end
  return true
end

return M
