local t = require("support.moat")
local need = require("support.need")

-- Installs into temporary prefixes and trees; builds into its own directories so the
-- suite's build/ is never touched.
describe("installation", function()
  local tmp

  setup(function() tmp = t.tmpdir() end)
  teardown(function() t.rmtree(tmp) end)

  it("make install PREFIX=… gives a moat that works from any directory", function()
    local r = t.exec({ "make", "-C", MOAT_ROOT, "install", "BUILD=" .. tmp .. "/build", "PREFIX=" .. tmp .. "/prefix" })
    assert.equal(0, r.code, r.stderr)
    local bin = tmp .. "/prefix/bin/moat"
    local v = t.exec({ bin, "version" }, { cwd = "/" })
    assert.equal(0, v.code, v.stderr)
    assert.matches("^moat %d", v.stdout)
    local c = t.exec({ bin, "config", MOAT_ROOT .. "/examples/hello" }, { cwd = "/", env = { HOME = tmp } })
    assert.equal(0, c.code, c.stderr)
    assert.matches("name: hello", c.stdout, 1, true)
    assert.is_true(t.exists(tmp .. "/prefix/share/moat/lua/moat/boot.lua"))
  end)

  it("installs the man page and the bash, zsh and fish completions, made by the installed moat", function()
    local share = tmp .. "/prefix/share/"
    local man = t.slurp(share .. "man/man1/moat.1")
    assert.matches("^%.TH MOAT 1", man)
    assert.equal(t.slurp(MOAT_ROOT .. "/docs/moat.1"), man)
    assert.matches("complete %-F _moat", t.slurp(share .. "bash-completion/completions/moat"))
    assert.matches("^#compdef moat\n", t.slurp(share .. "zsh/site-functions/_moat"))
    assert.matches("complete %-c moat ", t.slurp(share .. "fish/vendor_completions.d/moat.fish"))
  end)

  it("luarocks make installs the Lua layer and the C modules into a tree", function()
    if not t.which("luarocks") then
      pending(need.missing("luarocks", "make deps installs it"))
      return
    end
    local tree = tmp .. "/tree"
    local r = t.exec({ "luarocks", "--lua-version", "5.4", "make", "--deps-mode=none", "--tree", tree,
      "rocks/moat-scm-1.rockspec" }, { cwd = MOAT_ROOT, timeout = 300000 })
    assert.equal(0, r.code, r.stdout .. r.stderr)
    local probe = t.exec({ "lua5.4", "-e", [[
      local tree = os.getenv("MOAT_TREE")
      package.path = tree .. "/share/lua/5.4/?.lua;" .. package.path
      package.cpath = tree .. "/lib/lua/5.4/?.so;" .. package.cpath
      local sys = require("moat.c.system")
      local cfg = require("moat.config")
      io.write(sys.sha256("abc"), " ", cfg.FILES[1])
    ]] }, { cwd = "/", env = { MOAT_TREE = tree } })
    assert.equal(0, probe.code, probe.stderr)
    assert.equal("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad moat.yaml", probe.stdout)
    local v = t.exec({ tree .. "/bin/moat", "version" }, { cwd = "/" })
    assert.equal(0, v.code, v.stderr)
    t.rmtree(MOAT_ROOT .. "/build-rock")
  end)
end)
