-- Specs for moat.c.signal: caught signals are recorded, in order, until collected.
local signal = require("moat.c.signal")

local function self_pid()
  local f = assert(io.open("/proc/self/stat", "rb"))
  local pid = tonumber(f:read("a"):match("^(%d+)"))
  f:close()
  return pid
end

-- Sends sig to this process with kill(1), as another process would.
local function send(sig)
  assert(os.execute("kill -" .. sig .. " " .. self_pid()))
end

-- Collects pending signals until `n` have arrived (a few seconds at most).
local function collect(n)
  local got = {}
  for _ = 1, 200 do
    for _, s in ipairs(signal.pending()) do got[#got + 1] = s end
    if #got >= n then break end
    os.execute("sleep 0.02")
  end
  return got
end

describe("moat.c.signal", function()
  after_each(function() signal.restore() end)

  it("records caught signals in the order they arrive, once each", function()
    assert.is_true(signal.catch({ "HUP", "USR1", 12 }))
    send("HUP")
    send("USR1")
    send("USR2")
    assert.same({ 1, 10, 12 }, collect(3))
    assert.same({}, signal.pending())
  end)

  it("gives a signal its default disposition back on restore", function()
    -- In a child Lua: with USR1 caught it survives its own USR1; restored, it dies of it.
    local cpath = MOAT_BIN:gsub("/moat$", "") .. "/lib/?.so"
    local function child(code)
      local path = os.tmpname()
      local f = assert(io.open(path, "w"))
      f:write(("package.cpath = %q\nlocal signal = require('moat.c.signal')\n%s\n"):format(cpath, code))
      f:close()
      local p = assert(io.popen("lua5.4 '" .. path .. "' 2>/dev/null; echo \"status $?\"", "r"))
      local out = p:read("a")
      p:close()
      os.remove(path)
      return out
    end
    local kill_self = "os.execute('kill -USR1 ' .. io.open('/proc/self/stat'):read('l'):match('^%d+'))"
    assert.equal("10 status 0\n", child("signal.catch({ 'USR1' }); " .. kill_self
      .. "; os.execute('sleep 0.2'); io.write(signal.pending()[1], ' ')"))
    assert.equal("status 138\n", child("signal.catch({ 'USR1' }); assert(signal.restore()); " .. kill_self
      .. "; io.write('survived ')"))
  end)

  it("raises on signals that cannot be caught here, and on unknown ones", function()
    for _, bad in ipairs({ { "KILL" }, { "STOP" }, { "CHLD" }, { "NOPE" }, { 0 }, { 64 }, { true } }) do
      assert.has_error(function() signal.catch(bad) end)
    end
    assert.has_error(function() signal.catch("INT") end)
  end)

  it("maps signal names and numbers", function()
    assert.equal(15, signal.number("TERM"))
    assert.equal(15, signal.number("SIGTERM"))
    assert.equal(2, signal.number("INT"))
    assert.is_nil(signal.number("NOPE"))
    assert.is_nil(signal.number("term"))
    assert.equal("HUP", signal.name(1))
    assert.equal("KILL", signal.name(9))
    assert.is_nil(signal.name(1000))
    assert.has_error(function() signal.name("HUP") end)
  end)
end)
