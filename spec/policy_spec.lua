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

describe("policy sandbox", function()
  local dir
  before_each(function() dir = t.tmpdir() end)
  after_each(function() t.rmtree(dir) end)

  local function check(scripts, p)
    local list = {}
    for i, text in ipairs(scripts) do list[i] = script(dir, ("s%d.lua"):format(i), text) end
    local ok, denials = policy.check(p or plan_with({}), { scripts = list, warn = quiet })
    return ok, denials or {}, list
  end

  it("keeps a script from clearing another script's denials through debug", function()
    -- Old code: scripts saw the real _G, so debug.getupvalue reached the denials list and emptied it.
    local ok, denials, list = check({
      'return function(plan, ctx) ctx.deny("runtime", "first says no") end\n',
      [[
local function find(f, depth)
  if depth > 4 or type(debug) ~= "table" then return nil end
  for i = 1, 60 do
    local name, v = debug.getupvalue(f, i)
    if not name then break end
    if name == "denials" and type(v) == "table" then return v end
    if type(v) == "function" then
      local got = find(v, depth + 1)
      if got then return got end
    end
  end
end
return function(plan, ctx)
  local d = find(ctx.deny, 0)
  if d then for k in pairs(d) do d[k] = nil end end
end
]],
    })
    assert.is_nil(ok)
    assert.equal(list[1].path, denials[1].script)
    assert.equal("first says no", denials[1].reason)
  end)

  local hidden = {
    "debug", "package", "collectgarbage", "loadfile", "dofile", "loadstring",
    "string.dump", "io.popen", "io.write", "io.output", "io.input", "io.stdout", "os.execute",
    "os.remove", "os.rename", "os.exit", "os.tmpname", "os.setlocale", "coroutine",
  }
  it("hides debug, package, require, collectgarbage, file and process access", function()
    -- Old code: every one of these was reachable (the script's globals fell through to _G).
    local lines = { "return function(plan, ctx)" }
    for _, name in ipairs(hidden) do
      local head, field = name:match("^(%w+)%.(%w+)$")
      local expr = head and ("(type(%s) == 'table' and %s.%s)"):format(head, head, field) or name
      lines[#lines + 1] = ("  if %s ~= nil and %s ~= false then ctx.deny(%q, 'reachable') end"):format(expr, expr, name)
    end
    lines[#lines + 1] = "end"
    local ok, denials = check({ table.concat(lines, "\n") .. "\n" })
    local reached = {}
    for _, d in ipairs(denials) do reached[#reached + 1] = d.target .. ": " .. d.reason end
    assert.is_true(ok, table.concat(reached, "\n"))
  end)

  it("still offers the harmless standard library", function()
    local ok, denials = check({ [[
return function(plan, ctx)
  local want = { os.getenv, os.time, os.date, os.clock, string.format, string.match, table.concat,
    table.sort, math.floor, utf8.char, pairs, ipairs, next, select, tostring, tonumber, type, pcall,
    error, assert, setmetatable, getmetatable, rawget, rawequal, rawlen }
  if #want ~= 25 then ctx.deny("stdlib", "missing: " .. #want) end
  if ("Key"):upper() ~= "KEY" then ctx.deny("string methods", "broken") end
  if type(os.getenv("PATH")) ~= "string" then ctx.deny("os.getenv", "broken") end
  local f = load("return 1 + x", "=chunk", "t")
  x = 41
  if f() ~= 42 then ctx.deny("load", "does not see the script's globals") end
end
]] })
    assert.is_true(ok, denials[1] and (denials[1].target .. ": " .. denials[1].reason))
  end)

  it("refuses io.open for writing, require of moat's or C modules and binary chunks in load", function()
    local target = dir .. "/written"
    local ok, denials = check({ ([[
return function(plan, ctx)
  local ok, f = pcall(function() return io and io.open and io.open(%q, "w") end)
  if ok and f then f:write("x") f:close() ctx.deny("io.open", "opened for writing") end
  for _, name in ipairs({ "moat.exit", "moat.audit", "lfs", "moat.c.system", "os" }) do
    if pcall(require, name) then ctx.deny("require", name .. " was loaded") end
  end
  local bin = "\27Lua" .. ("\0"):rep(40)
  local chunk = load(bin, "bin", "b")
  if chunk then ctx.deny("load", "accepted a binary chunk") end
  if load(function() return nil end) then ctx.deny("load", "accepted a reader function") end
end
]]):format(target) })
    assert.is_true(ok, denials[1] and (denials[1].target .. ": " .. denials[1].reason))
    assert.is_nil(require("lfs").attributes(target))
  end)

  it("lets a script require a Lua helper from the user's lua directory, sandboxed too", function()
    local loader = require("moat.loader")
    local saved = loader.dirs
    finally(function() loader.dirs = saved end)
    loader.dirs = { { dir = dir .. "/lib", kind = "user" }, { dir = MOAT_ROOT .. "/lua", kind = "builtin" } }
    t.write(dir .. "/lib/site_rules.lua", "return { vaults = { Eng = true }, dbg = debug }\n")
    local ok, denials = check({ [[
local rules = require("site_rules")
return function(plan, ctx)
  if not rules.vaults.Eng then ctx.deny("rules", "not loaded") end
  if rules.dbg ~= nil then ctx.deny("rules", "helper saw debug") end
  if pcall(require, "moat.exit") then ctx.deny("require", "built-in module loaded") end
end
]] })
    assert.is_true(ok, denials[1] and (denials[1].target .. ": " .. denials[1].reason))
  end)

  it("keeps a script from changing moat's globals or the shared string library", function()
    -- Old code: a script's globals table fell through to _G, so `_G.ipairs = ...` replaced
    -- moat's own ipairs and the next script saw no secrets at all.
    local saved_ipairs, saved_upper = ipairs, string.upper
    local ok, denials
    finally(function()
      _G.ipairs = saved_ipairs
      rawset(string, "upper", saved_upper)
      getmetatable("").__index = string
    end)
    ok, denials = check({
      [[
return function(plan, ctx)
  _G.ipairs = function() return function() end end
  string.upper = function() return "pwned" end
  local mt = getmetatable("")
  if mt then mt.__index = { upper = function() return "pwned" end } end
end
]],
      [[
return function(plan, ctx)
  for _, s in ipairs(plan.secrets) do ctx.deny(s, "second script still sees " .. s.name:upper()) end
end
]],
    }, plan_with({ { name = "db", ref = "op://v/i/f", backend = "op", plain = false } }))
    assert.equal(saved_ipairs, ipairs)
    assert.equal(saved_upper, string.upper)
    assert.equal("AB", ("ab"):upper())
    assert.is_nil(ok)
    assert.equal(1, #denials)
    assert.equal("second script still sees DB", denials[1].reason)
  end)

  it("gives every script its own copy of the plan", function()
    -- Old code: one read-only view was shared and rawset wrote into it, so the next script saw the change.
    local ok, denials = check({
      [[
return function(plan, ctx)
  rawset(plan, "runtime", "docker")
  rawset(plan.secrets, 1, nil)
  rawset(plan.secrets[2] or {}, "ref", "op://changed/x/y")
end
]],
      [[
return function(plan, ctx)
  if plan.runtime == "host" then ctx.deny("runtime", "host") end
  for _, s in ipairs(plan.secrets) do ctx.deny(s, s.ref) end
end
]],
    }, plan_with({
      { name = "A", ref = "op://v/i/a", backend = "op", plain = false },
      { name = "B", ref = "op://v/i/b", backend = "op", plain = false },
    }, { runtime = "host" }))
    assert.is_nil(ok)
    assert.same({ "host", "op://v/i/a", "op://v/i/b" }, { denials[1].reason, denials[2].reason, denials[3].reason })
  end)

  it("turns an error object with a __tostring into a denial without running it", function()
    local ok, denials, list = check({ [[
return function(plan, ctx)
  error(setmetatable({}, { __tostring = function() error("from tostring") end }))
end
]] })
    assert.is_nil(ok)
    assert.truthy(denials[1].reason:find(list[1].path .. ":2:", 1, true), denials[1].reason)
  end)

  it("denies when policy.lua is a dangling symlink or a directory, naming the file", function()
    local dangling = dir .. "/dangling/policy.lua"
    t.write(dir .. "/dangling/x", "")
    assert.equal(0, t.exec({ "ln", "-s", dir .. "/nowhere", dangling }).code)
    local isdir = dir .. "/isdir/policy.lua"
    t.write(isdir .. "/x", "")
    local _, denials = policy.check(plan_with({}), { warn = quiet,
      scripts = { { path = dangling, kind = "site" }, { path = isdir, kind = "user" } } })
    assert.equal(2, #denials)
    assert.truthy(denials[1].reason:find(dangling, 1, true), denials[1].reason)
    assert.truthy(denials[2].reason:find(isdir, 1, true), denials[2].reason)
    assert.truthy(denials[2].reason:find("directory", 1, true), denials[2].reason)
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

  it("exits 77 naming the file when the site policy.lua is a dangling symlink", function()
    -- Old code: M.scripts() followed the link, found nothing and skipped the policy: the run went ahead.
    t.write(dir .. "/site/x", "")
    assert.equal(0, t.exec({ "ln", "-s", dir .. "/site/gone.lua", dir .. "/site/policy.lua" }).code)
    local code, _, stderr = t.moat({ "run", "--runtime", "host", dir .. "/ws", "--", "true" }, { env = env })
    assert.equal(77, code)
    assert.truthy(stderr:find(dir .. "/site/policy.lua", 1, true), stderr)
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
