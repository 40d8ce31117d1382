-- Hostile config files (SECURITY.md 23): a workspace's moat.yaml/agent.yaml that is a symlink
-- out of the workspace, a FIFO, a device, a socket or a directory is refused with exit 78
-- naming the file and what it is, without ever blocking; --config FILE may be a symlink.
local t = require("support.moat")
local need = require("support.need")

describe("config files moat refuses to read", function()
  local root, ws

  before_each(function()
    root = t.tmpdir()
    ws = root .. "/ws"
    t.write(ws .. "/README", "workspace\n")
  end)
  after_each(function() t.rmtree(root) end)

  local function env()
    return { HOME = root .. "/home", XDG_CONFIG_HOME = false, MOAT_HOME = root .. "/home/.moat",
      MOAT_LUA_PATH = false, MOAT_SITE_DIR = root .. "/site" }
  end

  -- Runs `moat config` with a deadline so that a blocking open fails the test instead of hanging it.
  local function config(args)
    local argv = { "config" }
    for _, a in ipairs(args) do argv[#argv + 1] = a end
    local code, out, err, r = t.moat(argv, { env = env(), timeout = 10000 })
    assert.is_falsy(r.timed_out, "moat config blocked")
    return code, out, err
  end

  local function sh(cmd, ...)
    return t.exec({ "sh", "-c", cmd, "sh", ... }).code
  end

  it("refuses a symlink to a file outside the workspace and prints none of its text", function()
    -- Old code: followed the link and printed each key of the target as an unknown-key warning.
    t.write(root .. "/outside.yaml", "leaked_line_one: 1\nname: stolen\n")
    assert.equal(0, sh('ln -s "$1" "$2"', root .. "/outside.yaml", ws .. "/moat.yaml"))
    local code, out, err = config({ ws })
    assert.equal(78, code)
    assert.equal("", out)
    assert.matches(ws .. "/moat.yaml is a symlink to a file outside the workspace", err, 1, true)
    assert.is_nil(err:find("leaked_line_one", 1, true))
    assert.is_nil(err:find("stolen", 1, true))
  end)

  it("refuses a symlink that climbs out through ..", function()
    t.write(root .. "/outside.yaml", "name: stolen\n")
    assert.equal(0, sh('ln -s ../outside.yaml "$1"', ws .. "/agent.yaml"))
    local code, _, err = config({ ws })
    assert.equal(78, code)
    assert.matches("agent.yaml is a symlink to a file outside the workspace", err, 1, true)
  end)

  it("accepts a symlink to a file inside the workspace", function()
    t.write(ws .. "/conf/real.yaml", "name: inside\n")
    assert.equal(0, sh('ln -s conf/real.yaml "$1"', ws .. "/moat.yaml"))
    local code, out = config({ ws })
    assert.equal(0, code)
    assert.matches("name: inside", out, 1, true)
  end)

  it("refuses a dangling symlink instead of falling back to agent.yaml", function()
    -- Old code: the open failed, moat.yaml counted as absent and agent.yaml was used.
    t.write(ws .. "/agent.yaml", "name: fallback\n")
    assert.equal(0, sh('ln -s nowhere.yaml "$1"', ws .. "/moat.yaml"))
    local code, _, err = config({ ws })
    assert.equal(78, code)
    assert.matches(ws .. "/moat.yaml is a symlink to nowhere", err, 1, true)
  end)

  it("refuses a FIFO without blocking on it", function()
    -- Old code: io.open on the FIFO waited for a writer forever.
    assert.equal(0, sh('mkfifo "$1"', ws .. "/moat.yaml"))
    local code, _, err = config({ ws })
    assert.equal(78, code)
    assert.matches(ws .. "/moat.yaml is a FIFO (named pipe); a config must be a regular file", err, 1, true)
  end)

  it("refuses a directory", function()
    -- Old code: reading the directory gave nothing and the empty config loaded.
    t.write(ws .. "/moat.yaml/x", "")
    local code, _, err = config({ ws })
    assert.equal(78, code)
    assert.matches(ws .. "/moat.yaml is a directory", err, 1, true)
  end)

  it("refuses a socket", function()
    -- Old code: the open failed and the socket counted as no config at all.
    local r = t.exec({ "python3", "-c", "import socket,sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])",
      ws .. "/agent.yaml" })
    if r.code ~= 0 then return pending(need.missing("a unix socket in a temp dir", r.stderr)) end
    local code, _, err = config({ ws })
    assert.equal(78, code)
    assert.matches(ws .. "/agent.yaml is a socket", err, 1, true)
  end)

  it("refuses a device node", function()
    if sh('mknod "$1" c 1 3 2>/dev/null', ws .. "/moat.yaml") ~= 0 then
      return pending(need.missing("mknod", "making a device node needs root and CAP_MKNOD"))
    end
    local code, _, err = config({ ws })
    assert.equal(78, code)
    assert.matches(ws .. "/moat.yaml is a character device", err, 1, true)
  end)

  it("accepts --config FILE that is a symlink, since the user named it", function()
    t.write(root .. "/mine/real.yaml", "name: mine\n")
    assert.equal(0, sh('ln -s "$1" "$2"', root .. "/mine/real.yaml", root .. "/link.yaml"))
    local code, out = config({ ws, "--config", root .. "/link.yaml" })
    assert.equal(0, code)
    assert.matches("name: mine", out, 1, true)
  end)

  it("names a --config file that does not exist", function()
    local code, _, err = config({ ws, "--config", root .. "/missing.yaml" })
    assert.equal(78, code)
    assert.matches("config file " .. root .. "/missing.yaml does not exist", err, 1, true)
  end)

  it("refuses --config naming a device or a FIFO", function()
    -- Old code: /dev/null read as an empty config and loaded; a FIFO blocked.
    local code, _, err = config({ ws, "--config", "/dev/null" })
    assert.equal(78, code)
    assert.matches("/dev/null is a character device", err, 1, true)
    assert.equal(0, sh('mkfifo "$1"', root .. "/pipe.yaml"))
    code, _, err = config({ ws, "--config", root .. "/pipe.yaml" })
    assert.equal(78, code)
    assert.matches("pipe.yaml is a FIFO", err, 1, true)
  end)
end)
