-- Loads moat.yaml (else agent.yaml) into a normalized table, reporting every problem at once.
-- The per-key checks live in moat.config.fields, shared checks in moat.config.check, reading a
-- workspace file safely in moat.config.file.
local yaml = require("moat.c.yaml")
local check = require("moat.config.check")
local fields = require("moat.config.fields")
local cfile = require("moat.config.file")
local profile = require("moat.config.profile")
local refs = require("moat.config.refs")

local M = {}

M.FILES = { "moat.yaml", "agent.yaml" }
M.RUNTIMES = fields.RUNTIMES

-- Keys the upstream moat understands but this moat does not implement: loaded with a warning.
M.UNIMPLEMENTED = {
  agent = true, version = true, services = true, ports = true, hooks = true,
  snapshots = true, tracing = true, claude = true, codex = true, gemini = true, mcp = true,
  sandbox = true, ssh = true, proxy = true,
}

local KNOWN = {
  "name", "dependencies", "image", "command", "env", "secrets", "grants", "mounts",
  "runtime", "interactive", "container", "network", "env_files", "profiles",
}

M.check_name = check.check_name
M.check_arg = check.check_arg
M.scalar_type = check.scalar_type

-- Returns the known key closest to `key` (a misspelling or a longer word for it), or nil;
-- `known` (array) replaces the top-level keys.
function M.suggest(key, known)
  if known then return check.suggest(key, known) end
  return check.suggest(key, KNOWN, check.ALIASES)
end

-- Returns the corrected reference when `value` looks like a broken one ("ssm:/x" -> "ssm:///x",
-- " op://v/i/f" -> "op://v/i/f"), else nil. `known_schemes`: array of scheme names
-- (default: op, ssm, env, awssm).
M.suspicious_ref = refs.suspicious_ref

-- Text from a config cannot drive the terminal: every message passes through text.escape.
local _escape = require("moat.text").escape
M._escape = _escape

local Loader = {}
Loader.__index = Loader

-- Records an error at `node`; every message passes through _escape (keys and values in it
-- come from the file).
function Loader:at(node, msg)
  self.errors[#self.errors + 1] = _escape(("%s:%d:%d: %s"):format(self.file, node.line, node.col, msg))
end

function Loader:warn(node, msg)
  self.warnings[#self.warnings + 1] = _escape(("%s:%d:%d: %s"):format(self.file, node.line, node.col, msg))
end

function Loader:where(node)
  return _escape(("%s:%d:%d"):format(self.file, node.line, node.col))
end

function Loader:string(node, what)
  local t = M.scalar_type(node)
  if t ~= "str" then
    self:at(node, ("%s must be a string, not %s"):format(what, t == "map" and "a mapping"
      or t == "seq" and "a list" or t))
    return nil
  end
  return node.value
end

function Loader:bool(node, what)
  if M.scalar_type(node) ~= "bool" then
    self:at(node, what .. " must be true or false")
    return nil
  end
  return node.value:lower() == "true"
end

function Loader:list_of_strings(node, what)
  if node.kind ~= "seq" then
    self:at(node, what .. " must be a list of strings")
    return nil
  end
  local out = {}
  for i, item in ipairs(node.items) do
    local s = self:string(item, ("%s[%d]"):format(what, i))
    if s then out[#out + 1] = s end
  end
  return out
end

function Loader:named_map(node, what, each)
  if node.kind ~= "map" then
    self:at(node, what .. " must be a mapping of NAME: value")
    return {}
  end
  local out = {}
  for _, p in ipairs(node.pairs) do
    local name = p.key.value
    local why = M.check_name(name)
    if why then
      self:at(p.key, ("%s name '%s' %s"):format(what, name, why))
    else
      local item = each(name, p.value, p.key)
      if item then out[#out + 1] = item end
    end
  end
  return out
end

-- Reports every top-level key of `root` (a map node) to its handler, or as unknown.
function Loader:keys(root, cfg)
  for _, p in ipairs(root.pairs) do
    local key = p.key.value
    if type(fields[key]) == "function" then
      fields[key](self, p.value, cfg)
    elseif M.UNIMPLEMENTED[key] then
      self:warn(p.key, ("'%s' is known to the upstream moat but not implemented here; ignored"):format(key))
    else
      local hint = M.suggest(key)
      self:at(p.key, ("unknown key '%s'%s"):format(key, hint and ("; did you mean '" .. hint .. "'?")
        or ("; the keys are " .. table.concat(KNOWN, ", "))))
    end
  end
end

-- Reports names that are in both env and secrets (after a profile is merged).
local function _both(cfg, errors)
  local env_at = {}
  for _, e in ipairs(cfg.env) do env_at[e.name] = e.where end
  for _, s in ipairs(cfg.secrets) do
    if env_at[s.name] then
      errors[#errors + 1] = ("%s: %s is in both env (at %s) and secrets; keep one"):format(s.where, s.name,
        env_at[s.name])
    end
  end
end

-- Parses config `text` read from `file` for workspace `dir` (absolute). opts.schemes: array of
-- the backends' schemes for spotting broken references (default: the built-in ones);
-- opts.profile: the profile to merge over the base; opts.base: the directory relative
-- env_files are relative to (default `dir`). Returns cfg (with cfg.warnings) | nil, errors
-- (array of "file:line:col: message"). The top level of cfg is the file's own words (what trust
-- hashes); cfg.effective is what runs: a copy with the profile merged and, after config.load,
-- the env files' entries in its secrets. Shapes: cfg.base = the file's own top-level { secrets,
-- env, mounts, image, runtime, network, env_files } before any profile; cfg.profiles = name -> { where,
-- set, secrets, env, env_files, mounts, image, runtime, network } (all of them, raw);
-- cfg.env_files = { {path, file, where} } (the top level's); secrets entries are
-- { name, ref, where, from, optional, default } (default: a plain value, never shown).
function M.parse(text, file, dir, opts)
  opts = opts or {}
  local self = setmetatable({ file = file, errors = {}, warnings = {}, schemes = opts.schemes, base = opts.base },
    Loader)
  local cfg = { file = file, dir = dir, env = {}, secrets = {}, mounts = {}, dependencies = {}, container = {},
    env_files = {}, profiles = {}, profile_names = {}, from = {} }
  local root, err = yaml.load(text, file)
  if not root then return nil, { _escape(require("moat.config.yamlerr").translate(err, file, text)) } end
  if root.kind == "map" then
    self:keys(root, cfg)
  elseif root.kind ~= "empty" then
    self:at(root, "the config must be a mapping of keys (name, image, secrets, ...)")
  end
  if #self.errors > 0 then return nil, self.errors end
  cfg.name = cfg.name or (dir:match("([^/]+)/*$") or "moat"):gsub("[^A-Za-z0-9_.-]", "-")
  cfg.warnings = self.warnings
  cfg.base = { secrets = cfg.secrets, env = cfg.env, mounts = cfg.mounts, image = cfg.image,
    runtime = cfg.runtime, network = cfg.network, env_files = cfg.env_files }
  -- What runs is a copy: the top level stays the file's own words, which trust hashes.
  local eff = {}
  for k, v in pairs(cfg) do eff[k] = v end
  cfg.effective = eff
  local errors = {}
  if opts.profile then
    local _, perrs = profile.apply(eff, opts.profile)
    errors = perrs or errors
  end
  _both(eff, errors)
  if #errors > 0 then
    for i, e in ipairs(errors) do errors[i] = _escape(e) end
    return nil, errors
  end
  return cfg
end

-- Returns the profile asked for: `flag` (--profile), else a non-empty MOAT_PROFILE in
-- `environ` (a map), else nil.
function M.chosen_profile(flag, environ)
  if flag then return flag end
  local v = environ and environ.MOAT_PROFILE
  if v and v ~= "" then return v end
  return nil
end

-- Returns the config file for workspace `dir` (moat.yaml, else agent.yaml) or nil. A name that
-- exists in any form (a dangling link, a FIFO) counts: config.load then refuses it by what it is.
function M.find(dir)
  return cfile.find(dir, M.FILES)
end

-- Inside M.load a refusal is raised as a Refusal and returned by M.load as nil, message.
local Refusal = {}

-- Raises the refusal for `fmt` filled with `...`, each argument escaped.
local function _fail(fmt, ...)
  local args = table.pack(...)
  for i = 1, args.n do args[i] = _escape(tostring(args[i])) end
  error(setmetatable({ message = fmt:format(table.unpack(args, 1, args.n)) }, Refusal), 0)
end

-- Raises the refusal listing `errs` (escaped messages) found in `what`.
local function _problems(errs, what)
  error(setmetatable({ message = ("%d problem%s in %s:\n  %s"):format(#errs, #errs == 1 and "" or "s",
    _escape(what), table.concat(errs, "\n  ")) }, Refusal), 0)
end

-- Reads the env files of `cfg` and of opts.env_files into cfg.secrets; raises on a problem.
local function _env_files(cfg, opts, inside)
  local ok, errs = require("moat.config.envfiles").load(cfg.effective, opts.env_files, { inside = inside,
    schemes = opts.schemes })
  if ok then return end
  for i, e in ipairs(errs) do errs[i] = _escape(e) end
  _problems(errs, "env files")
end

-- Loads the config for workspace `dir`; `file` (optional, from --config) overrides the file
-- name and may be a symlink; a workspace file must be a regular file inside the workspace.
-- opts: schemes as in M.parse; profile (merged over the base); env_files (array of paths from
-- --env-file). Returns cfg (see M.parse; cfg.effective.env_files_used lists the env files read)
-- | nil, message listing every problem, "config".
function M.load(dir, file, opts)
  local ok, cfg = pcall(M._load, dir, file, opts)
  if ok then return cfg end
  if getmetatable(cfg) == Refusal then return nil, cfg.message, "config" end
  error(cfg, 0)
end

function M._load(dir, file, opts)
  opts = opts or {}
  local sys = require("moat.c.system")
  local absdir, derr = sys.realpath(dir)
  if not absdir then _fail("workspace %s: %s", dir, derr) end
  local explicit = file ~= nil
  file = file or M.find(dir)
  if not file then
    if opts.profile then
      _fail("no profile '%s': %s has no moat.yaml or agent.yaml (profiles live in the config)", opts.profile, dir)
    end
    local cfg = assert(M.parse("", "(none)", absdir))
    cfg.file, cfg.effective.file = nil, nil
    _env_files(cfg, opts)
    return cfg
  end
  local attr, why = cfile.check(file, not explicit and absdir or nil)
  if not attr then _fail("config file %s %s", file, why) end
  -- The size as examined, before the read (which refuses an oversized file in its own words).
  if attr.size > yaml.LIMITS.bytes then
    _fail("%s:1:1: file is %s bytes; the limit is 1 MiB", file, attr.size)
  end
  local text, rerr = cfile.read(file, attr, yaml.LIMITS.bytes)
  if not text then _fail("config file %s %s", file, rerr) end
  local fdir = file:match("^(.*)/[^/]*$") or "."
  local base = sys.realpath(fdir == "" and "/" or fdir) or absdir
  local cfg, errs = M.parse(text, file, absdir, { schemes = opts.schemes, profile = opts.profile, base = base })
  if not cfg then _problems(errs, file) end
  _env_files(cfg, opts, not explicit and absdir or nil)
  return cfg
end

return M
