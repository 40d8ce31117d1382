-- The built-in Lua is precompiled into the binary (tools/embed.c): an installed moat runs the
-- chunks it was built with, and in a source tree an edited source counts before the next make.
local t = require("support.moat")

describe("the built-in Lua in the binary", function()
  local dir
  before_each(function() dir = t.tmpdir() end)
  after_each(function() t.rmtree(dir) end)

  local function copy_tree(to)
    local r = t.exec({ "cp", "-R", MOAT_ROOT .. "/lua/moat", to })
    assert.are.equal(0, r.code, r.stderr)
  end

  it("is what an installed moat runs: its share/moat/lua sources are not compiled", function()
    t.exec({ "mkdir", "-p", dir .. "/bin", dir .. "/share/moat/lua" })
    assert.are.equal(0, t.exec({ "cp", MOAT_BIN, dir .. "/bin/moat" }).code)
    copy_tree(dir .. "/share/moat/lua/")
    t.write(dir .. "/share/moat/lua/moat/cli.lua", 'error("the source was loaded")\n')
    local r = t.exec({ dir .. "/bin/moat", "--version" })
    assert.are.equal(0, r.code, r.stderr)
    assert.matches("0%.%d", r.stdout)
  end)

  it("gives way, in a source tree, to a source edited after the binary was linked", function()
    t.exec({ "mkdir", "-p", dir .. "/build", dir .. "/lua" })
    assert.are.equal(0, t.exec({ "cp", MOAT_BIN, dir .. "/build/moat" }).code)
    copy_tree(dir .. "/lua/")
    t.exec({ "touch", "-d", "2000-01-01", dir .. "/build/moat" })
    t.write(dir .. "/lua/moat/cli.lua", 'return { main = function() io.stdout:write("edited\\n") return 0 end }\n')
    local r = t.exec({ dir .. "/build/moat", "--version" })
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal("edited\n", r.stdout)
  end)
end)
