-- `moat backends [DIR] [--json]`: every secret backend moat can use — built-in, from
-- MOAT_LUA_PATH, the user's and the site's directories and a trusted workspace — with its
-- scheme, description, file, which file overrides which, and whether its check says it is usable.
local args = require("moat.args")
local cli = require("moat.cli")

local M = {}

local SPEC = { ["--json"] = "flag" }
M.SPEC = SPEC

-- One line of help per SPEC option (moat help backends, the man page and completion read it).
M.OPTIONS = {
  { "--json", "print JSON" },
}

M.PLAIN = { scheme = "plain", kind = "builtin", active = true, usable = true,
  description = "a value without ://, passed through as is (pseudo-backend; warns for sensitive names)" }

-- Loads a shadowed backend file on its own (never through require) just for its description.
local function _describe_file(file)
  local loader = require("moat.loader")
  local chunk, err = loader.loadfile(file)
  if not chunk then return nil, err end
  local ok, mod = pcall(chunk, "moat.backends")
  if not ok then return nil, tostring(mod) end
  if type(mod) ~= "table" then return nil, "does not return a table" end
  return mod.description or "(no description)"
end

-- The search directories, with an untrusted workspace shown where it would sit: just before
-- the built-in modules.
local function _dirs(untrusted)
  local dirs = {}
  for _, d in ipairs(require("moat.loader").dirs) do dirs[#dirs + 1] = d end
  if untrusted then
    local pos = #dirs + 1
    for i, d in ipairs(dirs) do if d.kind == "builtin" then pos = i break end end
    table.insert(dirs, pos, { dir = untrusted.real .. "/.moat/lua", kind = "workspace", untrusted = untrusted })
  end
  return dirs
end

local function _untrusted_entry(e, st)
  e.usable = false
  e.description = "(not loaded: the workspace is not trusted)"
  e.reason = ("the workspace's .moat/ is %s"):format(st.state == "changed"
    and "changed since it was trusted" or "not trusted")
  e.fix = "review it, then run: moat trust " .. require("moat.text").quote_word(st.real)
end

-- Loads each active backend and asks its check whether it is usable.
local function _check(winner)
  local registry = require("moat.registry")
  local plan = { secrets = {} }
  for scheme, e in pairs(winner) do
    local mod, err = registry.get(scheme)
    local origin = require("moat.loader").origin["moat.backends." .. scheme]
    if origin then e.file, e.kind = origin.file, origin.kind end
    if mod then
      e.description = mod.description or "(no description)"
      plan.secrets[#plan.secrets + 1] = { name = scheme, backend = scheme }
    else
      e.description, e.usable, e.reason = "(cannot be loaded)", false, tostring(err)
      e.fix = "fix or remove " .. e.file
    end
  end
  table.sort(plan.secrets, function(a, b) return a.backend < b.backend end)
  if #plan.secrets == 0 then return end
  for _, c in ipairs(require("moat.secrets").check(plan, { timeout = 20 })) do
    local e = winner[c.backend]
    e.usable, e.reason, e.fix = c.ok, c.reason, c.fix
  end
end

-- Returns the list of backends: { {scheme, description, file, kind, active, overridden_by,
-- usable, reason, fix} }, sorted by scheme with the active one first. `untrusted` is a
-- workspace status whose backends are listed but not loaded.
function M.list(untrusted)
  local entries, winner = {}, {}
  for _, e in ipairs(require("moat.registry").files(_dirs(untrusted))) do
    if e.dir.untrusted then
      _untrusted_entry(e, e.dir.untrusted)
    elseif e.active then
      winner[e.scheme] = e
    else
      -- Workspace files load only through the trust-checked loader, never on the side.
      e.description = e.kind ~= "workspace" and _describe_file(e.file) or "(not loaded)"
    end
    e.dir = nil
    entries[#entries + 1] = e
  end
  _check(winner)
  local plain = {}
  for k, v in pairs(M.PLAIN) do plain[k] = v end
  entries[#entries + 1] = plain
  local order = {}
  for i, e in ipairs(entries) do order[e] = i end
  table.sort(entries, function(a, b)
    if a.scheme ~= b.scheme then return a.scheme < b.scheme end
    if a.active ~= b.active then return a.active end
    return order[a] < order[b]
  end)
  return entries
end

local function _print_json(entries)
  local json = require("moat.c.json")
  local list = {}
  for i, e in ipairs(entries) do
    list[i] = { scheme = e.scheme, description = e.description or json.null, file = e.file or json.null,
      kind = e.kind, active = e.active, overridden_by = e.overridden_by or json.null,
      usable = e.active and e.usable or false, reason = e.reason or json.null, fix = e.fix or json.null }
  end
  io.stdout:write(assert(json.encode(json.array(list), { pretty = true })), "\n")
end

local function _print_text(entries)
  for _, e in ipairs(entries) do
    local state
    if e.overridden_by then state = "overridden"
    elseif e.usable then state = "usable"
    else state = "not usable" end
    io.stdout:write(("%-10s %-9s %-10s %s\n"):format(e.scheme, e.kind, state, e.description or ""))
    if e.file then io.stdout:write(("%21s file: %s\n"):format("", e.file)) end
    if e.overridden_by then io.stdout:write(("%21s overridden by: %s\n"):format("", e.overridden_by)) end
    if not e.overridden_by and not e.usable and e.reason then
      io.stdout:write(("%21s why: %s\n"):format("", e.reason))
      if e.fix then io.stdout:write(("%21s fix: %s\n"):format("", e.fix)) end
    end
  end
end

-- Entry point: returns the exit status.
function M.main(argv, ctx)
  local opts, pos, rest = args.parse(argv, SPEC)
  if not opts then cli.usage_error(ctx, pos) end
  if rest or #pos > 1 then cli.usage_error(ctx, "moat backends takes at most one DIR") end
  local trust = require("moat.trust")
  local lfs = require("lfs")
  local dir = pos[1] or "."
  local untrusted
  if pos[1] or lfs.attributes("./.moat", "mode") == "directory" then
    local st, err = trust.status(dir)
    if not st then require("moat.exit").fail_kind(err, "usage") end
    if st.lua_ok then
      trust.activate(st.real, st)
    else
      untrusted = st
    end
  end
  local entries = M.list(untrusted)
  if opts.json then _print_json(entries) else _print_text(entries) end
  if untrusted then require("moat.ui").warn(trust.message(untrusted)) end
  return 0
end

return M
