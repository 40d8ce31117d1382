local runtime = require("moat.runtime")
local docker = require("moat.runtime.docker")
local podman = require("moat.runtime.podman")
local bwrap = require("moat.runtime.bwrap")
local host = require("moat.runtime.host")
local images = require("moat.images")
local exit = require("moat.exit")

local function spec(over)
  local s = {
    run_id = "20261128T124533.123Z-1a2b3c4d", name = "t", workspace = "/work/space", image = "busybox:1",
    command = { "sh", "-c", "echo hi" }, interactive = false, tty = false, keep = false,
    vars = { { name = "PLAIN", value = "plain value" }, { name = "TOKEN", value = "s3cret value\nline 2" } },
    mounts = {}, container = {},
    environ = { PATH = "/usr/bin:/bin", HOME = "/home/u", DOCKER_HOST = "unix:///x.sock", SECRET_SAUCE = "nope",
      AWS_SECRET_ACCESS_KEY = "host-key", LANG = "C.UTF-8", TERM = "xterm", HTTPS_PROXY = "http://p:3128" },
  }
  for k, v in pairs(over or {}) do s[k] = v end
  return s
end

local function index(list, x)
  for i, v in ipairs(list) do if v == x then return i end end
  return nil
end

local function has_seq(list, want)
  for i = 1, #list - #want + 1 do
    local all = true
    for j = 1, #want do if list[i + j - 1] ~= want[j] then all = false break end end
    if all then return true end
  end
  return false
end

-- The runtime contract in one call, as moat.session uses it: validate(spec), then
-- launch(spec, env). A refusal raises { message, kind }; a command that cannot be found
-- comes back as launch.not_found.
local function prepare(mod, s)
  local names, env = {}, {}
  for _, v in ipairs(s.vars or {}) do
    names[#names + 1] = v.name
    env[v.name] = v.value
  end
  s.names = names
  local ok, err, kind = mod.validate(s)
  if not ok and kind ~= "not_found" then error({ message = err, kind = kind }, 0) end
  local launch = mod.launch(s, env)
  launch.not_found = not ok and err or nil
  return launch
end

-- Calls `f` expecting a refusal from prepare; returns it.
local function refused(f)
  local ok, e = pcall(f)
  assert.is_false(ok)
  assert.is_table(e, tostring(e))
  return e
end


local function env_map(list)
  local m = {}
  for _, kv in ipairs(list) do
    local k, v = kv:match("^([^=]*)=(.*)$")
    m[k] = v
  end
  return m
end

describe("moat.runtime.docker", function()
  local REMOTE = { PATH = "/usr/bin:/bin", HOME = "/home/u", DOCKER_HOST = "tcp://10.0.0.5:2376", SECRET_SAUCE = "nope",
    AWS_SECRET_ACCESS_KEY = "host-key", LANG = "C.UTF-8", TERM = "xterm", HTTPS_PROXY = "http://p:3128" }

  it("with a remote engine, builds run --rm --name --label -v -w --env NAME … IMAGE CMD, no value in argv", function()
    local l = prepare(docker, spec({ environ = REMOTE }))
    local a = l.argv
    assert.same({ "docker", "run", "--rm", "--name", "moat-20261128T124533.123Z-1a2b3c4d", "--label",
      "moat.run=20261128T124533.123Z-1a2b3c4d" }, { table.unpack(a, 1, 7) })
    assert.equal("/work/space:/workspace", a[index(a, "-v") + 1])
    assert.equal("/workspace", a[index(a, "-w") + 1])
    assert.equal("PLAIN", a[index(a, "--env") + 1])
    assert.equal("TOKEN", a[index(a, "--env") + 3])
    local img = index(a, "busybox:1")
    assert.same({ "sh", "-c", "echo hi" }, { table.unpack(a, img + 1) })
    for _, arg in ipairs(a) do
      assert.is_nil(arg:find("s3cret", 1, true))
      assert.is_nil(arg:find("plain value", 1, true))
      assert.is_nil(arg:find("^--env="))
    end
    assert.is_nil(index(a, "-i"))
    assert.is_nil(index(a, "-t"))
    assert.same({ "docker", "rm", "-f", "moat-20261128T124533.123Z-1a2b3c4d" }, l.cleanup)
    assert.equal("moat-20261128T124533.123Z-1a2b3c4d", l.container)
    assert.is_true(l.group)
  end)

  it("with a remote engine, puts values only in the client's environ, which keeps what the client needs", function()
    local e = env_map(prepare(docker, spec({ environ = REMOTE })).env)
    assert.equal("s3cret value\nline 2", e.TOKEN)
    assert.equal("plain value", e.PLAIN)
    assert.equal("tcp://10.0.0.5:2376", e.DOCKER_HOST)
    assert.equal("/usr/bin:/bin", e.PATH)
    assert.equal("/home/u", e.HOME)
    assert.equal("http://p:3128", e.HTTPS_PROXY)
    assert.is_nil(e.SECRET_SAUCE)
    assert.is_nil(e.AWS_SECRET_ACCESS_KEY)
  end)

  it("handles -i, -t, --keep, network, mounts and resource limits", function()
    local l = prepare(docker, spec({ interactive = true, tty = true, keep = true, network = "none", vars = {},
      mounts = { { host = "/data", container = "/data", ro = true }, { host = "/c", container = "/cache" } },
      container = { memory = 512, cpus = 1.5 } }))
    local a = l.argv
    assert.is_nil(index(a, "--rm"))
    assert.truthy(index(a, "-i"))
    assert.equal("-t", a[index(a, "-i") + 1])
    assert.equal("none", a[index(a, "--network") + 1])
    assert.truthy(index(a, "/data:/data:ro"))
    assert.truthy(index(a, "/c:/cache"))
    assert.equal("512m", a[index(a, "--memory") + 1])
    assert.equal("1.5", a[index(a, "--cpus") + 1])
    assert.is_false(l.group)
    assert.is_true(l.stdin)
    assert.same({ "docker", "kill", "--signal", "INT", l.container }, l.signal("INT"))
    assert.same({ "docker", "kill", l.container }, l.cleanup)
    -- -i without a terminal: no -t.
    a = prepare(docker, spec({ interactive = true, tty = false, vars = {} })).argv
    assert.truthy(index(a, "-i"))
    assert.is_nil(index(a, "-t"))
    -- network: private is the engine's default network (no --network); host shares the host's.
    assert.is_nil(index(prepare(docker, spec({ network = "private", vars = {} })).argv, "--network"))
    assert.is_nil(index(prepare(docker, spec({ vars = {} })).argv, "--network"))
    a = prepare(docker, spec({ network = "host", vars = {} })).argv
    assert.equal("host", a[index(a, "--network") + 1])
  end)

  it("refuses an image, mount or workspace that could be read as an option", function()
    assert.matches("must not", refused(function() prepare(docker, spec({ image = "--privileged" })) end).message)
    assert.matches("control", refused(function() prepare(docker, spec({ image = "busy\nbox" })) end).message)
    refused(function() prepare(docker, spec({ mounts = { { host = "-v", container = "/x" } } })) end)
    refused(function() prepare(docker, spec({ workspace = "/a:b" })) end)
    refused(function() prepare(docker, spec({ network = "-x" })) end)
  end)

  it("serves podman with the same command line", function()
    local a = prepare(podman, spec({ tini = "/usr/bin/tini-static", vars = {} })).argv
    assert.equal("podman", a[1])
    assert.equal("--rm", a[3])
    assert.equal("/usr/bin/tini-static", a[index(a, "--init-path") + 1])
    assert.equal("podman", podman.name)
  end)

  it("probes docker by asking the daemon, podman for its image", function()
    local calls = {}
    local function run(code)
      return function(argv) calls[#calls + 1] = argv; return { code = code, stdout = "null\n", stderr = "" } end
    end
    assert.is_true(docker.probe({ run = run(0) }))
    assert.same({ "docker", "version", "--format", "{{.Server.Version}}" }, calls[1])
    local ok, why = docker.probe({ run = run(1) })
    assert.is_nil(ok)
    assert.matches("daemon", why)
    ok, why = docker.probe({ run = function() return nil end })
    assert.is_nil(ok)
    assert.matches("not installed", why)
    -- podman: a short name with no search registries is usable only when the image is local.
    calls = {}
    ok, why = podman.probe({ run = function(argv)
      calls[#calls + 1] = argv
      return { code = argv[2] == "image" and 1 or 0, stdout = "null\n", stderr = "" }
    end, image = "busybox" })
    assert.is_nil(ok)
    assert.matches("no image 'busybox' locally", why, 1, true)
    assert.same({ "podman", "image", "exists", "busybox" }, calls[2])
    assert.is_true(podman.probe({ run = run(0), image = "docker.io/library/busybox" }))
  end)
end)

describe("moat.runtime.bwrap", function()
  it("hides the realpaths of moat's home, HOME, the config and site dirs wherever they are", function()
    local lfs = require("lfs")
    local base = "/var" .. os.tmpname()
    os.remove(base:sub(5))
    assert(lfs.mkdir(base))
    for _, d in ipairs({ "/opt-moat", "/real-home", "/site" }) do assert(lfs.mkdir(base .. d)) end
    assert(lfs.link(base .. "/opt-moat", base .. "/link", true))
    local dirs = bwrap.private_dirs({ MOAT_HOME = base .. "/link", HOME = base .. "/real-home",
      XDG_CONFIG_HOME = "/root/.config", MOAT_SITE_DIR = base .. "/site" })
    -- Behind the symlink, the target; /root is hidden already; HOME's default .moat and the
    -- missing ones are left out.
    assert.same({ base .. "/opt-moat", base .. "/real-home", base .. "/site" }, dirs)
    -- One inside another is hidden with it.
    assert(lfs.mkdir(base .. "/real-home/.moat"))
    assert.same({ base .. "/real-home" }, bwrap.private_dirs({ HOME = base .. "/real-home", MOAT_SITE_DIR = "/" }))
    local l = prepare(bwrap, { run_id = "r", workspace = "/tmp", command = { "true" }, vars = {}, mounts = {},
      environ = { MOAT_HOME = base .. "/link" } })
    assert.is_true(has_seq(l.argv, { "--tmpfs", base .. "/opt-moat" }))
    require("support.moat").rmtree(base)
  end)

  it("binds the host read-only, the workspace at /workspace, and never uses --setenv", function()
    local l = prepare(bwrap, spec())
    local a = l.argv
    assert.equal("bwrap", a[1])
    for _, f in ipairs({ "--die-with-parent", "--unshare-all", "--new-session" }) do
      assert.truthy(index(a, f), f)
    end
    assert.is_nil(index(a, "--share-net"))
    local b = index(a, "--bind")
    assert.same({ "--bind", "/work/space", "/workspace" }, { a[b], a[b + 1], a[b + 2] })
    assert.equal("/workspace", a[index(a, "--chdir") + 1])
    assert.is_true(has_seq(a, { "--tmpfs", "/tmp" }))
    assert.is_true(has_seq(a, { "--dev", "/dev", "--proc", "/proc" }))
    assert.truthy(index(a, "--ro-bind"))
    assert.equal("/", a[index(a, "--remount-ro") + 1])
    assert.is_nil(index(a, "--setenv"))
    for _, arg in ipairs(a) do assert.is_nil(arg:find("s3cret", 1, true)) end
    local dd = index(a, "--")
    assert.same({ "sh", "-c", "echo hi" }, { table.unpack(a, dd + 1) })
    assert.matches("image is ignored", l.notes[1])
  end)

  it("builds the environ from scratch", function()
    local e = env_map(prepare(bwrap, spec()).env)
    assert.equal("s3cret value\nline 2", e.TOKEN)
    assert.equal("/tmp", e.HOME)
    assert.equal(bwrap.DEFAULT_PATH, e.PATH)
    assert.equal("C.UTF-8", e.LANG)
    assert.is_nil(e.DOCKER_HOST)
    assert.is_nil(e.SECRET_SAUCE)
    assert.is_nil(e.AWS_SECRET_ACCESS_KEY)
  end)

  it("gives the sandbox its own network: private through moat-init and slirp4netns, none, host shared", function()
    local l = prepare(bwrap, spec({ network = "private", init = "/x/moat-init", slirp = "/y/slirp4netns" }))
    assert.same({ "/x/moat-init", "--slirp", "/y/slirp4netns", "--", "bwrap" }, { table.unpack(l.argv, 1, 5) })
    assert.is_nil(index(l.argv, "--share-net"))
    assert.is_true(l.group)
    -- The default is private.
    assert.equal("--slirp", prepare(bwrap, spec({ init = "/x/moat-init", slirp = "/y/s" })).argv[2])
    l = prepare(bwrap, spec({ network = "none", init = "/x/moat-init", slirp = "/y/s" }))
    assert.equal("bwrap", l.argv[1])
    assert.is_nil(index(l.argv, "--share-net"))
    l = prepare(bwrap, spec({ network = "host" }))
    assert.equal("bwrap", l.argv[1])
    assert.truthy(index(l.argv, "--share-net"))
    -- Without slirp4netns, private falls back to no network at all, and says so.
    l = prepare(bwrap, spec({ init = "/x/moat-init", slirp = false }))
    assert.equal("bwrap", l.argv[1])
    assert.is_nil(index(l.argv, "--share-net"))
    assert.matches("slirp4netns", l.notes[#l.notes], 1, true)
    assert.matches("not one bwrap knows", refused(function() prepare(bwrap, spec({ network = "bridge" })) end).message)
  end)

  it("hides homes and /run and keeps the TTY when interactive", function()
    local a = prepare(bwrap, spec({ network = "none", interactive = true, tty = true })).argv
    assert.is_nil(index(a, "--share-net"))
    assert.is_nil(index(a, "--new-session"))
    local root = bwrap.root_args("/")
    local hidden = {}
    for i = 1, #root - 1 do
      if root[i] == "--tmpfs" then hidden[root[i + 1]] = true end
      assert.is_true(root[i] ~= "--ro-bind" or (root[i + 1] ~= "/root" and root[i + 1] ~= "/run"))
    end
    if require("lfs").attributes("/run", "mode") == "directory" then assert.is_true(hidden["/run"]) end
  end)

  it("reports a command that the sandbox cannot find", function()
    assert.is_nil(prepare(bwrap, spec()).not_found)
    local l = prepare(bwrap, spec({ command = { "no-such-command-anywhere" } }))
    assert.matches("no%-such%-command%-anywhere: command not found", l.not_found)
    assert.is_nil(prepare(bwrap, spec({ command = { "/workspace/run.sh" } })).not_found)
  end)
end)

describe("moat.runtime.host", function()
  it("runs the command itself in the workspace with an environ built from scratch", function()
    local l = prepare(host, spec({ workspace = "/tmp" }))
    assert.equal("/tmp", l.cwd)
    assert.matches("/sh$", l.argv[1])
    assert.same({ "-c", "echo hi" }, { l.argv[2], l.argv[3] })
    local e = env_map(l.env)
    assert.equal("s3cret value\nline 2", e.TOKEN)
    assert.equal("/home/u", e.HOME)
    assert.equal("/usr/bin:/bin", e.PATH)
    assert.is_nil(e.DOCKER_HOST)
    assert.is_nil(e.SECRET_SAUCE)
    assert.matches("no%-such: command not found", prepare(host, spec({ command = { "no-such" } })).not_found)
  end)
end)

describe("moat.runtime", function()
  it("takes --runtime, then the config, then MOAT_RUNTIME", function()
    local noprobe = function() error("must not probe") end
    local mod, how = runtime.choose({ requested = "host", config = "bwrap", env = "docker", run = noprobe })
    assert.equal("host", mod.name)
    assert.equal("--runtime", how)
    mod, how = runtime.choose({ config = "host", env = "docker", run = noprobe })
    assert.equal("host", mod.name)
    assert.equal("config", how)
    mod, how = runtime.choose({ env = "host", run = noprobe })
    assert.equal("host", mod.name)
    assert.equal("MOAT_RUNTIME", how)
  end)

  it("auto-detects docker, podman, bwrap in that order and never picks host", function()
    local seen = {}
    local function run(ok_for)
      return function(argv)
        seen[#seen + 1] = argv[1]
        return { code = argv[1] == ok_for and 0 or 1, stdout = "null", stderr = "" }
      end
    end
    local mod, how = runtime.choose({ run = run("bwrap"), image = "docker.io/library/x:1" })
    assert.equal("bwrap", mod.name)
    assert.equal("auto", how)
    assert.same({ "docker", "podman", "bwrap" }, seen)
    mod = runtime.choose({ run = run("docker") })
    assert.equal("docker", mod.name)
  end)

  it("fails as unavailable (exit 69) with install hints when nothing is usable", function()
    local mod, msg, kind = runtime.choose({ run = function() return nil end })
    assert.is_nil(mod)
    assert.equal(69, exit.OF_KIND[kind])
    assert.matches("no usable runtime", msg)
    assert.matches("apt-get install bubblewrap", msg, 1, true)
    assert.matches("docker.io", msg, 1, true)
    assert.matches("--runtime host", msg, 1, true)
  end)

  it("refuses unknown runtimes as a usage error (exit 64)", function()
    assert.matches("no runtime 'nope'", select(2, runtime.load("nope")), 1, true)
    assert.matches("not a runtime name", select(2, runtime.load("../x")), 1, true)
    local mod, _, kind = runtime.choose({ requested = "nope" })
    assert.is_nil(mod)
    assert.equal(64, exit.OF_KIND[kind])
  end)
end)

describe("moat.images", function()
  it("maps dependencies to images, the first one winning", function()
    local img, w = images.pick({ "python@3.11" })
    assert.equal("docker.io/library/python:3.11-slim", img)
    assert.same({}, w)
    img, w = images.pick({ "node@20", "python@3.12" })
    assert.equal("docker.io/library/node:20-slim", img)
    assert.matches("python@3.12", w[1], 1, true)
    img, w = images.pick({ "cobol@85" })
    assert.equal(images.default, img)
    assert.matches("no image", w[1])
    assert.equal(images.default, (images.pick({})))
  end)
end)
