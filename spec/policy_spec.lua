-- moat.policy: scripts run on a read-only view of the plan; deny/warn; errors are denials naming
-- the script and line; through `moat run` a denial exits 77 before any backend is contacted.
local policy = require("moat.policy")
local t = require("support.moat")

local ROOT = MOAT_ROOT

local function script(dir, name, text)
  local path = dir .. "/" .. name
  t.write(path, text)
  return { path = path, kind = "site" }
end

local function plan_with(secrets, extra)
  local p = { name = "p", workspace = "/w", image = "img", runtime = nil, env = {}, mounts = {}, secrets = secrets }
  for k, v in pairs(extra or {}) do p[k] = v end
  return p
end

local quiet = function() end

describe("policy.check", function()
  local dir
  before_each(function() dir = t.tmpdir() end)
  after_each(function() t.rmtree(dir) end)

  it("passes with no scripts and when scripts deny nothing", function()
    assert.is_true((policy.check(plan_with({}), { scripts = {}, warn = quiet })))
    local s = script(dir, "ok.lua", "return function(plan, ctx) end\n")
    assert.is_true((policy.check(plan_with({}), { scripts = { s }, warn = quiet })))
  end)

  it("collects denials from every script with script, target and reason", function()
    local a = script(dir, "a.lua", [[
return function(plan, ctx)
  for _, s in ipairs(plan.secrets) do
    if s.plain then ctx.deny(s, "no plain values") end
  end
end
]])
    local b = script(dir, "b.lua", [[return function(plan, ctx) ctx.deny("runtime", "not today") end]])
    local ok, denials = policy.check(plan_with({
      { name = "API_KEY", ref = "(plain value)", backend = "plain", plain = true },
      { name = "DB", ref = "op://v/i/f", backend = "op", plain = false },
    }), { scripts = { a, b }, warn = quiet })
    assert.is_nil(ok)
    assert.equal(2, #denials)
    assert.same({ script = a.path, kind = "site", target = "API_KEY", reason = "no plain values" }, denials[1])
    assert.same({ script = b.path, kind = "site", target = "runtime", reason = "not today" }, denials[2])
  end)

  it("turns a runtime error into a denial naming the script and the line", function()
    local s = script(dir, "boom.lua", "return function(plan, ctx)\n  local x = nil\n  return x.field\nend\n")
    local ok, denials = policy.check(plan_with({}), { scripts = { s }, warn = quiet })
    assert.is_nil(ok)
    assert.equal(1, #denials)
    assert.truthy(denials[1].reason:find(s.path .. ":3:", 1, true), denials[1].reason)
    assert.equal(s.path, denials[1].script)
  end)

  it("names the line of an error raised with a non-string value", function()
    local s = script(dir, "obj.lua", "return function(plan, ctx)\n\n  error({ code = 1 })\nend\n")
    local _, denials = policy.check(plan_with({}), { scripts = { s }, warn = quiet })
    assert.truthy(denials[1].reason:find(s.path .. ":3:", 1, true), denials[1].reason)
  end)

  it("denies when a script does not load, raises at load time or returns no function", function()
    local syntax = script(dir, "syntax.lua", "return function(plan, ctx)\n  if then\nend\n")
    local top = script(dir, "top.lua", "local a = 1\nerror('broken at load')\n")
    local notfn = script(dir, "notfn.lua", "return 42\n")
    local _, denials = policy.check(plan_with({}), { scripts = { syntax, top, notfn }, warn = quiet })
    assert.equal(3, #denials)
    assert.truthy(denials[1].reason:find(syntax.path .. ":2:", 1, true), denials[1].reason)
    assert.truthy(denials[2].reason:find(top.path .. ":2:", 1, true), denials[2].reason)
    assert.truthy(denials[3].reason:find("must return function", 1, true))
  end)

  it("refuses precompiled policy scripts", function()
    local src = script(dir, "src.lua", "return function(plan, ctx) end\n")
    local bc = dir .. "/bc.lua"
    local r = t.exec({ "luac5.4", "-o", bc, src.path })
    if r.code ~= 0 then
      local f = assert(io.open(bc, "wb"))
      f:write(string.dump(assert(loadfile(src.path))))
      f:close()
    end
    local _, denials = policy.check(plan_with({}), { scripts = { { path = bc, kind = "user" } }, warn = quiet })
    assert.truthy(denials[1].reason:find("bytecode", 1, true))
  end)

  it("hands scripts a read-only plan: a write is a denial and the real plan is unchanged", function()
    local s = script(dir, "w.lua", "return function(plan, ctx)\n  plan.secrets[1].ref = 'op://evil/x/y'\nend\n")
    local p = plan_with({ { name = "DB", ref = "op://v/i/f", backend = "op", plain = false } })
    local ok, denials = policy.check(p, { scripts = { s }, warn = quiet })
    assert.is_nil(ok)
    assert.truthy(denials[1].reason:find("read-only", 1, true))
    assert.equal("op://v/i/f", p.secrets[1].ref)
  end)

  it("never shows plain values to scripts", function()
    local plan_mod = require("moat.plan")
    local ok_build, built = pcall(plan_mod.build, { name = "n", dir = "/w", env = {}, mounts = {},
      secrets = { { name = "API_KEY", ref = "hunter2-plain-value", where = "moat.yaml:2:3" } } }, {})
    assert.is_true(ok_build, tostring(built))
    local seen = {}
    local function walk(v, depth)
      if depth > 6 then return end
      if type(v) == "string" then seen[#seen + 1] = v
      elseif type(v) == "table" then for k, x in pairs(v) do walk(k, depth + 1) walk(x, depth + 1) end end
    end
    walk(policy.view(built), 0)
    for _, s in ipairs(seen) do assert.falsy(s:find("hunter2", 1, true)) end
    local view = policy.view(built)
    assert.equal("API_KEY", view.secrets[1].name)
    assert.is_true(view.secrets[1].plain)
    assert.equal(1, #view.secrets)
  end)

  it("passes warnings on and still allows the run", function()
    local s = script(dir, "warn.lua", "return function(plan, ctx) ctx.warn('careful') end\n")
    local got = {}
    local ok, warnings = policy.check(plan_with({}), { scripts = { s }, warn = function(m) got[#got + 1] = m end })
    assert.is_true(ok)
    assert.equal(1, #got)
    assert.truthy(got[1]:find("careful", 1, true))
    assert.same(got, warnings)
  end)

  it("reports denials for people", function()
    local text = policy.report({ { script = "/etc/moat/policy.lua", target = "API_KEY", reason = "no" } })
    assert.truthy(text:find("API_KEY: no (/etc/moat/policy.lua)", 1, true))
  end)
end)

describe("policy scripts through moat run", function()
  local dir, env
  before_each(function()
    dir = t.tmpdir()
    t.write(dir .. "/ws/moat.yaml", "secrets:\n  DB: op://Eng/db/password\n")
    t.write(dir .. "/op-data.lua", 'return { ["op://Eng/db/password"] = "s3cret-value" }\n')
    env = { MOAT_HOME = dir .. "/home", MOAT_SITE_DIR = dir .. "/site", XDG_CONFIG_HOME = dir .. "/xdg",
      MOAT_LUA_PATH = false, MOAT_RUNTIME = false, PATH = ROOT .. "/spec/fixtures/bin:" .. os.getenv("PATH"),
      FAKE_OP_DATA = dir .. "/op-data.lua", FAKE_OP_LOG = dir .. "/op.log" }
  end)
  after_each(function() t.rmtree(dir) end)

  local function op_calls()
    local f = io.open(dir .. "/op.log")
    if not f then return 0 end
    local n = 0
    for line in f:lines() do if line:match("^start ") then n = n + 1 end end
    f:close()
    return n
  end

  it("runs the command and calls the backend when no policy denies", function()
    t.write(dir .. "/site/policy.lua", "return function(plan, ctx) end\n")
    local code = t.moat({ "run", "--runtime", "host", dir .. "/ws", "--", "true" }, { env = env })
    assert.equal(0, code)
    assert.is_true(op_calls() >= 1)
  end)

  it("exits 77 on a deny and never calls the backend", function()
    t.write(dir .. "/site/policy.lua", 'return function(plan, ctx) ctx.deny(plan.secrets[1], "not from op") end\n')
    local code, _, stderr = t.moat({ "run", "--runtime", "host", dir .. "/ws", "--", "true" }, { env = env })
    assert.equal(77, code)
    assert.truthy(stderr:find("not from op", 1, true))
    assert.truthy(stderr:find(dir .. "/site/policy.lua", 1, true))
    assert.equal(0, op_calls())
  end)

  it("exits 77 naming path and line when a user policy raises", function()
    t.write(dir .. "/xdg/moat/policy.lua", "return function(plan, ctx)\n  return plan.nope.deeper\nend\n")
    local code, _, stderr = t.moat({ "run", "--runtime", "host", dir .. "/ws", "--", "true" }, { env = env })
    assert.equal(77, code)
    assert.truthy(stderr:find(dir .. "/xdg/moat/policy.lua:2:", 1, true), stderr)
    assert.equal(0, op_calls())
  end)

  it("runs site, then user policy; each may deny", function()
    t.write(dir .. "/site/policy.lua", "return function(plan, ctx) ctx.warn('site first') end\n")
    t.write(dir .. "/xdg/moat/policy.lua", "return function(plan, ctx) ctx.warn('user second') end\n")
    local code, _, stderr = t.moat({ "run", "--runtime", "host", dir .. "/ws", "--", "true" }, { env = env })
    assert.equal(0, code)
    local a, b = stderr:find("site first", 1, true), stderr:find("user second", 1, true)
    assert.truthy(a and b and a < b, stderr)
  end)

  it("denies --runtime host with the example no-host-runtime policy", function()
    local f = assert(io.open(ROOT .. "/examples/policies/no-host-runtime.lua"))
    t.write(dir .. "/site/policy.lua", f:read("a"))
    f:close()
    local code, _, stderr = t.moat({ "run", "--runtime", "host", dir .. "/ws", "--", "true" }, { env = env })
    assert.equal(77, code)
    assert.truthy(stderr:find("isolation", 1, true))
    assert.equal(0, op_calls())
  end)
end)
