-- Lint as part of the suite (issue 7 item 5): luacheck over the Lua, cppcheck over the C.
local t = require("support.moat")
local lfs = require("lfs")

local function have(prog)
  return t.which(prog) ~= nil
end

describe("lint", function()
  it("luacheck finds nothing in lua/, examples/ and spec/", function()
    assert.is_true(have("luacheck"), "luacheck is not installed (make deps installs lua-check)")
    local r = t.exec({ "luacheck", "--no-color", "--quiet", "--config", MOAT_ROOT .. "/.luacheckrc",
      "lua", "examples", "spec" }, { cwd = MOAT_ROOT })
    assert.equal(0, r.code, r.stdout .. r.stderr)
    assert.matches("0 warnings / 0 errors", r.stdout)
  end)

  it("cppcheck finds nothing in src/, init/ or tools/", function()
    assert.is_true(have("cppcheck"), "cppcheck is not installed (make deps installs it)")
    -- System headers stay out (luaconf.h trips cppcheck's preprocessor); posix.cfg knows libc.
    local r = t.exec({ "cppcheck", "--enable=warning,portability,performance", "--std=c11",
      "-D_GNU_SOURCE", "--library=posix", "--inline-suppr", "--error-exitcode=1", "--quiet",
      "--template={file}:{line}: {severity} ({id}): {message}", "src", "init", "tools" }, { cwd = MOAT_ROOT })
    assert.equal(0, r.code, r.stdout .. r.stderr)
    assert.equal("", r.stderr)
  end)

  it("specs skip only through support.need, so that CI=true turns every skip into a failure", function()
    local bad = {}
    for _, dir in ipairs({ "spec", "spec/support" }) do
      for name in lfs.dir(MOAT_ROOT .. "/" .. dir) do
        if name:match("%.lua$") then
          local n = 0
          for line in t.slurp(MOAT_ROOT .. "/" .. dir .. "/" .. name):gmatch("([^\n]*)\n?") do
            n = n + 1
            -- The global pending (not signal.pending and the like), outside comments.
            for call in (" " .. line:gsub("%-%-.*$", "")):gmatch("[^%w_%.:]pending%s*[%(\"'][^\n]*") do
              if not call:match("^.pending%(need%.missing%(") then bad[#bad + 1] = dir .. "/" .. name .. ":" .. n end
            end
          end
        end
      end
    end
    assert.same({}, bad, "call pending(need.missing(what, why)) instead (spec/support/need.lua)")
  end)

  it("cppcheck's settings do catch a planted bug (the check is not vacuous)", function()
    local dir = t.tmpdir()
    t.write(dir .. "/bad.c", "#include <stdlib.h>\nint f(void)\n{\n    char *p = malloc(4);\n"
      .. "    p[4] = 0;\n    return 0;\n}\n")
    local r = t.exec({ "cppcheck", "--enable=warning,portability,performance", "--std=c11",
      "--library=posix", "--error-exitcode=1", "--quiet", dir .. "/bad.c" })
    t.rmtree(dir)
    assert.equal(1, r.code, r.stdout .. r.stderr)
    assert.matches("bad.c", r.stderr, 1, true)
  end)
end)
