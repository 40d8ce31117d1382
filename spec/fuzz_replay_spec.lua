-- Replays every fuzz corpus file (spec/fuzz/corpus/<target>/) through the normal build, with
-- the same checks the libFuzzer targets run (spec/fuzz/targets/<target>.lua), so an input
-- that once crashed or misbehaved stays fixed (SECURITY.md item 16).
local lfs = require("lfs")
local t = require("support.moat")

local FUZZ = MOAT_ROOT .. "/spec/fuzz"

local function entries(dir, pattern)
  local out = {}
  for name in lfs.dir(dir) do
    if name:sub(1, 1) ~= "." and name:match(pattern) then out[#out + 1] = name end
  end
  table.sort(out)
  return out
end

local slurp = t.slurp

describe("fuzz corpus replay", function()
  local targets = entries(FUZZ .. "/corpus", ".")

  it("has a corpus for every harness and a harness for every corpus", function()
    local harnesses = {}
    for _, name in ipairs(entries(FUZZ, "^fuzz_.*%.c$")) do harnesses[#harnesses + 1] = name:match("^fuzz_(.*)%.c$") end
    assert.same(harnesses, targets)
    for _, want in ipairs({ "yaml", "refs", "mask", "audit" }) do
      assert.is_truthy(lfs.attributes(FUZZ .. "/fuzz_" .. want .. ".c"), "no fuzz target " .. want)
    end
  end)

  for _, target in ipairs(targets) do
    it(target .. ": every corpus file passes the target's checks", function()
      local mod = require("fuzz.targets." .. target)
      local files = entries(FUZZ .. "/corpus/" .. target, ".")
      assert.is_true(#files > 0, "empty corpus for " .. target)
      local failed = {}
      for _, name in ipairs(files) do
        local ok, err = pcall(mod.check, slurp(FUZZ .. "/corpus/" .. target .. "/" .. name))
        if not ok then failed[#failed + 1] = target .. "/" .. name .. ": " .. tostring(err) end
      end
      if mod.cleanup then mod.cleanup() end
      assert.equal(0, #failed, table.concat(failed, "\n"))
    end)
  end
end)
