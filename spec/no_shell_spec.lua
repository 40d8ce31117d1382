-- SECURITY.md item 11: moat never runs a shell. Its own code (lua/, src/) has no io.popen,
-- os.execute, system() or popen(), and no argv that starts "sh -c".
local lfs = require("lfs")
local t = require("support.moat")

local function files(dir, pattern, out)
  out = out or {}
  for name in lfs.dir(dir) do
    if name ~= "." and name ~= ".." then
      local path = dir .. "/" .. name
      local mode = lfs.attributes(path, "mode")
      if mode == "directory" then
        files(path, pattern, out)
      elseif name:match(pattern) then
        out[#out + 1] = path
      end
    end
  end
  return out
end

local read = t.slurp

describe("moat's own code", function()
  it("never asks for a shell", function()
    local lua = files(MOAT_ROOT .. "/lua", "%.lua$")
    local c = files(MOAT_ROOT .. "/src", "%.[ch]$")
    assert.is_true(#lua > 20 and #c >= 5)
    local found = {}
    for _, path in ipairs(lua) do
      local src = read(path)
      for _, pat in ipairs({ "io%.popen", "os%.execute", "[\"']sh[\"']%s*,%s*[\"']%-c[\"']", "/bin/sh" }) do
        if src:find(pat) then found[#found + 1] = path .. ": " .. pat end
      end
    end
    for _, path in ipairs(c) do
      local src = read(path)
      for _, pat in ipairs({ "[^_%w]system%s*%(", "[^_%w]popen%s*%(", "/bin/sh", "execl%s*%(" }) do
        if src:find(pat) then found[#found + 1] = path .. ": " .. pat end
      end
    end
    assert.same({}, found)
  end)

  it("the check itself finds a shell call when there is one", function()
    assert.truthy(("local p = io.popen('ls')"):find("io%.popen"))
    assert.truthy(('spawn({"sh", "-c", cmd})'):find("[\"']sh[\"']%s*,%s*[\"']%-c[\"']"))
  end)
end)
