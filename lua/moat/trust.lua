-- Workspace trust: `moat trust DIR` records the SHA-256 of every file under DIR/.moat/ in
-- $MOAT_HOME/trust/<sha256 of DIR's real path>.json. Workspace Lua (.moat/lua/**, .moat/policy.lua)
-- loads only while that record matches the files exactly: the agent in the container can write
-- to the workspace, so anything it drops there must not run on the host unasked.
local lfs = require("lfs")
local sys = require("moat.c.system")
local json = require("moat.c.json")

local M = {}

M.MAX_FILES = 10000     -- a .moat/ tree larger than this is refused rather than hashed
M.MAX_DEPTH = 32

M._active = nil         -- { real, record } once activate() approved a workspace

-- Returns the directory holding trust records ($MOAT_HOME/trust).
function M.dir()
  local ok, auditlog = pcall(require, "moat.auditlog")
  local home = ok and auditlog.home() or nil
  if not home then
    local env = os.getenv("MOAT_HOME")
    home = (env and env ~= "") and env or ((os.getenv("HOME") or "") .. "/.moat")
  end
  return home .. "/trust"
end

-- Returns the real path of workspace `dir` | nil, message.
function M.realpath(dir)
  local real, err = sys.realpath(dir or ".")
  if not real then return nil, ("cannot find the workspace %s: %s"):format(dir or ".", tostring(err)) end
  if lfs.attributes(real, "mode") ~= "directory" then return nil, real .. " is not a directory" end
  return real
end

-- Returns the trust record's path for the workspace whose real path is `real`.
function M.record_path(real)
  return M.dir() .. "/" .. sys.sha256(real) .. ".json"
end

-- Returns `s` quoted for a POSIX shell when it needs it (for the commands moat suggests).
function M.shell_quote(s)
  if s:match("^[%w@%%+=:,./_-]+$") then return s end
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

local function _hash_entry(path, mode)
  if mode == "link" then
    -- Symlinks are recorded as links, never followed: their target could change silently.
    return "symlink:" .. sys.sha256(lfs.symlinkattributes(path, "target") or "")
  elseif mode == "file" then
    local f = io.open(path, "rb")
    if not f then return "unreadable" end
    local data = f:read("a") or ""
    f:close()
    return sys.sha256(data)
  end
  return "special:" .. tostring(mode)
end

-- Hashes every file under <real>/.moat/. Returns files = { ["lua/moat/x.lua"] = hex, ... }, count
-- | nil, message. Missing .moat/ gives an empty map.
function M.scan(real)
  local root = real .. "/.moat"
  local files, count = {}, 0
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
        files[r] = _hash_entry(path, mode)
      end
    end
    return true
  end
  local ok, err = pcall(walk, root, "", 0)
  if not ok then return nil, tostring(err) end
  if err ~= true then return nil, err end
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
  local path = M.record_path(real)
  local f = io.open(path, "rb")
  if not f then return nil end
  local text = f:read("a") or ""
  f:close()
  local rec = json.decode(text)
  if type(rec) ~= "table" or type(rec.files) ~= "table" or rec.workspace ~= real then
    return nil, path .. " is not a valid trust record; run moat trust again"
  end
  return rec
end

local function _mkdir(path)
  if lfs.attributes(path, "mode") == "directory" then return true end
  local ok, err = lfs.mkdir(path)
  if not ok and lfs.attributes(path, "mode") ~= "directory" then
    return nil, ("cannot create %s: %s"):format(path, tostring(err))
  end
  return true
end

-- Records the current files of workspace `dir`. Returns record { workspace, trusted_at,
-- files = {rel = hex}, count, path } | nil, message.
function M.trust(dir)
  local real, err = M.realpath(dir)
  if not real then return nil, err end
  local files, count = M.scan(real)
  if not files then return nil, count end
  local tdir = M.dir()
  local home = tdir:match("^(.*)/[^/]+$")
  local ok, merr = _mkdir(home)
  if ok then ok, merr = _mkdir(tdir) end
  if not ok then return nil, merr end
  local rec = { version = 1, workspace = real, trusted_at = sys.now(), files = files }
  local text = assert(json.encode(rec, { pretty = true }))
  local path = M.record_path(real)
  local wok, werr = sys.write_file(path, text .. "\n", tonumber("600", 8))
  if not wok then return nil, ("cannot write %s: %s"):format(path, tostring(werr)) end
  rec.count, rec.path = count, path
  return rec
end

-- Forgets the trust of workspace `dir`. Returns existed (bool), record path | nil, message.
function M.untrust(dir)
  local real, err = M.realpath(dir)
  if not real then return nil, err end
  local path = M.record_path(real)
  if lfs.attributes(path, "mode") == nil then return false, path end
  local ok, rerr = os.remove(path)
  if not ok then return nil, ("cannot remove %s: %s"):format(path, tostring(rerr)) end
  if M._active and M._active.real == real then M._active = nil end
  return true, path
end

-- Compares the workspace's files with its trust record. Returns
-- { real, state = "none"|"trusted"|"untrusted"|"changed", changed, added, removed, files, record }
-- ("none": no Lua under .moat/ and no record) | nil, message.
function M.status(dir)
  local real, err = M.realpath(dir)
  if not real then return nil, err end
  local files, serr = M.scan(real)
  if not files then return nil, serr end
  local rec, rerr = M.read_record(real)
  local st = { real = real, files = files, record = rec, changed = {}, added = {}, removed = {} }
  if not rec then
    st.state = M.has_lua(files) and "untrusted" or "none"
    st.invalid = rerr
    for rel in pairs(files) do st.added[#st.added + 1] = rel end
    table.sort(st.added)
    return st
  end
  for rel, h in pairs(files) do
    if rec.files[rel] == nil then
      st.added[#st.added + 1] = rel
    elseif rec.files[rel] ~= h then
      st.changed[#st.changed + 1] = rel
    end
  end
  for rel in pairs(rec.files) do
    if files[rel] == nil then st.removed[#st.removed + 1] = rel end
  end
  table.sort(st.changed)
  table.sort(st.added)
  table.sort(st.removed)
  st.state = (#st.changed + #st.added + #st.removed == 0) and "trusted" or "changed"
  return st
end

-- Returns the text for people explaining why the workspace of status `st` is refused.
function M.message(st)
  local lines = {}
  local cmd = "moat trust " .. M.shell_quote(st.real)
  if st.state == "untrusted" then
    lines[1] = ("the workspace %s has Lua under .moat/ that you have not trusted:"):format(st.real)
    for _, rel in ipairs(st.added) do lines[#lines + 1] = "  not trusted: .moat/" .. rel end
    if st.invalid then lines[#lines + 1] = "  (" .. st.invalid .. ")" end
  else
    lines[1] = ("the files under %s/.moat/ changed since you trusted them:"):format(st.real)
    for _, rel in ipairs(st.changed) do lines[#lines + 1] = "  changed:  .moat/" .. rel end
    for _, rel in ipairs(st.added) do lines[#lines + 1] = "  appeared: .moat/" .. rel end
    for _, rel in ipairs(st.removed) do lines[#lines + 1] = "  vanished: .moat/" .. rel end
  end
  lines[#lines + 1] = "moat runs no workspace Lua it has not been told to trust (anything in the container"
    .. " can write there)."
  lines[#lines + 1] = "Review the files, then run: " .. cmd
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
-- for moat.policy). Returns true when workspace Lua is enabled, false when there is none
-- | nil, message naming the files when they are untrusted or changed since `moat trust`.
function M.activate(dir)
  local st, err = M.status(dir)
  if not st then return nil, err end
  if st.state == "none" or not M.has_lua(st.files) then
    -- Nothing under .moat/ would be loaded, so there is nothing to refuse.
    M._active = nil
    return false
  end
  if st.state ~= "trusted" then return nil, M.message(st) end
  M._active = { real = st.real, record = st.record }
  local loader = require("moat.loader")
  if lfs.attributes(st.real .. "/.moat/lua", "mode") == "directory" then
    loader.add_workspace(st.real .. "/.moat/lua", M.check_file)
  end
  return true
end

return M
