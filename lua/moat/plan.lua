-- The plan: a loaded config plus command-line additions, with every secret reference parsed
-- by its backend. This is what policy scripts see and what moat.secrets resolves. Plain values
-- are handed back beside the plan, never inside it, so showing a plan never shows them.
local config = require("moat.config")
-- Loaded when a reference is looked at: a run with no secrets does not need it.
local function _registry() return require("moat.registry") end
local text = require("moat.text")

local M = {}

-- Names that belong to services with dedicated grants upstream (network-layer injection).
M.GRANT_NAMES = {
  GITHUB_TOKEN = "GitHub", GH_TOKEN = "GitHub", ANTHROPIC_API_KEY = "Anthropic",
  OPENAI_API_KEY = "OpenAI", AWS_ACCESS_KEY_ID = "AWS", AWS_SECRET_ACCESS_KEY = "AWS",
  AWS_SESSION_TOKEN = "AWS",
}

M.SENSITIVE = { "KEY", "TOKEN", "SECRET", "PASSWORD" }

-- Returns scheme | nil for `ref`, and whether it looks like a reference at all (contains "://").
function M.scheme(ref)
  local scheme = ref:match("^([A-Za-z][A-Za-z0-9+.-]*)://")
  return scheme, ref:find("://", 1, true) ~= nil
end

-- Returns true when `name` looks like it holds a credential.
function M.sensitive(name)
  local up = name:upper()
  for _, w in ipairs(M.SENSITIVE) do
    if up:find(w, 1, true) then return true end
  end
  return false
end

local function _split(entry, what)
  local name, value = entry:match("^([^=]*)=(.*)$")
  if not name then
    return nil, ("%s '%s' must be NAME=%s"):format(what, text.show(entry:match("^[^=]*")),
      what == "--secret" and "REF" or "VALUE")
  end
  return name, value
end

-- Parses one secret's reference; returns the entry fields | nil, problem.
local function _parse(name, ref)
  local scheme, urlish = M.scheme(ref)
  if not urlish then
    return { backend = "plain", plain = true, parsed = {} }
  end
  if not scheme then
    return nil, ("secret %s looks like a URL but has no valid scheme (letters, digits, '+', '.', '-');"
      .. " to pass a literal value containing '://', export it and use env://VAR"):format(name)
  end
  local mod, err, why_not = _registry().get(scheme)
  if not mod then
    if why_not == "broken" then
      return nil, ("secret %s: the backend for %s:// cannot be loaded: %s"):format(name, scheme, err)
    end
    local known = _registry().schemes()
    return nil, ("secret %s: unknown scheme '%s://' (known backends: %s); to pass a literal URL as"
      .. " the value, export it and write %s: env://VAR"):format(name, scheme, table.concat(known, ", "), name)
  end
  if ref:find("^%s") or ref:find("%s$") then
    return nil, ("secret %s: reference '%s' has whitespace at its start or end"):format(name, text.show(ref))
  end
  if ref:find("[%z\1-\31\127]") then
    return nil, ("secret %s: reference '%s' contains control characters"):format(name, text.show(ref))
  end
  local parsed, why = {}, nil
  if mod.parse then
    local ok, p, w = pcall(mod.parse, ref)
    if not ok then
      parsed, why = nil, "the backend's parse raised an error: " .. tostring(p)
    else
      parsed, why = p, w
    end
  end
  if not parsed then
    return nil, ("secret %s: malformed %s reference '%s': %s"):format(name, scheme, text.show(ref),
      why or "refused by the backend")
  end
  return { backend = scheme, plain = false, parsed = parsed }
end

-- Merges `base` (config entries {name, …}) with command-line entries "NAME=<field>" of option
-- `what`: a later entry replaces an earlier one of the same name. `refuse(value)` -> why | nil.
-- Returns the merged list and an index by name.
local function _merge(base, entries, what, field, refuse, errors)
  local out, at = {}, {}
  for _, e in ipairs(base or {}) do
    out[#out + 1] = { name = e.name, [field] = e[field], where = e.where, from = e.from, optional = e.optional,
      default = e.default }
    at[e.name] = #out
  end
  for _, entry in ipairs(entries or {}) do
    local name, value = _split(entry, what)
    local bad = name and config.check_name(name)
    local why = name and (bad and ("'%s' %s"):format(text.show(name), bad) or refuse(value))
    if not name then
      errors.usage = value
    elseif why then
      -- Typed on the command line: a usage error quoting what was typed, not a config problem.
      errors.usage = ("%s %s: %s"):format(what, text.show(entry), why)
    else
      out[at[name] or #out + 1] = { name = name, [field] = value, where = what ~= "-e" and what or nil }
      at[name] = at[name] or #out
    end
  end
  return out, at
end

-- The -e entries that assign a value (NAME=VALUE); the others pass a host variable through.
local function _assigns(extra)
  local out = {}
  for _, entry in ipairs(extra.env or {}) do
    if entry:find("=", 1, true) then out[#out + 1] = entry end
  end
  return out
end

local function _env(cfg, extra, errors)
  return _merge(cfg.env, extra.env, "-e", "value", function(v)
    return v:find("%z") and "the value must not contain NUL bytes" or nil
  end, errors)
end

-- `-e NAME` without "=" passes the host's NAME: it becomes the secret NAME: env://NAME (and
-- replaces a config entry of that name). Returns env, env_at, wanted with those applied.
local function _passthrough(extra, env, env_at, wanted, errors)
  for _, entry in ipairs(extra.env or {}) do
    local why = not entry:find("=", 1, true) and config.check_name(entry)
    if why then
      errors.usage = ("-e %s: '%s' %s"):format(text.show(entry), text.show(entry), why)
    elseif why == nil then
      local kept = {}
      for _, e in ipairs(env) do
        if e.name ~= entry then kept[#kept + 1] = e end
      end
      env, env_at[entry] = kept, nil
      local at = #wanted + 1
      for i, s in ipairs(wanted) do
        if s.name == entry then at = i end
      end
      wanted[at] = { name = entry, ref = "env://" .. entry, where = "-e" }
    end
  end
  return env, env_at, wanted
end

local function _wanted(cfg, extra, errors)
  return (_merge(cfg.secrets, extra.secrets, "--secret", "ref", function(v)
    if v == "" then return "the reference is empty" end
    -- A typo in a reference must never become a plain value (ssm:/x, op//v/i/f, " op://…").
    local fixed = config.suspicious_ref(v, _registry().schemes())
    return fixed and ("'%s' looks like a broken reference: did you mean %s?"):format(text.show(v), text.show(fixed))
  end, errors))
end

local function _warn_for(s, plain, warnings)
  if plain and M.sensitive(s.name) then
    warnings[#warnings + 1] = ("secret %s is a plain value (%s); keep credentials in a backend"
      .. " (op://, ssm://, env://)"):format(s.name, s.where or "config")
  end
  if M.GRANT_NAMES[s.name] then
    warnings[#warnings + 1] = ("%s is a credential for %s: it will be visible to everything in the"
      .. " container; network-layer injection (a proxy adding it to requests) is the safer design")
      :format(s.name, M.GRANT_NAMES[s.name])
  end
end

-- Returns nil when the command-line entries of `extra` (--secret NAME=REF, -e NAME[=VALUE])
-- are well-formed, else the usage error: checked before anything is loaded or trusted.
function M.usage(extra)
  extra = extra or {}
  local errors, none = {}, { env = {}, secrets = {} }
  local env, env_at = _env(none, { env = _assigns(extra) }, errors)
  _passthrough(extra, env, env_at, _wanted(none, extra, errors), errors)
  return errors.usage
end

-- Builds the plan from `cfg` (config.load) and `extra` = { secrets = {"NAME=REF"}, env = {"NAME=VALUE"
-- or "NAME" (the host's NAME, as NAME: env://NAME)} }. Secret entries: { name, ref, where, backend,
-- plain, parsed, from, optional, has_default }. Returns plan, plain (map NAME -> plain value, and
-- the defaults) | nil, message listing every problem, "config" | "usage".
function M.build(cfg, extra)
  -- What runs: the profile merged, the env files read (the top level is the file's own words).
  cfg = cfg.effective or cfg
  extra = extra or {}
  local errors, warnings = {}, {}
  for _, w in ipairs(cfg.warnings or {}) do warnings[#warnings + 1] = w end
  local env, env_at = _env(cfg, { env = _assigns(extra) }, errors)
  local wanted = _wanted(cfg, extra, errors)
  env, env_at, wanted = _passthrough(extra, env, env_at, wanted, errors)
  if errors.usage then return nil, errors.usage, "usage" end

  local secrets, plain = {}, {}
  for _, s in ipairs(wanted) do
    local fields, why = _parse(s.name, s.ref)
    if env_at[s.name] then
      errors[#errors + 1] = ("%s is both a plain environment variable and a secret (%s); keep one")
        :format(s.name, s.where)
    elseif not fields then
      errors[#errors + 1] = (s.where and (s.where .. ": ") or "") .. why
    else
      local entry = { name = s.name, ref = s.ref, where = s.where, backend = fields.backend,
        plain = fields.plain, parsed = fields.parsed, from = s.from, optional = s.optional,
        has_default = s.default ~= nil or nil }
      if fields.plain then
        plain[s.name] = s.ref
        entry.ref, entry.has_default = "(plain value)", nil
      elseif s.default then
        -- A default is a plain value: beside the plan like the others, used only on not found.
        plain[s.name] = s.default
      end
      _warn_for(s, fields.plain, warnings)
      secrets[#secrets + 1] = entry
    end
  end
  if #errors > 0 then
    return nil, ("%s with secrets:\n  %s"):format(text.count(#errors, "problem"), table.concat(errors, "\n  ")),
      "config"
  end
  return {
    name = cfg.name, workspace = cfg.dir, image = cfg.image, command = cfg.command,
    runtime = cfg.runtime, interactive = cfg.interactive, container = cfg.container or {},
    mounts = cfg.mounts or {}, env = env, secrets = secrets, warnings = warnings,
  }, plain
end

return M
