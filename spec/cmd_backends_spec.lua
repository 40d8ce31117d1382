-- `moat backends [--json]`: built-in and user backends with scheme, description, file, kind,
-- which file overrides which, and whether each backend's check says it is usable.
local json = require("moat.c.json")
local t = require("support.moat")

local ROOT = MOAT_ROOT

local USER_OP = [[
local M = { scheme = "op", description = "site 1Password wrapper" }
function M.parse(ref) return {} end
function M.check(ctx) return nil, "the site wrapper is switched off", "ask the platform team" end
function M.resolve(requests, ctx) end
return M
]]

describe("moat backends", function()
  local dir, env
  before_each(function()
    dir = t.tmpdir()
    env = { MOAT_HOME = dir .. "/home", MOAT_SITE_DIR = dir .. "/site", XDG_CONFIG_HOME = dir .. "/xdg",
      MOAT_LUA_PATH = false, PATH = t.fake_path() }
  end)
  after_each(function() t.rmtree(dir) end)

  local function list(extra_args)
    local args = { "backends", "--json" }
    for _, a in ipairs(extra_args or {}) do args[#args + 1] = a end
    local code, out, err = t.moat(args, { env = env, cwd = dir })
    assert.equal(0, code, err)
    local by = {}
    for _, e in ipairs(json.decode(out)) do
      by[e.scheme] = by[e.scheme] or {}
      table.insert(by[e.scheme], e)
    end
    return by
  end

  it("lists the built-in backends, plain included, with their files", function()
    local by = list()
    for _, scheme in ipairs({ "op", "ssm", "env", "awssm" }) do
      assert.is_table(by[scheme], scheme)
      assert.equal("builtin", by[scheme][1].kind)
      assert.equal(ROOT .. "/lua/moat/backends/" .. scheme .. ".lua", by[scheme][1].file)
      assert.is_string(by[scheme][1].description)
    end
    assert.equal("builtin", by.plain[1].kind)
    assert.equal(json.null, by.plain[1].file)
    assert.is_true(by.plain[1].usable)
    assert.is_true(by.env[1].usable)
  end)

  it("adds a user scheme and lets a user file replace the built-in op; both show their paths", function()
    local vault = assert(io.open(ROOT .. "/examples/backends/vault.lua")):read("a")
    t.write(dir .. "/xdg/moat/lua/moat/backends/vault.lua", vault)
    t.write(dir .. "/site/lua/moat/backends/op.lua", USER_OP)
    local by = list()
    assert.equal(dir .. "/xdg/moat/lua/moat/backends/vault.lua", by.vault[1].file)
    assert.equal("user", by.vault[1].kind)
    assert.is_true(by.vault[1].usable)   -- the fake vault is on PATH

    assert.equal(2, #by.op)
    local active, shadowed = by.op[1], by.op[2]
    assert.is_true(active.active)
    assert.equal("site", active.kind)
    assert.equal(dir .. "/site/lua/moat/backends/op.lua", active.file)
    assert.equal("site 1Password wrapper", active.description)
    assert.is_false(active.usable)
    assert.equal("the site wrapper is switched off", active.reason)
    assert.equal("ask the platform team", active.fix)
    assert.is_false(shadowed.active)
    assert.equal("builtin", shadowed.kind)
    assert.equal(dir .. "/site/lua/moat/backends/op.lua", shadowed.overridden_by)
  end)

  it("says why a backend is not usable", function()
    env.PATH = "/nonexistent"
    local by = list()
    assert.is_false(by.ssm[1].usable)
    assert.truthy(by.ssm[1].reason:find("not installed", 1, true))
    assert.is_false(by.awssm[1].usable)
  end)

  it("shows a backend that does not load as not usable, with the error", function()
    t.write(dir .. "/xdg/moat/lua/moat/backends/broken.lua", "return {\n")
    local by = list()
    assert.is_false(by.broken[1].usable)
    assert.truthy(by.broken[1].reason:find("broken.lua:", 1, true), by.broken[1].reason)
  end)

  it("prints a table for people with files and overrides", function()
    t.write(dir .. "/xdg/moat/lua/moat/backends/op.lua", USER_OP)
    local code, out = t.moat({ "backends" }, { env = env, cwd = dir })
    assert.equal(0, code)
    assert.truthy(out:find("file: " .. dir .. "/xdg/moat/lua/moat/backends/op.lua", 1, true))
    assert.truthy(out:find("overridden by: " .. dir .. "/xdg/moat/lua/moat/backends/op.lua", 1, true))
    assert.truthy(out:find("awssm", 1, true))
  end)

  it("rejects unknown options", function()
    local code = t.moat({ "backends", "--nope" }, { env = env, cwd = dir })
    assert.equal(64, code)
  end)
end)
