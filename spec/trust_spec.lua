-- moat.trust, `moat trust`/`moat untrust`, and workspace Lua: refused until trusted, loaded while
-- every hash matches, refused again once anything under .moat/ changes. Bytecode never loads.
local trust = require("moat.trust")
local auditlog = require("moat.auditlog")
local sys = require("moat.c.system")
local lfs = require("lfs")
local json = require("moat.c.json")
local t = require("support.moat")

local WS_OP = [[
local M = { scheme = "op", description = "workspace op override" }
function M.parse(ref) return {} end
function M.resolve(requests, ctx)
  for _, r in ipairs(requests) do ctx.ok(r, "from-workspace") end
end
return M
]]

describe("moat.trust", function()
  local dir, ws
  before_each(function()
    dir = t.tmpdir()
    auditlog.set_home(dir .. "/home")
    ws = dir .. "/ws"
    t.write(ws .. "/moat.yaml", "name: w\n")
  end)
  after_each(function()
    auditlog.set_home(nil)
    trust._active = nil
    t.rmtree(dir)
  end)

  it("needs nothing when .moat/ holds no Lua", function()
    assert.equal("none", trust.status(ws).state)
    t.write(ws .. "/.moat/notes.txt", "hi")
    assert.equal("none", trust.status(ws).state)
    assert.is_false(trust.activate(ws))
  end)

  it("refuses untrusted workspace Lua, naming the files and the command", function()
    t.write(ws .. "/.moat/lua/moat/backends/op.lua", WS_OP)
    local st = trust.status(ws)
    assert.equal("untrusted", st.state)
    local ok, msg = trust.activate(ws)
    assert.is_nil(ok)
    assert.truthy(msg:find(".moat/lua/moat/backends/op.lua", 1, true))
    assert.truthy(msg:find("moat trust " .. sys.realpath(ws), 1, true))
  end)

  it("records every file's SHA-256 in a private file named after the workspace's real path", function()
    t.write(ws .. "/.moat/lua/moat/backends/op.lua", WS_OP)
    t.write(ws .. "/.moat/policy.lua", "return function() end\n")
    local rec = assert(trust.trust(ws .. "/./"))
    local real = sys.realpath(ws)
    assert.equal(dir .. "/home/trust/" .. sys.sha256(real) .. ".json", rec.path)
    assert.equal("rw-------", lfs.attributes(rec.path, "permissions"))
    local saved = json.decode(io.open(rec.path):read("a"))
    assert.equal(real, saved.workspace)
    assert.equal(sys.sha256(WS_OP), saved.files["lua/moat/backends/op.lua"])
    assert.equal(2, rec.count)
    assert.equal("trusted", trust.status(ws).state)
    assert.is_true(trust.activate(ws))
    assert.equal(real, trust.active())
  end)

  it("lists changed, appeared and vanished files", function()
    t.write(ws .. "/.moat/lua/moat/backends/op.lua", WS_OP)
    t.write(ws .. "/.moat/lua/moat/x.lua", "return 1\n")
    assert(trust.trust(ws))
    t.write(ws .. "/.moat/lua/moat/backends/op.lua", WS_OP .. "-- edited\n")
    t.write(ws .. "/.moat/lua/moat/new.lua", "return 2\n")
    os.remove(ws .. "/.moat/lua/moat/x.lua")
    local st = trust.status(ws)
    assert.equal("changed", st.state)
    assert.same({ "lua/moat/backends/op.lua" }, st.changed)
    assert.same({ "lua/moat/new.lua" }, st.added)
    assert.same({ "lua/moat/x.lua" }, st.removed)
    local ok, msg = trust.activate(ws)
    assert.is_nil(ok)
    for _, want in ipairs({ "changed:  .moat/lua/moat/backends/op.lua", "appeared: .moat/lua/moat/new.lua",
      "vanished: .moat/lua/moat/x.lua", "moat trust " }) do
      assert.truthy(msg:find(want, 1, true), msg)
    end
  end)

  it("records symlinks as links so that loading through one is refused", function()
    t.write(dir .. "/outside.lua", "return 1\n")
    t.write(ws .. "/.moat/lua/moat/real.lua", "return 2\n")
    assert(lfs.link(dir .. "/outside.lua", ws .. "/.moat/lua/moat/linked.lua", true))
    assert(trust.trust(ws))
    assert.is_true(trust.activate(ws))
    local real = sys.realpath(ws)
    assert.is_true(trust.check_file(real .. "/.moat/lua/moat/real.lua", "return 2\n"))
    local ok = trust.check_file(real .. "/.moat/lua/moat/linked.lua", "return 1\n")
    assert.is_nil(ok)
  end)

  it("checks the exact bytes the loader compiles", function()
    t.write(ws .. "/.moat/lua/moat/m.lua", "return 'trusted'\n")
    assert(trust.trust(ws))
    assert.is_true(trust.activate(ws))
    local path = sys.realpath(ws) .. "/.moat/lua/moat/m.lua"
    assert.is_true(trust.check_file(path, "return 'trusted'\n"))
    local ok, why = trust.check_file(path, "return 'swapped'\n")
    assert.is_nil(ok)
    assert.truthy(why:find("moat trust", 1, true))
    assert.is_nil((trust.check_file("/etc/passwd", "x")))
  end)

  it("forgets the trust on untrust", function()
    t.write(ws .. "/.moat/policy.lua", "return function() end\n")
    local rec = assert(trust.trust(ws))
    assert.is_true(trust.activate(ws))
    assert.is_true((trust.untrust(ws)))
    assert.is_nil(lfs.attributes(rec.path))
    assert.is_nil(trust.active())
    assert.is_false((trust.untrust(ws)))
    assert.equal("untrusted", trust.status(ws).state)
  end)
end)

describe("moat trust / untrust / workspace Lua through the CLI", function()
  local dir, ws, env
  before_each(function()
    dir = t.tmpdir()
    ws = dir .. "/ws"
    t.write(ws .. "/moat.yaml", "secrets:\n  DB: op://Eng/db/password\n")
    t.write(ws .. "/.moat/lua/moat/backends/op.lua", WS_OP)
    env = { MOAT_HOME = dir .. "/home", MOAT_SITE_DIR = dir .. "/site", XDG_CONFIG_HOME = dir .. "/xdg",
      MOAT_LUA_PATH = false, PATH = t.fake_path(),
      FAKE_OP_LOG = dir .. "/op.log" }
  end)
  after_each(function() t.rmtree(dir) end)

  local function op_entry()
    local code, out = t.moat({ "backends", ws, "--json" }, { env = env })
    assert.equal(0, code)
    local list = json.decode(out)
    local active, ws_entry
    for _, e in ipairs(list) do
      if e.scheme == "op" and e.active then active = e end
      if e.scheme == "op" and e.kind == "workspace" then ws_entry = e end
    end
    return active, ws_entry
  end

  it("ignores the workspace op.lua until trusted, loads it after, refuses it once edited", function()
    local active, listed = op_entry()
    assert.equal("builtin", active.kind)
    assert.equal("workspace", listed.kind)
    assert.is_false(listed.usable)
    assert.truthy(listed.fix:find("moat trust", 1, true))

    local code, out = t.moat({ "trust", ws }, { env = env })
    assert.equal(0, code)
    assert.truthy(out:find(".moat/lua/moat/backends/op.lua", 1, true))
    active = op_entry()
    assert.equal("workspace", active.kind)
    assert.equal("workspace op override", active.description)
    assert.equal(sys.realpath(ws) .. "/.moat/lua/moat/backends/op.lua", active.file)

    t.write(ws .. "/.moat/lua/moat/backends/op.lua", WS_OP .. "-- the agent was here\n")
    active, listed = op_entry()
    assert.equal("builtin", active.kind)
    assert.is_false(listed.usable)
    assert.truthy(listed.reason:find("changed", 1, true))

    assert.equal(0, (t.moat({ "untrust", ws }, { env = env })))
  end)

  -- A workspace whose Lua shows when it runs: a backend for x:// that leaves marks (on load and
  -- on resolve), the op override, and a policy, which may not write, that denies the run with
  -- POLICY_RAN while marks/deny exists. `moat run` must refuse it whole, before any of it runs,
  -- until `moat trust`.
  local POLICY_RAN = "the workspace policy ran"
  local function marking_workspace()
    local marks = dir .. "/marks"
    assert(lfs.mkdir(marks))
    t.write(ws .. "/moat.yaml", "secrets:\n  X: x://anything\n  DB: op://Eng/db/password\n")
    t.write(ws .. "/.moat/lua/moat/backends/x.lua", ([[
local MARKS = %q
io.open(MARKS .. "/backend-loaded", "w"):close()
local M = { scheme = "x", description = "workspace x" }
function M.parse(ref) return {} end
function M.resolve(requests, ctx)
  io.open(MARKS .. "/backend-resolved", "w"):close()
  for _, r in ipairs(requests) do ctx.ok(r, "from-workspace-x") end
end
return M
]]):format(marks))
    t.write(ws .. "/.moat/policy.lua", ([[
local DENY = %q
return function(plan, ctx)
  local f = io.open(DENY, "r")
  if f then
    f:close()
    ctx.deny("the run", %q)
  end
end
]]):format(dir .. "/deny", POLICY_RAN))
    t.write(dir .. "/deny", "")
    return marks
  end

  local function marks_in(marks)
    local out = {}
    for name in lfs.dir(marks) do
      if name ~= "." and name ~= ".." then out[#out + 1] = name end
    end
    table.sort(out)
    return out
  end

  -- Runs `moat run` on the host runtime with a command that writes what it got to dir/out.
  local function run_ws()
    os.remove(dir .. "/out")
    return t.moat({ "run", "--runtime", "host", ws, "--", "sh", "-c",
      'printf "%s %s" "$X" "$DB" > ' .. dir .. "/out" }, { env = env, trust = false })
  end

  it("moat run and secrets check --resolve refuse untrusted workspace Lua with exit 77 before any of it runs",
    function()
      local marks = marking_workspace()
      local code, _, stderr = run_ws()
      assert.equal(77, code, stderr)
      assert.truthy(stderr:find("moat trust", 1, true), stderr)
      assert.is_nil(stderr:find(POLICY_RAN, 1, true), stderr)
      assert.same({}, marks_in(marks))
      assert.is_false(t.exists(dir .. "/out"), "the command ran")
      code, _, stderr = t.moat({ "secrets", "check", ws, "--resolve" }, { env = env, trust = false })
      assert.equal(77, code, stderr)
      assert.is_nil(stderr:find(POLICY_RAN, 1, true), stderr)
      assert.same({}, marks_in(marks))
      assert.is_false(t.exists(dir .. "/op.log"), "an op CLI ran")
    end)

  it("runs the workspace's backends and policy once trusted, and refuses again with 77 once one is edited", function()
    local marks = marking_workspace()
    assert.equal(0, (t.moat({ "trust", ws }, { env = env })))
    -- The policy runs, and its denial stops the run before any backend is asked for a value.
    local code, _, stderr = run_ws()
    assert.equal(77, code, stderr)
    assert.truthy(stderr:find(POLICY_RAN, 1, true), stderr)
    assert.is_false(t.exists(marks .. "/backend-resolved"), "a backend was asked despite the denial")
    assert.is_false(t.exists(dir .. "/out"), "the command ran")

    os.remove(dir .. "/deny")
    code, _, stderr = run_ws()
    assert.equal(0, code, stderr)
    assert.equal("from-workspace-x from-workspace", t.read(dir .. "/out"))
    assert.same({ "backend-loaded", "backend-resolved" }, marks_in(marks))
    assert.is_false(t.exists(dir .. "/op.log"), "the op CLI ran instead of the workspace's op.lua")

    for _, name in ipairs(marks_in(marks)) do os.remove(marks .. "/" .. name) end
    t.write(dir .. "/deny", "")
    t.write(ws .. "/.moat/policy.lua", t.slurp(ws .. "/.moat/policy.lua") .. "-- edited\n")
    code, _, stderr = run_ws()
    assert.equal(77, code, stderr)
    assert.truthy(stderr:find("changed:  .moat/policy.lua", 1, true), stderr)
    assert.is_nil(stderr:find(POLICY_RAN, 1, true), stderr)
    assert.same({}, marks_in(marks))
    assert.is_false(t.exists(dir .. "/out"), "the command ran")
  end)

  it("says when a workspace has nothing to trust, and untrusts quietly when not trusted", function()
    local plain = dir .. "/plain"
    t.write(plain .. "/moat.yaml", "name: p\n")
    local code, _, stderr = t.moat({ "trust", plain }, { env = env })
    assert.equal(0, code)
    assert.truthy(stderr:find("nothing in this workspace needs trust", 1, true), stderr)
    t.moat({ "untrust", plain }, { env = env })
    local ucode, out = t.moat({ "untrust", plain }, { env = env })
    assert.equal(0, ucode)
    assert.truthy(out:find("was not trusted", 1, true))
  end)

  it("refuses a precompiled backend.lua", function()
    local src = dir .. "/src.lua"
    t.write(src, "return { scheme = 'bc', resolve = function() end }\n")
    local bc = dir .. "/xdg/moat/lua/moat/backends/bc.lua"
    t.write(bc, "")
    local r = t.exec({ "luac5.4", "-o", bc, src })
    if r.code ~= 0 then
      local f = assert(io.open(bc, "wb"))
      f:write(string.dump(assert(loadfile(src))))
      f:close()
    end
    local bcws = dir .. "/bcws"
    t.write(bcws .. "/moat.yaml", "secrets:\n  X: bc://anything\n")
    local code, _, stderr = t.moat({ "secrets", "check", bcws }, { env = env })
    assert.equal(78, code)
    assert.truthy(stderr:find("bytecode", 1, true), stderr)
    local _, out = t.moat({ "backends", "--json" }, { env = env })
    local found
    for _, e in ipairs(json.decode(out)) do if e.scheme == "bc" then found = e end end
    assert.is_false(found.usable)
    assert.truthy(found.reason:find("bytecode", 1, true))
  end)

  it("pins an env file by the bytes the config's loading parsed, not by what the file holds later", function()
    local config = require("moat.config")
    local real = assert(sys.realpath(ws))
    t.write(ws .. "/moat.yaml", "name: w\nenv_files: [ \".env\" ]\n")
    t.write(ws .. "/.env", "A=op://vault/item/a\n")
    assert(trust.trust(real, assert(config.load(ws))))
    assert.equal("trusted", trust.status(real, assert(config.load(ws))).state)
    -- The agent swaps the file in, moat reads it, and the agent swaps it back before trust looks.
    t.write(ws .. "/.env", "A=op://vault/other/password\n")
    local cfg = assert(config.load(ws))
    t.write(ws .. "/.env", "A=op://vault/item/a\n")
    local st = trust.status(real, cfg)
    assert.equal("changed", st.state)
    assert.equal(1, #st.config.changed)
  end)
end)
