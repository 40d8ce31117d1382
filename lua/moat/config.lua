-- Loads moat.yaml (else agent.yaml) into a normalized table, reporting every problem at once.
-- The per-key checks live in moat.config.fields, shared checks in moat.config.check, reading a
-- workspace file safely in moat.config.file.
local yaml = require("moat.c.yaml")
local exit = require("moat.exit")
local check = require("moat.config.check")
local fields = require("moat.config.fields")
local cfile = require("moat.config.file")
local refs = require("moat.config.refs")
local yamlerr = require("moat.config.yamlerr")

local M = {}

M.FILES = { "moat.yaml", "agent.yaml" }
M.RUNTIMES = fields.RUNTIMES

-- Keys the upstream moat understands but this moat does not implement: loaded with a warning.
M.UNIMPLEMENTED = {
  agent = true, version = true, services = true, ports = true, hooks = true, network = true,
  snapshots = true, tracing = true, claude = true, codex = true, gemini = true, mcp = true,
  sandbox = true, ssh = true, proxy = true,
}

local KNOWN = {
  "name", "dependencies", "image", "command", "env", "secrets", "grants", "mounts",
  "runtime", "interactive", "container",
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

-- Escapes control characters (C0, DEL and UTF-8-encoded C1) so that text from a config cannot
-- drive the terminal: ESC becomes \x1b. Local until moat has one shared escaping function.
local function _escape(s)
  s = s:gsub("[%z\1-\31\127]", function(c) return ("\\x%02x"):format(c:byte()) end)
  return (s:gsub("\194([\128-\159])", function(c) return ("\\u%04x"):format(c:byte()) end))
end
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

-- Parses config `text` read from `file` for workspace `dir` (absolute). opts.schemes: array of
-- the backends' schemes for spotting broken references (default: the built-in ones).
-- Returns cfg (with cfg.warnings) | nil, errors (array of "file:line:col: message").
function M.parse(text, file, dir, opts)
  local self = setmetatable({ file = file, errors = {}, warnings = {}, schemes = opts and opts.schemes }, Loader)
  local cfg = { file = file, dir = dir, env = {}, secrets = {}, mounts = {}, dependencies = {}, container = {} }
  local root, err = yaml.load(text, file)
  if not root then return nil, { _escape(yamlerr.translate(err, file, text)) } end
  if root.kind == "map" then
    self:keys(root, cfg)
  elseif root.kind ~= "empty" then
    self:at(root, "the config must be a mapping of keys (name, image, secrets, ...)")
  end
  local env_at = {}
  for _, e in ipairs(cfg.env) do env_at[e.name] = e.where end
  for _, s in ipairs(cfg.secrets) do
    if env_at[s.name] then
      local line, col = s.where:match(":(%d+):(%d+)$")
      self:at({ line = tonumber(line), col = tonumber(col) },
        ("%s is in both env (at %s) and secrets; keep one"):format(s.name, env_at[s.name]))
    end
  end
  if #self.errors > 0 then return nil, self.errors end
  cfg.name = cfg.name or (dir:match("([^/]+)/*$") or "moat"):gsub("[^A-Za-z0-9_.-]", "-")
  cfg.warnings = self.warnings
  return cfg
end

-- Returns the config file for workspace `dir` (moat.yaml, else agent.yaml) or nil. A name that
-- exists in any form (a dangling link, a FIFO) counts: config.load then refuses it by what it is.
function M.find(dir)
  return cfile.find(dir, M.FILES)
end

-- Raises the config failure (exit 78) for `fmt` filled with `...`, each argument escaped.
local function _fail(fmt, ...)
  local args = table.pack(...)
  for i = 1, args.n do args[i] = _escape(tostring(args[i])) end
  exit.fail(exit.CONFIG, fmt:format(table.unpack(args, 1, args.n)))
end

-- Loads the config for workspace `dir`; `file` (optional, from --config) overrides the file
-- name and may be a symlink; a workspace file must be a regular file inside the workspace.
-- opts.schemes as in M.parse. Returns cfg; raises a config failure (exit 78) listing every problem.
function M.load(dir, file, opts)
  local sys = require("moat.c.system")
  local absdir, derr = sys.realpath(dir)
  if not absdir then _fail("workspace %s: %s", dir, derr) end
  local explicit = file ~= nil
  file = file or M.find(dir)
  if not file then
    local cfg = assert(M.parse("", "(none)", absdir))
    cfg.file = nil
    return cfg
  end
  local attr, why = cfile.check(file, not explicit and absdir or nil)
  if not attr then _fail("config file %s %s", file, why) end
  local text, rerr = cfile.read(file, attr, yaml.LIMITS.bytes)
  if not text then _fail("config file %s %s", file, rerr) end
  if #text > yaml.LIMITS.bytes then
    _fail("%s:1:1: file is %s bytes; the limit is 1 MiB", file, math.max(attr.size, #text))
  end
  local cfg, errs = M.parse(text, file, absdir, opts)
  if not cfg then
    exit.fail(exit.CONFIG, ("%d problem%s in %s:\n  %s"):format(#errs, #errs == 1 and "" or "s", _escape(file),
      table.concat(errs, "\n  ")))
  end
  return cfg
end

return M
