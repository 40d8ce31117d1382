-- SECURITY.md item 16 inside the one suite: the whole suite again on the ASan + UBSan build
-- (make test-asan), and the C module specs under valgrind memcheck (make valgrind). Each
-- passes only with no finding. Skipped inside the sanitizer run itself.
local t = require("support.moat")

local function tail(text, n)
  local lines = {}
  for line in text:gmatch("[^\n]*") do lines[#lines + 1] = line end
  local out = table.move(lines, math.max(1, #lines - n), #lines, 1, {})
  -- Keep the inner suite's lines from reading as this suite's own results.
  for i, l in ipairs(out) do out[i] = "| " .. l end
  return table.concat(out, "\n")
end

describe("sanitizers", function()
  local nested = (os.getenv("MOAT_BUILD") or ""):find("asan", 1, true)

  it("the whole suite passes under AddressSanitizer and UBSan with no findings (make test-asan)", function()
    if nested then
      pending("this is the sanitizer run")
      return
    end
    local r = t.exec({ "make", "-C", MOAT_ROOT, "test-asan" }, { timeout = 45 * 60 * 1000 })
    local out = r.stdout .. r.stderr
    assert.equal(0, r.code, tail(out, 40))
    assert.matches("\n(%d+) passed, 0 failed", out)
    assert.is_nil(out:find("\nsanitizer findings above\n", 1, true))
  end)

  it("the C module specs show no memory error and no definite leak under valgrind (make valgrind)", function()
    if nested then
      pending("this is the sanitizer run")
      return
    end
    local r = t.exec({ "make", "-C", MOAT_ROOT, "valgrind" }, { timeout = 45 * 60 * 1000 })
    local out = r.stdout .. r.stderr
    assert.equal(0, r.code, tail(out, 40))
    assert.matches("\n1%.%.%d+", out)
    assert.not_matches("\nnot ok ", out)
  end)
end)
