-- `moat config [DIR] [--json] [--config FILE]`: print the loaded, normalized config.
local args = require("moat.args")
local config = require("moat.config")
local cli = require("moat.cli")
local ui = require("moat.ui")

local M = {}

local SPEC = { ["--json"] = "flag", ["--config"] = "value" }

-- Returns how a secret's reference is shown: the reference itself, or "(plain value)" for a
-- plain value, which is the secret and never printed.
function M.shown_ref(ref)
  if ref:find("://", 1, true) then return ref end
  return "(plain value)"
end

-- Returns the config as a plain table, in the order and shape `moat config --json` prints.
function M.view(cfg)
  local json = require("moat.c.json")
  local env, secrets, mounts = {}, {}, json.array({})
  for _, e in ipairs(cfg.env) do env[e.name] = e.value end
  for _, s in ipairs(cfg.secrets) do secrets[s.name] = M.shown_ref(s.ref) end
  for _, m in ipairs(cfg.mounts) do
    mounts[#mounts + 1] = { host = m.host, container = m.container, readonly = m.ro }
  end
  return {
    file = cfg.file or json.null,
    workspace = cfg.dir,
    name = cfg.name,
    image = cfg.image or json.null,
    dependencies = json.array(cfg.dependencies),
    command = cfg.command and json.array(cfg.command) or json.null,
    env = env,
    secrets = secrets,
    mounts = mounts,
    runtime = cfg.runtime or json.null,
    interactive = cfg.interactive or false,
    container = cfg.container,
  }
end

local function _quote(s)
  if s:match("^[%w_./@:+-]+$") and not s:match("^[-:]") then return s end
  return '"' .. s:gsub('[\\"]', "\\%0"):gsub("\n", "\\n"):gsub("[%z\1-\31\127]", function(c)
    return ("\\x%02x"):format(c:byte())
  end) .. '"'
end

local function _text(cfg)
  local out = {}
  local function put(...) out[#out + 1] = table.concat({ ... }) end
  put("# ", cfg.file or "(no moat.yaml or agent.yaml: defaults)")
  put("workspace: ", _quote(cfg.dir))
  put("name: ", _quote(cfg.name))
  if cfg.image then put("image: ", _quote(cfg.image)) end
  if #cfg.dependencies > 0 then
    put("dependencies:")
    for _, d in ipairs(cfg.dependencies) do put("  - ", _quote(d)) end
  end
  if cfg.command then
    local q = {}
    for i, a in ipairs(cfg.command) do q[i] = _quote(a) end
    put("command: [", table.concat(q, ", "), "]")
  end
  for _, section in ipairs({ "env", "secrets" }) do
    if #cfg[section] > 0 then
      put(section, ":")
      for _, e in ipairs(cfg[section]) do
        local shown = e.ref and M.shown_ref(e.ref) or e.value
        put("  ", e.name, ": ", shown == "(plain value)" and e.ref and shown or _quote(shown))
      end
    end
  end
  if #cfg.mounts > 0 then
    put("mounts:")
    for _, m in ipairs(cfg.mounts) do
      put("  - ", _quote(m.host .. ":" .. m.container .. (m.ro and ":ro" or "")))
    end
  end
  if cfg.runtime then put("runtime: ", cfg.runtime) end
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
  local cfg = config.load(pos[1] or ".", opts.config)
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
