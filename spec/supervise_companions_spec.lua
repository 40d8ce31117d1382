-- moat.supervise and a launch's companions (the runtime contract in moat.runtime): spawned just
-- before the client with their stdin, waited on without blocking the client's output, killed
-- when the client ends, and the launch's finish run once on every path.
local t = require("support.moat")
local supervise = require("moat.supervise")

describe("moat.supervise with companions", function()
  local dir

  before_each(function()
    dir = t.tmpdir()
  end)

  after_each(function()
    t.rmtree(dir)
  end)

  local function alive(pidfile)
    local pid = t.read(pidfile)
    return pid ~= nil and t.exists("/proc/" .. pid:match("%d+") .. "/stat")
      and not (t.read("/proc/" .. pid:match("%d+") .. "/stat") or ""):find("^%d+ %b() Z")
  end

  it("feeds each companion its stdin, kills it when the client ends, then runs finish once", function()
    local finished = 0
    local big = ("x"):rep(200000)
    local launch = {
      argv = { "sh", "-c", 'while [ ! -s "$0/got" ]; do sleep 0.05; done', dir },
      companions = {
        { argv = { "sh", "-c", 'echo $$ > "$0/pid"; cat > "$0/data"; wc -c < "$0/data" > "$0/got"; sleep 60', dir },
          stdin = big },
      },
      finish = function() finished = finished + 1 end,
    }
    local r = assert(supervise.run(launch))
    assert.equal(0, r.status)
    assert.equal(big, t.read(dir .. "/data"))
    assert.equal(1, finished)
    -- The companion (sleeping 60 s) is gone with the run.
    assert.is_false(alive(dir .. "/pid"))
  end)

  it("runs nothing when a companion cannot start, and still runs finish", function()
    local finished = 0
    local r, err = supervise.run({
      argv = { "sh", "-c", 'touch "$0/ran"', dir },
      companions = { { argv = { dir .. "/no-such-helper" } } },
      finish = function() finished = finished + 1 end,
    })
    assert.is_nil(r)
    assert.matches("no%-such%-helper", err)
    assert.is_false(t.exists(dir .. "/ran"))
    assert.equal(1, finished)
  end)

  it("keeps waiting for the client after a companion has ended", function()
    local r = assert(supervise.run({
      argv = { "sh", "-c", 'sleep 0.5; cp "$0/c" "$0/out"', dir },
      companions = { { argv = { "sh", "-c", 'cat > "$0/c"', dir }, stdin = "from the companion" } },
    }))
    assert.equal(0, r.status)
    assert.equal("from the companion", t.read(dir .. "/out"))
  end)
end)
