-- Overrides through the loader, run through the moat binary: wrapping a built-in with
-- loader.builtin, core modules that no directory can replace.
local t = require("support.moat")

local function workspace()
  local dir = t.tmpdir()
  t.write(dir .. "/ws/moat.yaml", "name: wrap\nsecrets:\n  GREETING: hello there\n")
  return dir
end

describe("moat.loader", function()
  local dir
  before_each(function() dir = workspace() end)
  after_each(function() t.rmtree(dir) end)

  it("lets a user moat/audit.lua wrap one function of the built-in formatter", function()
    t.write(dir .. "/lua/moat/audit.lua", [[
local builtin = require("moat.loader").builtin("moat.audit")
local M = setmetatable({}, { __index = builtin })
function M.format(rtype, fields)
  local data = builtin.format(rtype, fields)
  data.site = "wrapped"
  return data
end
return M
]])
    local env = { MOAT_HOME = dir .. "/home", MOAT_LUA_PATH = dir .. "/lua" }
    local code, _, err = t.moat({ "run", "--no-mask", "--runtime", "host", dir .. "/ws", "--", "true" }, { env = env })
    assert.equal(0, code, err)
    local run = assert(io.popen("ls " .. dir .. "/home/runs")):read("l")
    local recs = t.records(t.slurp(dir .. "/home/runs/" .. run .. "/audit.jsonl"))
    assert.is_true(#recs >= 4)
    for _, r in ipairs(recs) do assert.equal("wrapped", r.data.site, r.type) end
    -- the built-in part still shapes the data
    assert.equal("GREETING", recs[2].data.name)
    code = t.moat({ "audit", "--last", "--verify" }, { env = env })
    assert.equal(0, code)
  end)

  it("refuses a user file that would replace a core module, naming it", function()
    for _, name in ipairs({ "auditlog", "trust", "loader" }) do
      t.write(dir .. "/lua/moat/" .. name .. ".lua", "error('a replaced core module ran')\n")
    end
    local env = { MOAT_HOME = dir .. "/home", MOAT_LUA_PATH = dir .. "/lua" }
    local code, _, err = t.moat({ "run", "--no-mask", "--runtime", "host", dir .. "/ws", "--", "true" }, { env = env })
    assert.not_equal(0, code)
    assert.matches("lua/moat/trust.lua cannot replace moat's built-in moat.trust", err, 1, true)
    assert.is_nil(err:find("a replaced core module ran", 1, true))
    os.remove(dir .. "/lua/moat/trust.lua")
    code, _, err = t.moat({ "run", "--no-mask", "--runtime", "host", dir .. "/ws", "--", "true" }, { env = env })
    assert.not_equal(0, code)
    assert.matches("moat/auditlog.lua cannot replace moat's built-in moat.auditlog", err, 1, true)
    assert.is_nil(err:find("a replaced core module ran", 1, true))
  end)

  it("tells a missing module from a broken one by searching, not by reading the error", function()
    local loader = require("moat.loader")
    local mod, msg, why = loader.try("moat.backends.no_such_backend")
    assert.is_nil(mod)
    assert.equal("missing", why, msg)
    t.write(dir .. "/lua/moat/backends/broken.lua", "return { resolve = function() end ")
    package.path = dir .. "/lua/?.lua;" .. package.path
    mod, msg, why = loader.try("moat.backends.broken")
    assert.is_nil(mod)
    assert.equal("broken", why)
    assert.matches("broken.lua", msg, 1, true)
  end)
end)
