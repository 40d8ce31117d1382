local t = require("support.moat")
local need = require("support.need")
local lfs = require("lfs")

describe("examples/*/moat.yaml", function()
  local home
  setup(function() home = t.tmpdir() end)
  teardown(function() t.rmtree(home) end)

  local dirs = {}
  for name in lfs.dir(MOAT_ROOT .. "/examples") do
    if lfs.attributes(MOAT_ROOT .. "/examples/" .. name .. "/moat.yaml", "mode") == "file" then
      dirs[#dirs + 1] = name
    end
  end
  table.sort(dirs)

  it("there are examples", function()
    assert.is_true(#dirs >= 2)
  end)

  for _, name in ipairs(dirs) do
    it(name .. " loads without warnings and dry-runs on each runtime", function()
      local env = { HOME = home, MOAT_HOME = home .. "/.moat", XDG_CONFIG_HOME = false, MOAT_LUA_PATH = false,
        MOAT_SITE_DIR = home .. "/site" }
      local dir = MOAT_ROOT .. "/examples/" .. name
      local code, out, err = t.moat({ "config", dir }, { env = env })
      assert.equal(0, code, err)
      assert.equal("", err)
      assert.matches("name: ", out, 1, true)
      for _, rt in ipairs({ "host", "docker", "bwrap" }) do
        code, out, err = t.moat({ "run", dir, "--dry-run", "--runtime", rt }, { env = env })
        if code == 69 and err:find("not installed", 1, true) then
          need.missing("the " .. rt .. " runtime", err)   -- a failure under CI=true
          assert.matches("install", err)
        else
          assert.equal(0, code, err)
          assert.matches("dry run: nothing was resolved or launched", out, 1, true)
        end
      end
    end)
  end
end)
