-- moat's reaper, the watchdog `moat-init --reap MOAT_PID -- CLEANUP...` (init/reap.c): it does
-- nothing while moat lives, and once moat is gone it kills the children it saw and runs the
-- cleanup.
local t = require("support.moat")
local proc = require("moat.c.proc")
local sys = require("moat.c.system")
local P = dofile(MOAT_ROOT .. "/spec/fixtures/faults/procs.lua")

describe("moat.reaper", function()
  local reaper = require("moat.reaper")
  local INIT = _G.MOAT_BIN:gsub("moat$", "moat-init")
  local dir, tag

  before_each(function()
    dir, tag = t.tmpdir(), P.new_tag()
  end)

  after_each(function()
    P.kill_tagged(tag)
    t.rmtree(dir)
  end)

  local function start(pid, cleanup)
    local argv = { INIT, "--reap", tostring(pid), "--" }
    for _, a in ipairs(cleanup) do argv[#argv + 1] = a end
    return assert(proc.spawn(argv, { env = { "PATH=" .. os.getenv("PATH") }, stdout = "pipe", stderr = "pipe" }))
  end

  it("is started from the moat-init beside moat, with moat's pid and the cleanup", function()
    local argv = assert(reaper.argv({ cleanup = { "docker", "rm", "-f", "moat-x" } }, { init = INIT }))
    assert.same({ INIT, "--reap", tostring(sys.getpid()), "--", "docker", "rm", "-f", "moat-x" }, argv)
    -- Without moat-init there is no watchdog, and moat says what is missing.
    local none, err = reaper.start({}, { init = false })
    if none then none:close() end
    assert.is_nil(none)
    assert.matches("moat-init is not installed beside moat", err, 1, true)
  end)

  it("refuses a call without a pid and -- (64)", function()
    local r = t.exec({ INIT, "--reap" })
    assert.equal(64, r.code)
    assert.matches("--reap MOAT_PID", r.stderr, 1, true)
  end)

  it("does nothing while its parent lives", function()
    local p <close> = start(sys.getpid(), { "touch", dir .. "/cleaned" })
    proc.wait({ p }, 800)
    assert.is_false(p:done())
    assert.is_false(t.exists(dir .. "/cleaned"))
  end)

  it("runs the cleanup, in passes, once the moat it watches is gone", function()
    -- A pid that is not its parent: to the reaper, that moat is already gone.
    local p <close> = start(1, { "sh", "-c", "echo x >> " .. dir .. "/cleaned" })
    local deadline = sys.monotonic_ms() + 15000
    while not p:done() and sys.monotonic_ms() < deadline do proc.wait({ p }, 200) end
    assert.is_true(p:done())
    assert.equal(0, p:result().code, p:result().stderr)
    assert.equal(#reaper.PASSES_MS, #t.slurp(dir .. "/cleaned"):gsub("[^\n]", ""))
  end)

  it("kills the process groups of the children moat had when moat dies", function()
    -- A stand-in for moat: a shell that starts a process group (setsid) and the reaper (in a
    -- group of its own, as moat starts it), then is killed; the reaper must take the group down.
    local script = ("setsid sleep %s & setsid %q --reap $$ -- & sleep 1; kill -KILL $$"):format(tag, INIT)
    local sh = assert(proc.spawn({ "sh", "-c", script }, { env = { "PATH=" .. os.getenv("PATH") } }))
    P.finish(sh)
    assert.same({}, P.wait_gone(tag, 3000))
  end)

  it("notes a child moat started just before dying when poked, not at its next look", function()
    -- The stand-in starts the reaper, lets it take its first look, starts a group, pokes
    -- the reaper (as moat does once the client runs) and dies well within the 200 ms tick.
    local script = ("setsid %q --reap $$ -- & r=$!; sleep 0.05; setsid sleep %s & sleep 0.01; kill -URG $r; "
      .. "sleep 0.02; kill -KILL $$"):format(INIT, tag)
    -- No pipes: a sleep left behind must not hold this wait, only fail the check below.
    local sh = assert(proc.spawn({ "sh", "-c", script }, { env = { "PATH=" .. os.getenv("PATH") },
      stdout = "null", stderr = "null" }))
    P.finish(sh)
    assert.same({}, P.wait_gone(tag, 3000))
  end)
end)
