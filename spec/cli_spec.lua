local t = require("support.moat")

describe("moat CLI", function()
  local home

  before_each(function()
    home = t.tmpdir()
  end)

  after_each(function()
    t.rmtree(home)
  end)

  local function env(extra)
    local e = { HOME = home, XDG_CONFIG_HOME = false, MOAT_HOME = home .. "/.moat", MOAT_LUA_PATH = false,
      MOAT_SITE_DIR = home .. "/site" }
    for k, v in pairs(extra or {}) do e[k] = v end
    return e
  end

  it("exits 64 with usage for an unknown command", function()
    local code, out, err = t.moat({ "nonsense" }, { env = env() })
    assert.equal(64, code)
    assert.equal("", out)
    assert.matches("unknown command 'nonsense'", err, 1, true)
    assert.matches("usage: moat <command>", err, 1, true)
  end)

  it("exits 64 with no command and for an unknown option", function()
    assert.equal(64, (t.moat({}, { env = env() })))
    local code, _, err = t.moat({ "config", "--frobnicate" }, { env = env() })
    assert.equal(64, code)
    assert.matches("unknown option --frobnicate", err, 1, true)
  end)

  it("prints its version and per-command help", function()
    local code, out = t.moat({ "version" }, { env = env() })
    assert.equal(0, code)
    assert.matches("^moat %d+%.%d+%.%d+\n$", out)
    code, out = t.moat({ "help", "config" }, { env = env() })
    assert.equal(0, code)
    assert.matches("^usage: moat config %[DIR%]", out)
    code, out = t.moat({ "config", "--help" }, { env = env() })
    assert.equal(0, code)
    assert.matches("^usage: moat config", out)
  end)

  it("prints the example config from any working directory", function()
    local code, out, err = t.moat({ "config", MOAT_ROOT .. "/examples/hello" }, { env = env(), cwd = "/" })
    assert.equal(0, code, err)
    assert.matches("name: hello", out, 1, true)
    assert.matches("HELLO_TOKEN: env://MOAT_HELLO_TOKEN", out, 1, true)
  end)

  it("prints JSON with --json, options before or after DIR", function()
    local json = require("moat.c.json")
    local code, out = t.moat({ "config", "--json", MOAT_ROOT .. "/examples/hello" }, { env = env() })
    assert.equal(0, code)
    local v = assert(json.decode(out))
    assert.equal("hello", v.name)
    assert.equal("env://MOAT_HELLO_TOKEN", v.secrets.HELLO_TOKEN)
    local code2, out2 = t.moat({ "config", MOAT_ROOT .. "/examples/hello", "--json" }, { env = env() })
    assert.equal(0, code2)
    assert.equal(out, out2)
  end)

  it("shows the image a run would use and where it comes from, also when dependencies pick it", function()
    local json = require("moat.c.json")
    local ws = home .. "/ws"
    t.write(ws .. "/moat.yaml", "name: deps\ndependencies: [python@3.11]\n")
    local code, out = t.moat({ "config", "--json", ws }, { env = env() })
    assert.equal(0, code)
    local v = assert(json.decode(out))
    assert.equal("docker.io/library/python:3.11-slim", v.image)
    assert.equal("dependencies", v.image_from)
    t.write(ws .. "/moat.yaml", "name: none\n")
    code, out = t.moat({ "config", ws }, { env = env() })
    assert.equal(0, code)
    assert.matches("image: docker.io/library/debian:bookworm-slim  # moat's default image", out, 1, true)
  end)

  it("never prints a plain secret value, in text or JSON", function()
    t.write(home .. "/pv/moat.yaml", "secrets:\n  DB: hunter2-plain-secret\n  X: env://HOME\n")
    for _, extra in ipairs({ {}, { "--json" } }) do
      local code, out = t.moat({ "config", home .. "/pv", table.unpack(extra) }, { env = env() })
      assert.equal(0, code)
      assert.not_matches("hunter2", out, 1, true)
      assert.matches("(plain value)", out, 1, true)
      assert.matches("env://HOME", out, 1, true)
    end
  end)

  it("ignores LUA_PATH and LUA_CPATH: no module directory outside the search order", function()
    t.write(home .. "/evil/moat/cmd/config.lua", "return { main = function() print('evil') return 0 end }")
    local code, out = t.moat({ "config", MOAT_ROOT .. "/examples/hello" }, { env = env({
      LUA_PATH = home .. "/evil/?.lua", LUA_PATH_5_4 = home .. "/evil/?.lua", LUA_CPATH = home .. "/evil/?.so" }) })
    assert.equal(0, code)
    assert.not_matches("evil", out, 1, true)
  end)

  it("falls back to agent.yaml and honours --config", function()
    t.write(home .. "/ws/agent.yaml", "name: from-agent\n")
    t.write(home .. "/other.yaml", "name: from-other\n")
    local _, out = t.moat({ "config", home .. "/ws" }, { env = env() })
    assert.matches("name: from-agent", out, 1, true)
    _, out = t.moat({ "config", home .. "/ws", "--config", home .. "/other.yaml" }, { env = env() })
    assert.matches("name: from-other", out, 1, true)
  end)

  it("prints every config problem with file:line:col and exits 78", function()
    t.write(home .. "/ws/moat.yaml", "image: 42\nsecrets:\n  PATH: op://a/b/c\n  A: ~\n")
    local code, out, err = t.moat({ "config", "ws" }, { env = env(), cwd = home })
    assert.equal(78, code)
    assert.equal("", out)
    assert.matches("3 problems in ws/moat.yaml", err, 1, true)
    assert.matches("ws/moat.yaml:1:8: image must be a string, not int", err, 1, true)
    assert.matches("ws/moat.yaml:3:3: secrets name 'PATH' is reserved", err, 1, true)
    assert.matches("ws/moat.yaml:4:6: secret A has no reference", err, 1, true)
  end)

  it("refuses every hostile YAML input with exit 78", function()
    local hostile = dofile(MOAT_ROOT .. "/spec/fixtures/yaml/hostile.lua")
    local names = {}
    for name in pairs(hostile.expect) do names[#names + 1] = name end
    table.sort(names)
    assert.is_true(#names >= 8)
    for _, name in ipairs(names) do
      t.write(home .. "/h/moat.yaml", hostile[name]())
      local code, out, err = t.moat({ "config", home .. "/h" }, { env = env() })
      assert.equal(78, code, name .. ": " .. err)
      assert.equal("", out)
      assert.matches("moat.yaml:%d+:%d+: ", err, 1, false, name)
      assert.matches(hostile.expect[name], err, 1, false, name)
    end
  end)

  describe("module search order", function()
    local override = [[
local M = {}
function M.main() io.stdout:write("%s\n") return 0 end
return M
]]

    it("a user file replaces a built-in module", function()
      t.write(home .. "/.config/moat/lua/moat/cmd/config.lua", override:format("user config"))
      local code, out = t.moat({ "config" }, { env = env() })
      assert.equal(0, code)
      assert.equal("user config\n", out)
    end)

    it("XDG_CONFIG_HOME moves the user directory", function()
      t.write(home .. "/xdg/moat/lua/moat/cmd/config.lua", override:format("xdg config"))
      local _, out = t.moat({ "config" }, { env = env({ XDG_CONFIG_HOME = home .. "/xdg" }) })
      assert.equal("xdg config\n", out)
    end)

    it("MOAT_LUA_PATH comes before the user directory, the site directory after it", function()
      t.write(home .. "/.config/moat/lua/moat/cmd/config.lua", override:format("user config"))
      t.write(home .. "/env1/moat/cmd/config.lua", override:format("env config"))
      t.write(home .. "/site/lua/moat/cmd/config.lua", override:format("site config"))
      local _, out = t.moat({ "config" }, { env = env({ MOAT_LUA_PATH = home .. "/nothing:" .. home .. "/env1" }) })
      assert.equal("env config\n", out)
      _, out = t.moat({ "config" }, { env = env() })
      assert.equal("user config\n", out)
      t.rmtree(home .. "/.config")
      _, out = t.moat({ "config" }, { env = env() })
      assert.equal("site config\n", out)
    end)

    it("never loads modules from the current directory", function()
      t.write(home .. "/cwd/moat/cmd/config.lua", override:format("cwd config"))
      t.write(home .. "/cwd/moat/cmd/config.so", "not a library")
      local code, out = t.moat({ "config" }, { env = env(), cwd = home .. "/cwd" })
      assert.equal(0, code)
      assert.not_matches("cwd config", out, 1, true)
    end)

    it("refuses a precompiled (bytecode) module", function()
      local chunk = string.dump(load("return { main = function() return 0 end }"))
      t.write(home .. "/.config/moat/lua/moat/cmd/config.lua", chunk)
      local code, _, err = t.moat({ "config" }, { env = env() })
      assert.equal(70, code)
      assert.matches("precompiled Lua (bytecode) is refused", err, 1, true)
    end)
  end)
end)
