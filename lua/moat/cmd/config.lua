-- `moat config [DIR] [--json] [--config FILE]`: print the loaded, normalized config.
local args = require("moat.args")
local config = require("moat.config")
local cli = require("moat.cli")
local ui = require("moat.ui")

local M = {}

local SPEC = { ["--json"] = "flag", ["--config"] = "value", ["--profile"] = "value", ["--env-file"] = "list" }
M.SPEC = SPEC

-- One line of help per SPEC option (moat help config, the man page and completion read it).
M.OPTIONS = {
  { "--json", "print JSON" },
  { "--config FILE", "read FILE instead of DIR/moat.yaml" },
  { "--profile P", "merge profile P over the base and say where each entry came from (default: MOAT_PROFILE)" },
  { "--env-file FILE", "also read a dotenv file, as run does (repeatable)" },
}

-- Returns how a secret's reference is shown: the reference itself, or "(plain value)" for a
-- plain value, which is the secret and never printed.
function M.shown_ref(ref)
  if ref:find("://", 1, true) then return ref end
  return "(plain value)"
end

-- Returns where entry `e` came from: "config", "profile NAME" or, for a dotenv entry, its file:line:col.
function M.origin(e)
  if e.from == "env file" or e.from == "--env-file" then return e.where end
  return e.from or "config"
end

-- Returns the origins of the config's entries: { secrets = {NAME = origin}, env = {…},
-- mounts = {container path = origin}, image/runtime/network = origin }.
local function _origins(cfg)
  local o = { secrets = {}, env = {}, mounts = {} }
  for _, s in ipairs(cfg.secrets) do o.secrets[s.name] = M.origin(s) end
  for _, e in ipairs(cfg.env) do o.env[e.name] = M.origin(e) end
  for _, m in ipairs(cfg.mounts) do o.mounts[m.container] = M.origin(m) end
  for _, k in ipairs({ "image", "runtime", "network" }) do
    if cfg[k] then o[k] = (cfg.from or {})[k] or "config" end
  end
  return o
end

-- Returns the config as a plain table, in the order and shape `moat config --json` prints.
-- Secrets map to their reference ("(plain value)" for a plain one); defaults are never shown.
function M.view(cfg)
  local json = require("moat.c.json")
  -- The image a run would use: the config's, else the one its dependencies pick.
  local image = cfg.image or require("moat.images").pick(cfg.dependencies)
  local env, secrets, mounts, optional, defaults = {}, {}, json.array({}), json.array({}), json.array({})
  for _, e in ipairs(cfg.env) do env[e.name] = e.value end
  for _, s in ipairs(cfg.secrets) do
    secrets[s.name] = M.shown_ref(s.ref)
    if s.optional then optional[#optional + 1] = s.name end
    if s.default then defaults[#defaults + 1] = s.name end
  end
  for _, m in ipairs(cfg.mounts) do
    mounts[#mounts + 1] = { host = m.host, container = m.container, readonly = m.ro }
  end
  local files = json.array({})
  for _, f in ipairs(cfg.env_files_used or {}) do
    files[#files + 1] = { path = f.path, from = f.from, entries = f.count }
  end
  return {
    file = cfg.file or json.null, workspace = cfg.dir, name = cfg.name,
    profile = cfg.profile or json.null, profiles = json.array(cfg.profile_names or {}),
    image = image, image_from = cfg.image and ((cfg.from or {}).image or "config")
      or (#cfg.dependencies > 0 and "dependencies" or "default"),
    dependencies = json.array(cfg.dependencies),
    command = cfg.command and json.array(cfg.command) or json.null,
    env = env, secrets = secrets, optional = optional, defaults = defaults, env_files = files,
    mounts = mounts, runtime = cfg.runtime or json.null, network = cfg.network or json.null,
    interactive = cfg.interactive or false, container = cfg.container, origins = _origins(cfg),
  }
end

local function _quote(s)
  if s:match("^[%w_./@:+-]+$") and not s:match("^[-:]") then return s end
  return '"' .. require("moat.text").escape(s:gsub('[\\"]', "\\%0"):gsub("\n", "\\n")) .. '"'
end

-- Returns the "  # …" comment for entry `e`: its origin when not the base, optional, default.
local function _note(e)
  local notes = {}
  local origin = M.origin(e)
  if origin ~= "config" then notes[#notes + 1] = origin end
  if e.optional then notes[#notes + 1] = "optional" end
  if e.default then notes[#notes + 1] = "default if not found" end
  if #notes == 0 then return "" end
  return "  # " .. require("moat.text").escape(table.concat(notes, ", "))
end

local function _entries(cfg, put)
  for _, section in ipairs({ "env", "secrets" }) do
    if #cfg[section] > 0 then
      put(section, ":")
      for _, e in ipairs(cfg[section]) do
        local shown = e.ref and M.shown_ref(e.ref) or e.value
        put("  ", e.name, ": ", shown == "(plain value)" and e.ref and shown or _quote(shown), _note(e))
      end
    end
  end
  if #cfg.mounts > 0 then
    put("mounts:")
    for _, m in ipairs(cfg.mounts) do
      put("  - ", _quote(m.host .. ":" .. m.container .. (m.ro and ":ro" or "")), _note(m))
    end
  end
  if #(cfg.env_files_used or {}) > 0 then
    put("env_files:")
    for _, f in ipairs(cfg.env_files_used) do
      put("  - ", _quote(f.path), "  # ", f.from, ", ", f.count, f.count == 1 and " entry" or " entries")
    end
  end
end

local function _text(cfg)
  local out = {}
  local function put(...) out[#out + 1] = table.concat({ ... }) end
  local function from(k) return cfg.from and cfg.from[k] and ("  # " .. cfg.from[k]) or "" end
  put("# ", cfg.file or "(no moat.yaml or agent.yaml: defaults)")
  put("workspace: ", _quote(cfg.dir))
  put("name: ", _quote(cfg.name))
  if cfg.profile then put("profile: ", _quote(cfg.profile)) end
  if #(cfg.profile_names or {}) > 0 then put("# profiles: ", table.concat(cfg.profile_names, ", ")) end
  if cfg.image then
    put("image: ", _quote(cfg.image), from("image"))
  else
    put("image: ", _quote((require("moat.images").pick(cfg.dependencies))),
      #cfg.dependencies > 0 and "  # from dependencies" or "  # moat's default image")
  end
  if #cfg.dependencies > 0 then
    put("dependencies:")
    for _, d in ipairs(cfg.dependencies) do put("  - ", _quote(d)) end
  end
  if cfg.command then
    local q = {}
    for i, a in ipairs(cfg.command) do q[i] = _quote(a) end
    put("command: [", table.concat(q, ", "), "]")
  end
  _entries(cfg, put)
  if cfg.runtime then put("runtime: ", cfg.runtime, from("runtime")) end
  if cfg.network then put("network: ", cfg.network, from("network")) end
  if cfg.interactive then put("interactive: true") end
  if cfg.container.memory or cfg.container.cpus then
    put("container:")
    if cfg.container.memory then put("  memory: ", tostring(cfg.container.memory)) end
    if cfg.container.cpus then put("  cpus: ", tostring(cfg.container.cpus)) end
  end
  return table.concat(out, "\n") .. "\n"
end

-- Entry point: returns the exit status.
function M.main(argv, ctx)
  local opts, pos, rest = args.parse(argv, SPEC)
  if not opts then cli.usage_error(ctx, pos) end
  if rest or #pos > 1 then cli.usage_error(ctx, "moat config takes at most one DIR") end
  local loaded, err, kind = config.load(pos[1] or ".", opts.config, { env_files = opts.env_file,
    profile = config.chosen_profile(opts.profile, require("moat.c.system").environ()) })
  if not loaded then require("moat.exit").fail_kind(err, kind) end
  local cfg = loaded.effective
  for _, w in ipairs(cfg.warnings) do ui.warn(w) end
  if opts.json then
    local json = require("moat.c.json")
    io.stdout:write(assert(json.encode(M.view(cfg), { pretty = true })), "\n")
  else
    io.stdout:write(_text(cfg))
  end
  return 0
end

return M
