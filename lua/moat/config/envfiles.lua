-- Reading the dotenv files of a config (env_files:, the active profile's env_files:) and of
-- the command line (--env-file): every entry joins cfg.secrets with its file:line:col, its
-- value a reference or a plain value, checked like a config's (names, broken references).
-- A name set twice, across files or in a file and the config, is an error naming both places.
local check = require("moat.config.check")
local refs = require("moat.config.refs")

local M = {}

-- Returns the files to read, in order: the config's, the active profile's, the command line's.
local function _list(cfg, cli)
  local out = {}
  for _, f in ipairs(cfg.env_files or {}) do
    out[#out + 1] = { path = f.path, file = f.file, where = f.where, from = "config", guarded = true }
  end
  local prof = cfg.profile and cfg.profiles[cfg.profile]
  for _, f in ipairs(prof and prof.env_files or {}) do
    out[#out + 1] = { path = f.path, file = f.file, where = f.where, from = "profile " .. cfg.profile,
      guarded = true }
  end
  for _, p in ipairs(cli or {}) do
    out[#out + 1] = { path = p, file = p, where = "--env-file", from = "--env-file" }
  end
  return out
end

-- Checks that env file `f` may be read: a regular file and, when named by a workspace config
-- (`inside` is the workspace's realpath), inside the workspace. Returns true | nil, why.
local function _allowed(f, inside)
  local attr, why = require("moat.config.file").check(f.file, f.guarded and inside or nil)
  if not attr then return nil, why end
  if f.guarded and inside then
    local real = require("moat.c.system").realpath(f.file)
    local prefix = inside:gsub("/+$", "") .. "/"
    if not real or real:sub(1, #prefix) ~= prefix then
      return nil, "is outside the workspace; a workspace config names only files inside it"
        .. " (use --env-file FILE for a file of your own)"
    end
  end
  return true
end

-- Adds the entries of one parsed file to cfg.secrets; `taken` maps name -> where.
local function _add(cfg, f, entries, taken, errors, schemes)
  local n = 0
  for _, e in ipairs(entries) do
    local why = check.check_name(e.name)
    local fixed = not why and refs.suspicious_ref(e.value, schemes)
    if why then
      errors[#errors + 1] = ("%s: %s %s"):format(e.key_at, e.name, why)
    elseif taken[e.name] then
      errors[#errors + 1] = ("%s: %s is also set at %s; keep one"):format(e.key_at, e.name, taken[e.name])
    elseif fixed then
      errors[#errors + 1] = ("%s: %s looks like a broken reference: did you mean %s? (a value that only"
        .. " looks like a reference: export it and write %s=env://VAR)"):format(e.where, e.name, fixed, e.name)
    else
      taken[e.name] = e.key_at
      n = n + 1
      cfg.secrets[#cfg.secrets + 1] = { name = e.name, ref = e.value, where = e.where, from = f.from == "--env-file"
        and "--env-file" or "env file" }
    end
  end
  return n
end

-- Reads every env file of `cfg` (after its profile is applied) and of `cli` (array of paths
-- from --env-file, relative to the current directory) into cfg.secrets; cfg.env_files_used
-- lists what was read { path, file, where, from, count }. opts.inside: the workspace's realpath
-- when the config lives in the workspace; opts.schemes as in config.parse.
-- Returns true | nil, errors (array of "file:line:col: message").
function M.load(cfg, cli, opts)
  opts = opts or {}
  local errors, taken = {}, {}
  for _, e in ipairs(cfg.env) do taken[e.name] = e.where end
  for _, s in ipairs(cfg.secrets) do taken[s.name] = s.where end
  cfg.env_files_used, cfg.env_file_hashes = {}, {}
  -- A new list: cfg.base.secrets (the file's own, which trust reads) must not grow.
  cfg.secrets = table.move(cfg.secrets, 1, #cfg.secrets, 1, {})
  for _, f in ipairs(_list(cfg, cli)) do
    local ok, why = _allowed(f, opts.inside)
    local text
    local dotenv = require("moat.dotenv") -- only when there is an env file
    if ok then text, why = dotenv.read(f.file) end
    if not text then
      errors[#errors + 1] = ("%s: env file %s %s"):format(f.where, f.path, why)
    else
      -- Trust pins these bytes, not what the file holds when it looks (moat.trust.guard).
      cfg.env_file_hashes[f.file] = require("moat.c.system").sha256(text)
      local entries, perrs = dotenv.parse(text, f.path)
      for _, e in ipairs(perrs or {}) do errors[#errors + 1] = e end
      f.count = _add(cfg, f, entries or {}, taken, errors, opts.schemes)
      f.guarded = nil
      cfg.env_files_used[#cfg.env_files_used + 1] = f
    end
  end
  if #errors > 0 then return nil, errors end
  return true
end

return M
