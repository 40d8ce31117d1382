-- Specs for the moat host (src/main.c): what it does before any Lua runs.
local lfs = require("lfs")

local function run(cmd)
  local f = assert(io.popen(cmd, "r"))
  local out = f:read("a")
  local ok, _, code = f:close()
  return out, ok and 0 or code
end

local function q(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

describe("the moat host", function()
  local dir

  setup(function()
    dir = os.tmpname()
    os.remove(dir)
    assert(lfs.mkdir(dir))
    assert(lfs.mkdir(dir .. "/moat"))
    -- A CLI stand-in that reports, on stderr, what fd 0, 1 and 2 are.
    local f = assert(io.open(dir .. "/moat/cli.lua", "w"))
    f:write([[
local M = {}
function M.main()
  for fd = 0, 2 do
    io.stderr:write(fd, "=", require("lfs").symlinkattributes("/proc/self/fd/" .. fd, "target") or "closed", "\n")
  end
  return 0
end
return M
]])
    f:close()
  end)

  teardown(function()
    os.remove(dir .. "/moat/cli.lua")
    lfs.rmdir(dir .. "/moat")
    lfs.rmdir(dir)
  end)

  it("runs with stdout closed and exits 0", function()
    local _, code = run("sh -c 'exec " .. q(MOAT_BIN) .. " version >&-'")
    assert.equal(0, code)
  end)

  it("opens /dev/null on each of fds 0, 1 and 2 that is closed, before any Lua runs", function()
    local env = "MOAT_LUA_PATH=" .. q(dir) .. " "
    local out = run(env .. "sh -c 'exec " .. q(MOAT_BIN) .. " x 2>&1 >&-'")
    -- stderr is the pipe to us; stdout was closed
    assert.matches("1=/dev/null\n", out, 1, true)
    out = run(env .. "sh -c 'exec " .. q(MOAT_BIN) .. " x 2>&1 <&-'")
    assert.matches("0=/dev/null\n", out, 1, true)
    assert.matches("1=pipe:", out, 1, true)
  end)
end)
