-- moat.shim and the docker/podman launch through it, with the real moat-init (build/moat-init)
-- making the FIFO and a fake client answering `image inspect`.
local t = require("support.moat")
local shim = require("moat.shim")
local docker = require("moat.runtime.docker")
local podman = require("moat.runtime.podman")
local runtime = require("moat.runtime")
local lfs = require("lfs")

local INIT = MOAT_ROOT .. "/build/moat-init"

local function index(list, x)
  for i, v in ipairs(list) do if v == x then return i end end
  return nil
end

-- A runner that answers `image inspect` with `inspect` (or fails `fails` times first) and runs
-- everything else for real; calls are recorded.
local function runner(inspect, fails)
  local calls = {}
  return function(argv, ms)
    calls[#calls + 1] = argv
    if argv[2] == "image" and argv[3] == "inspect" then
      if (fails or 0) > 0 then
        fails = fails - 1
        return { code = 1, stdout = "", stderr = "Error: No such image: x\n" }
      end
      return { code = 0, stdout = inspect .. "\n", stderr = "" }
    end
    if argv[2] == "pull" then return { code = 0, stdout = "", stderr = "" } end
    return runtime.run(argv, ms)
  end, calls
end

local function spec(over)
  local s = {
    run_id = "20261128T124533.123Z-1a2b3c4d", name = "t", workspace = "/work/space", image = "busybox:1",
    command = { "sh", "-c", "echo hi" }, interactive = false, tty = false, keep = false, mounts = {}, container = {},
    names = { "PLAIN", "TOKEN" }, init = INIT,
    environ = { PATH = "/usr/bin:/bin", HOME = "/home/u", DOCKER_HOST = "unix:///x.sock" },
  }
  for k, v in pairs(over or {}) do s[k] = v end
  return s
end

local ENV = { PLAIN = "plain value", TOKEN = "s3cret value\nline 2 = x ✓" }

describe("moat.shim", function()
  it("frames records as netstrings, sorted, with an end record", function()
    assert.equal("7:A=1 2 3,11:B=x\ny=z\n✓,0:,", shim.records({ B = "x\ny=z\n✓", A = "1 2 3" }))
    assert.equal("0:,", shim.records({}))
  end)

  it("puts the image's entrypoint before the user's command, or its own command, or sh", function()
    assert.same({ "/ep", "a", "b" }, shim.command({ "/ep" }, { "def" }, { "a", "b" }))
    assert.same({ "/ep", "def" }, shim.command({ "/ep" }, { "def" }, nil))
    assert.same({ "sh" }, shim.command({}, {}, nil))
  end)

  it("reads the entrypoint and command from inspect, pulling a missing image once", function()
    local run, calls = runner('{"e":["/docker-entrypoint.sh"],"c":["nginx","-g","daemon off;"]}', 1)
    local e, c = shim.image_command("docker", "nginx:1", run)
    assert.same({ "/docker-entrypoint.sh" }, e)
    assert.same({ "nginx", "-g", "daemon off;" }, c)
    assert.same({ "docker", "pull", "--quiet", "nginx:1" }, calls[2])
    e, c = shim.image_command("podman", "x", (runner('{"e":null,"c":null}')))
    assert.same({}, e)
    assert.same({}, c)
    local ok, err = shim.image_command("docker", "gone:1", (runner("", 5)))
    assert.is_nil(ok)
    assert.matches("cannot read the entrypoint and command of image 'gone:1'", err, 1, true)
  end)
end)

describe("docker and podman through the init shim", function()
  it("mount the shim and the FIFO read-only, enter through the shim, keep values out of argv and environ",
    function()
      local run = runner('{"e":["/ep"],"c":["def"]}')
      local l = assert(docker.launch(spec({ run = run }), ENV))
      local a = l.argv
      local fifo = l.companions[1].argv[3]
      assert.same({ INIT, "--feed", fifo }, l.companions[1].argv)
      assert.equal("-v", a[index(a, INIT .. ":/.moat/init:ro") - 1])
      assert.equal("-v", a[index(a, fifo .. ":/.moat/env:ro") - 1])
      local img = index(a, "busybox:1")
      assert.same({ "--entrypoint", "/.moat/init" }, { a[img - 2], a[img - 1] })
      assert.same({ "--from", "/.moat/env", "--", "/ep", "sh", "-c", "echo hi" }, { table.unpack(a, img + 1) })
      assert.is_nil(index(a, "--env"))
      for _, x in ipairs(a) do assert.is_nil(x:find("s3cret", 1, true)) end
      for _, x in ipairs(l.env) do
        assert.is_nil(x:find("s3cret", 1, true))
        assert.is_nil(x:find("plain value", 1, true))
      end
      assert.equal(shim.records(ENV), l.companions[1].stdin)
      -- The FIFO is a FIFO in a 0700 directory of its own, under /tmp here; finish removes both.
      local dir = fifo:match("^(.*)/env$")
      assert.matches("^/tmp/moat%-%x+$", dir)
      assert.equal("named pipe", lfs.attributes(fifo, "mode"))
      assert.equal("rwx------", lfs.attributes(dir, "permissions"))
      l.finish()
      assert.is_nil(lfs.attributes(dir, "mode"))
    end)

  it("put the FIFO under XDG_RUNTIME_DIR when there is one; podman the same way", function()
    local xdg = t.tmpdir()
    local s = spec({ run = (runner('{"e":null,"c":["/bin/sh"]}')), command = false })
    s.command = nil
    s.environ.XDG_RUNTIME_DIR = xdg
    local l = assert(podman.launch(s, ENV))
    local a = l.argv
    assert.equal("podman", a[1])
    assert.equal(xdg, l.companions[1].argv[3]:match("^(.*)/moat%-%x+/env$"))
    assert.same({ "--", "/bin/sh" }, { table.unpack(a, #a - 1) })
    l.finish()
    t.rmtree(xdg)
  end)

  it("skip the shim when there are no values, and fail the launch when the image cannot be read", function()
    local l = assert(docker.launch(spec({ names = {} }), {}))
    assert.is_nil(l.companions)
    assert.is_nil(index(l.argv, "--entrypoint"))
    assert.same({ "busybox:1", "sh", "-c", "echo hi" }, { table.unpack(l.argv, #l.argv - 3) })
    local ok, err = docker.launch(spec({ run = (runner("", 9)) }), ENV)
    assert.is_nil(ok)
    assert.matches("busybox:1", err, 1, true)
  end)

  it("validate refuses a run with values when moat-init is missing", function()
    local ok, err, kind = docker.validate(spec({ init = false }))
    assert.is_nil(ok)
    assert.matches("moat-init is missing", err, 1, true)
    assert.equal("unavailable", kind)
    assert.is_true(docker.validate(spec()))
    assert.is_true(docker.validate(spec({ init = false, names = {} })))
  end)

  it("tell a remote engine from a local one", function()
    assert.is_false(docker.remote("docker", {}))
    assert.is_false(docker.remote("docker", { DOCKER_HOST = "unix:///run/docker.sock", DOCKER_CONTEXT = "default" }))
    assert.is_true(docker.remote("docker", { DOCKER_HOST = "tcp://h:2376" }))
    assert.is_true(docker.remote("docker", { DOCKER_HOST = "ssh://u@h" }))
    assert.is_true(docker.remote("docker", { DOCKER_CONTEXT = "prod" }))
    assert.is_false(docker.remote("podman", { CONTAINER_HOST = "unix:///run/podman/podman.sock" }))
    assert.is_true(docker.remote("podman", { CONTAINER_HOST = "ssh://u@h/run/podman.sock" }))
    assert.is_true(docker.remote("podman", { CONTAINER_CONNECTION = "box" }))
  end)
end)
