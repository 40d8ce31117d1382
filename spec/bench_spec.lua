-- `make bench` runs end to end at a small N (the figures themselves are for people: on a shared
-- machine they are not pass/fail material). A slow spec (Makefile SLOW_SPECS): it starts moto
-- and podman and rebuilds through make.
local t = require("support.moat")
local need = require("support.need")

describe("make bench", function()
  it("prints the secrets table (moat, floor, baseline, processes) and the overhead tables at N = 10", function()
    local ok, why = require("support.moto").available()
    if not ok then return pending(need.missing("moto", why)) end
    local r = t.exec({ "make", "-s", "bench" }, { cwd = MOAT_ROOT, timeout = 600000, env = {
      MOAT_BENCH_N = "10", MOAT_BENCH_QUICK = "1", BENCH_OP_LATENCY_MS = "50",
    } })
    assert.are.equal(0, r.code, r.stdout .. r.stderr)
    assert.matches("| moat wall | floor wall | moat/floor | baseline wall |", r.stdout, 1, true)
    assert.matches("\n|  10 |", r.stdout, 1, true)
    assert.matches("(expected 1 + 2)", r.stdout, 1, true)
    assert.matches("## Launch overhead", r.stdout, 1, true)
    assert.matches("peak RSS", r.stdout, 1, true)
    assert.matches("## podman run with and without moat", r.stdout, 1, true)
    assert.matches("| 100 | %d+ MB/s | %d+ MB/s |", r.stdout)
  end)
end)
