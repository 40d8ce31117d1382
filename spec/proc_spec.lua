local proc = require("moat.proc")
local t = require("support.moat")

local barrier = MOAT_ROOT .. "/spec/fixtures/proc/barrier.sh"

local read_file = t.read

-- Max number of children between "start" and "end" in the log, and the log's lines.
local function concurrency(log)
  local lines, alive, max = {}, 0, 0
  for line in assert(read_file(log)):gmatch("[^\n]+") do
    lines[#lines + 1] = line
    if line:match("^start") then alive = alive + 1 elseif line:match("^end") then alive = alive - 1 end
    if alive > max then max = alive end
  end
  return max, lines
end

local tmp, n_logs = nil, 0
local function new_log()
  n_logs = n_logs + 1
  return tmp .. "/log" .. n_logs
end

setup(function()
  tmp = proc.run({ "mktemp", "-d" }).stdout:gsub("\n$", "")
end)
teardown(function()
  proc.run({ "rm", "-rf", tmp })
end)

describe("moat.proc", function()
  it("runs synchronously outside a task", function()
    local r = proc.run({ "sh", "-c", "echo out; echo err >&2; exit 3" })
    assert.equal(3, r.code)
    assert.equal("out\n", r.stdout)
    assert.equal("err\n", r.stderr)
    assert.equal("integer", math.type(r.ms))
    local none, msg = proc.run({ "moat-no-such-program" })
    assert.is_nil(none)
    assert.equal("moat-no-such-program: No such file or directory", msg)
  end)

  it("passes options through to spawn", function()
    local r = proc.run({ "cat" }, { stdin = "data in", timeout = 30000 })
    assert.equal("data in", r.stdout)
    assert.is_true(proc.run({ "sleep", "100" }, { timeout = 50 }).timed_out)
  end)

  it("runs tasks concurrently and returns first results in order", function()
    local log, fns = new_log(), {}
    for i = 1, 4 do
      fns[i] = function()
        local r = assert(proc.run({ barrier, log, tostring(i), "4", "4" }, { timeout = 60000 }))
        return r.stdout, "ignored"
      end
    end
    local results = proc.gather(fns, { jobs = 4 })
    assert.same({ "1\n", "2\n", "3\n", "4\n" }, results)
    local max, lines = concurrency(log)
    assert.equal(4, max)
    assert.equal(8, #lines)
    -- Every child started before any ended: they overlapped.
    for i = 1, 4 do assert.matches("^start", lines[i]) end
  end)

  it("never has more than jobs children alive", function()
    local log, fns = new_log(), {}
    for i = 1, 7 do
      fns[i] = function()
        return assert(proc.run({ barrier, log, tostring(i), "2", "7" }, { timeout = 60000 })).code
      end
    end
    local results = proc.gather(fns, { jobs = 2 })
    assert.same({ 0, 0, 0, 0, 0, 0, 0 }, results)
    local max, lines = concurrency(log)
    -- Each child waits until two are alive, so 2 is reached; the limit keeps it at 2.
    assert.equal(2, max)
    assert.equal(14, #lines)
  end)

  it("shares the process limit with nested gathers", function()
    local log, outer = new_log(), {}
    local id = 0
    for o = 1, 3 do
      outer[o] = function()
        local inner = {}
        for i = 1, 3 do
          id = id + 1
          local my = id
          inner[i] = function()
            return assert(proc.run({ barrier, log, tostring(my), "3", "9" }, { timeout = 60000 })).stdout
          end
        end
        return table.concat(proc.gather(inner))
      end
    end
    local results = proc.gather(outer, { jobs = 3 })
    assert.same({ "1\n2\n3\n", "4\n5\n6\n", "7\n8\n9\n" }, results)
    local max, lines = concurrency(log)
    assert.equal(3, max)
    assert.equal(18, #lines)
  end)

  it("frees the slot when a spawn fails in a task", function()
    local results = proc.gather({
      function() return select(2, proc.run({ "moat-no-such-program" })) end,
      function() return proc.run({ "echo", "ok" }).stdout end,
    }, { jobs = 1 })
    assert.same({ "moat-no-such-program: No such file or directory", "ok\n" }, results)
  end)

  it("handles tasks that run nothing and an empty list", function()
    assert.same({}, proc.gather({}))
    assert.same({ 1, 2 }, proc.gather({ function() return 1 end, function() return 2 end }))
  end)

  it("re-raises a task's error with its traceback", function()
    local ok, err = pcall(proc.gather, {
      function() return proc.run({ "true" }).code end,
      function() error("boom in task") end,
    })
    assert.is_false(ok)
    assert.matches("boom in task", err)
    assert.matches("stack traceback", err)
  end)

  it("propagates an error from a nested gather to the enclosing task", function()
    local results = proc.gather({
      function()
        local ok, err = pcall(proc.gather, { function() error("inner failure") end })
        return not ok and err:match("inner failure")
      end,
    })
    assert.same({ "inner failure" }, results)
  end)

  it("kills children still running when a task fails", function()
    local pidfile = tmp .. "/victim.pid"
    assert.has_error(function()
      proc.gather({
        function() return proc.run({ "sh", "-c", "echo $$ > " .. pidfile .. "; exec sleep 100" }) end,
        function()
          proc.run({ "sh", "-c", "while [ ! -s " .. pidfile .. " ]; do sleep 0.01; done" }, { timeout = 30000 })
          error("fail while a sibling runs")
        end,
      })
    end)
    local pid = assert(tonumber(read_file(pidfile)))
    -- Killed and reaped: no /proc entry is left.
    assert.is_nil(read_file("/proc/" .. pid .. "/stat"))
  end)

  it("refuses a bad jobs value", function()
    assert.has_error(function() proc.gather({}, { jobs = 0 }) end)
  end)
end)

describe("moat.proc.reap_strays", function()
  it("kills and reaps the orphans re-parented to moat, never a process a handle tracks", function()
    local C, sys = require("moat.c.proc"), require("moat.c.system")
    local dir = t.tmpdir()
    local kept = assert(C.spawn({ "sleep", "100" }))
    assert.is_true(sys.subreaper(true))
    -- Its pid is written once it runs in a session of its own, out of reach of a group kill.
    proc.run({ "sh", "-c", ("setsid sh -c 'echo $$ > %s/p.tmp; mv %s/p.tmp %s/p; exec sleep 100' &"
      .. " while [ ! -s %s/p ]; do sleep 0.02; done"):format(dir, dir, dir, dir) },
      { stdout = "null", stderr = "null" })
    assert.is_true(sys.subreaper(false))
    local orphan = assert(tonumber(read_file(dir .. "/p")))
    t.rmtree(dir)
    assert.equal(1, proc.reap_strays())
    assert.is_nil(proc.stat(orphan))
    assert.is_false(kept:done())
    assert.equal(0, proc.reap_strays())
    kept:close()
  end)
end)
