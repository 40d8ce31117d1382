-- SECURITY.md item 16 inside the one suite: the whole suite again on the ASan + UBSan build
-- (make test-asan), and the C module specs under valgrind memcheck (make valgrind). Each
-- passes only with no finding; a failure names the nested run's failing tests.
local t = require("support.moat")
local tap = require("support.tap")

-- make test-asan leaves this file out; should the suite still be run on an ASan build some other
-- way, these two are not registered there rather than starting the same runs again.
if (os.getenv("MOAT_BUILD") or ""):find("asan", 1, true) then return end

describe("sanitizers", function()
  it("the whole suite passes under AddressSanitizer and UBSan with no findings (make test-asan)", function()
    local r = t.exec({ "make", "-C", MOAT_ROOT, "test-asan" }, { timeout = 45 * 60 * 1000 })
    local out = r.stdout .. r.stderr
    assert.equal(0, r.code, tap.explain("make test-asan", out, 40))
    assert.matches("\n(%d+) passed, 0 failed", out)
    assert.is_nil(out:find("\nsanitizer findings above\n", 1, true), tap.explain("make test-asan", out, 40))
  end)

  it("the C module specs show no memory error and no definite leak under valgrind (make valgrind)", function()
    local r = t.exec({ "make", "-C", MOAT_ROOT, "valgrind" }, { timeout = 45 * 60 * 1000 })
    local out = r.stdout .. r.stderr
    assert.equal(0, r.code, tap.explain("make valgrind", out, 40))
    assert.matches("\n1%.%.%d+", out)
    assert.is_nil(out:find("\nnot ok ", 1, true), tap.explain("make valgrind", out, 40))
  end)
end)
