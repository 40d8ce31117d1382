local config = require("moat.config")
local plan_mod = require("moat.plan")
local secrets = require("moat.secrets")
local envb = require("moat.backends.env")

local function resolve(map, env)
  local lines = { "secrets:" }
  for name, ref in pairs(map) do lines[#lines + 1] = ("  %s: %q"):format(name, ref) end
  local cfg = assert(config.parse(table.concat(lines, "\n") .. "\n", "moat.yaml", "/work/space"))
  return secrets.resolve(plan_mod.build(cfg), { env = env })
end

describe("moat.backends.env", function()
  it("parses env://VAR and refuses anything else", function()
    assert.same({ var = "HOME_DIR_2" }, envb.parse("env://HOME_DIR_2"))
    for ref, why in pairs({ ["env://"] = "empty", ["env://1X"] = "not a variable name",
      ["env://A-B"] = "not a variable name", ["env://A B"] = "not a variable name", ["envx://A"] = "env://VAR" }) do
      local p, err = envb.parse(ref)
      assert.is_nil(p)
      assert.matches(why, err, 1, true)
    end
  end)

  it("hands over host variables byte-exact, the empty string included", function()
    local value = "  two\nlines = 'q' \"dq\" ü  \n"
    local res = resolve({ A = "env://SRC_A", B = "env://SRC_B", A2 = "env://SRC_A" }, { SRC_A = value, SRC_B = "" })
    assert.is_true(res.ok)
    assert.same({ A = value, A2 = value, B = "" }, res.values)
  end)

  it("fails an unset variable as not found with an export hint", function()
    local res = resolve({ TOKEN = "env://MISSING_VAR" }, { OTHER = "x" })
    assert.is_false(res.ok)
    local f = res.failures[1]
    assert.same({ "TOKEN", "env://MISSING_VAR", "env", "not_found" }, { f.name, f.ref, f.backend, f.kind })
    assert.equal("the host variable MISSING_VAR is not set", f.reason)
    assert.equal("export MISSING_VAR=... before moat run", f.fix)
  end)
end)
