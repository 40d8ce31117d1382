-- moat-init (init/moat-init.c) on its own: the FIFO, the feeder and the shim hand values over
-- byte-exact; a truncated or malformed stream never starts the command; exec failures are 127
-- and 126 like a shell's. Lint: cppcheck-clean, functions of at most 60 lines.
local t = require("support.moat")
local shim = require("moat.shim")
local proc = require("moat.c.proc")
local lfs = require("lfs")

local INIT = MOAT_ROOT .. "/build/moat-init"

describe("moat-init", function()
  local dir, fifo

  before_each(function()
    dir = t.tmpdir()
    fifo = dir .. "/env"
    assert.equal(0, t.exec({ INIT, "--mkfifo", fifo }).code)
  end)

  after_each(function()
    t.rmtree(dir)
  end)

  -- Feeds `records` into the FIFO and runs `command` through the shim, both at once; returns the
  -- shim's result.
  local function through(records, command)
    local feed = assert(proc.spawn({ INIT, "--feed", fifo }, { stdin = records, stdout = "null", stderr = "pipe" }))
    local p = assert(proc.spawn({ INIT, "--from", fifo, "--", table.unpack(command) }, { timeout = 20000 }))
    while not p:done() do
      local list = { p }
      if not feed:done() then list[2] = feed end
      proc.wait(list, 1000)
    end
    feed:close()
    return p:result()
  end

  it("makes a FIFO readable by the container's user, inside moat's own directory", function()
    assert.equal("named pipe", lfs.attributes(fifo, "mode"))
    assert.equal("rw-r--r--", lfs.attributes(fifo, "permissions"))
    assert.equal(125, t.exec({ INIT, "--mkfifo", fifo }).code)
  end)

  it("hands values over byte-exact: spaces, quotes, '=', newlines, UTF-8, empty", function()
    local values = { A = "  lead and trail  ", B = "x=y=z", C = "-----BEGIN-----\nline\n\n-----END-----\n",
      D = "héllo ✓ 秘密", E = "", F = "'\"$HOME`" }
    local script = 'for v in A B C D E F; do eval "printf \'%s|\' \\"\\$$v\\""; done'
    local r = through(shim.records(values), { "sh", "-c", script })
    assert.equal(0, r.code, r.stderr)
    assert.equal(table.concat({ values.A, values.B, values.C, values.D, values.E, values.F }, "|") .. "|", r.stdout)
  end)

  it("keeps the command's arguments and exit status, and reports exec failures like a shell", function()
    local r = through(shim.records({ X = "1" }), { "sh", "-c", 'printf "%s;%s" "$0" "$X"; exit 42', "arg zero" })
    assert.equal(42, r.code)
    assert.equal("arg zero;1", r.stdout)
    r = through(shim.records({}), { "no-such-command-anywhere" })
    assert.equal(127, r.code)
    assert.matches("no-such-command-anywhere: command not found", r.stderr, 1, true)
    r = through(shim.records({}), { dir })
    assert.equal(126, r.code)
  end)

  it("refuses a truncated or malformed stream without starting the command", function()
    local full = shim.records({ TOKEN = "value" })
    for _, bad in ipairs({ full:sub(1, -4), "", "9:TOKEN=v,0:,", "7:1ABC=vv,0:,", "5:A=b c,0:,x", "4:ABCD,0:," }) do
      local r = through(bad, { "sh", "-c", "echo ran" })
      assert.equal(125, r.code, bad)
      assert.equal("", r.stdout)
      assert.matches("moat-init: the values from moat", r.stderr, 1, true)
    end
  end)

  it("prints its usage for anything else", function()
    local r = t.exec({ INIT, "--bogus" })
    assert.equal(64, r.code)
    assert.matches("usage: moat-init", r.stderr, 1, true)
  end)

  it("is cppcheck-clean and keeps its functions short", function()
    local r = t.exec({ "cppcheck", "--enable=warning,portability,performance", "--std=c11", "-D_GNU_SOURCE",
      "--library=posix", "--inline-suppr", "--error-exitcode=1", "--quiet", "init" }, { cwd = MOAT_ROOT })
    assert.equal(0, r.code, r.stdout .. r.stderr)
    local start, long = nil, {}
    local n = 0
    for line in io.lines(MOAT_ROOT .. "/init/moat-init.c") do
      n = n + 1
      if line:match("^[%a_][%w_ %*]*%(.*%)$") then start = n end
      if line == "}" and start then
        if n - start + 1 > 60 then long[#long + 1] = start end
        start = nil
      end
    end
    assert.same({}, long)
  end)
end)
