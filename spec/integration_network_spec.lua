-- Integration: the bubblewrap sandbox's network and moat's hidden state (SECURITY 17, 18), with
-- real bwrap and slirp4netns. A listener on the host's loopback (TCP and an abstract unix socket)
-- is reachable only with network: host; moat's home, the config and site dirs are not readable
-- from inside, wherever their realpaths are. Traffic goes only to loopback and to the
-- namespaces moat makes.
local t = require("support.moat")
local need = require("support.need")
local proc = require("moat.c.proc")
local sys = require("moat.c.system")
local P = dofile(MOAT_ROOT .. "/spec/fixtures/faults/procs.lua")

local PYTHON = "/usr/bin/python3"

-- Listens on 127.0.0.1 (a free port) and on the abstract socket argv[2]; answers "pong".
local SERVER = [[
import socket, sys, threading
def serve(s):
    while True:
        c, _ = s.accept()
        c.sendall(b"pong\n")
        c.close()
tcp = socket.socket(); tcp.bind(("127.0.0.1", 0)); tcp.listen(8)
uds = socket.socket(socket.AF_UNIX); uds.bind("\0" + sys.argv[2]); uds.listen(8)
for s in (tcp, uds): threading.Thread(target=serve, args=(s,), daemon=True).start()
open(sys.argv[1] + ".tmp", "w").write(str(tcp.getsockname()[1]))
import os; os.rename(sys.argv[1] + ".tmp", sys.argv[1])
threading.Event().wait()
]]

-- Tries each address on loopback or slirp's gateway; prints "name:ok" or "name:fail" for each,
-- whether tap0 exists, and whether link-local addresses have a reject route.
local PROBE = [[
import socket, sys
port, name = int(sys.argv[1]), sys.argv[2]
def attempt(label, family, addr):
    s = socket.socket(family); s.settimeout(2)
    try:
        s.connect(addr); ok = s.recv(5) == b"pong\n"
    except OSError:
        ok = False
    print("%s:%s" % (label, "ok" if ok else "fail"))
attempt("loopback", socket.AF_INET, ("127.0.0.1", port))
attempt("gateway", socket.AF_INET, ("10.0.2.2", port))
attempt("abstract", socket.AF_UNIX, "\0" + name)
print("tap0:%s" % ("yes" if "tap0" in open("/proc/net/dev").read() else "no"))
# Link-local addresses must be unreachable; read the routing table rather than send anything.
rejected = any(f[1] == "0000FEA9" and f[7] == "0000FFFF" and int(f[3], 16) & 0x200
               for f in (l.split() for l in open("/proc/net/route").readlines()[1:]))
print("linklocal:%s" % ("rejected" if rejected else "routed"))
]]

describe("bwrap network and hidden state (real bwrap, slirp4netns)", function()
  local server, port, name, ws, home, usable, why

  lazy_setup(function()
    usable = t.bwrap_works() and t.which("slirp4netns") and require("lfs").attributes(PYTHON, "mode") == "file"
    if not usable then
      why = "needs bwrap that works here, slirp4netns and " .. PYTHON
      return
    end
    local dir = t.tmpdir()
    t.write(dir .. "/server.py", SERVER)
    name = "moat-itest-" .. sys.random_hex(6)
    server = assert(proc.spawn({ PYTHON, dir .. "/server.py", dir .. "/port", name },
      { stdout = "null", stderr = "null" }))
    local deadline = sys.monotonic_ms() + 10000
    while not t.exists(dir .. "/port") and sys.monotonic_ms() < deadline do proc.wait({ server }, 50) end
    port = tonumber(t.read(dir .. "/port") or "")
    t.rmtree(dir)
  end)

  lazy_teardown(function()
    if server then server:close() end
  end)

  before_each(function()
    ws, home = t.tmpdir(), t.tmpdir()
    t.write(ws .. "/probe.py", PROBE)
  end)

  after_each(function()
    t.rmtree(ws)
    t.rmtree(home)
  end)

  local function env(extra)
    local e = { MOAT_HOME = home .. "/moat", MOAT_RUNTIME = false, MOAT_NETWORK = false, MOAT_LUA_PATH = false,
      MOAT_SITE_DIR = home .. "/site", XDG_CONFIG_HOME = home .. "/xdg", T_TOKEN = "tok-net-itest-41" }
    for k, v in pairs(extra or {}) do e[k] = v end
    return e
  end

  -- Runs the probe in the sandbox with `config` as moat.yaml; returns the probe's lines as a map.
  local function probe(config, extra)
    t.write(ws .. "/moat.yaml", "name: net\nsecrets:\n  TOKEN: env://T_TOKEN\n" .. config)
    local code, out, err = t.moat({ "run", ws, "--runtime", "bwrap", "--", PYTHON, "/workspace/probe.py",
      tostring(port), name }, { env = env(extra) })
    assert.equal(0, code, err)
    local res = {}
    for k, v in out:gmatch("(%w+):(%w+)") do res[k] = v end
    return res
  end

  it("the listener answers on the host, so a failure below means the sandbox cannot reach it", function()
    if not usable then pending(need.missing("bwrap network", why)) return end
    assert.is_number(port)
    local r = t.exec({ PYTHON, ws .. "/probe.py", tostring(port), name })
    assert.matches("loopback:ok", r.stdout, 1, true)
    assert.matches("abstract:ok", r.stdout, 1, true)
  end)

  it("private (the default): slirp4netns; no host loopback, gateway, abstract socket or link-local route", function()
    if not usable then pending(need.missing("bwrap network", why)) return end
    local res = probe("")
    assert.same({ loopback = "fail", gateway = "fail", abstract = "fail", tap0 = "yes", linklocal = "rejected" }, res)
  end)

  it("none: own namespace without any interface but lo; host: the host's network", function()
    if not usable then pending(need.missing("bwrap network", why)) return end
    local none = { loopback = "fail", gateway = "fail", abstract = "fail", tap0 = "no", linklocal = "routed" }
    assert.same(none, probe("network: none\n"))
    assert.same(none, probe("", { MOAT_NETWORK = "none" }))
    local res = probe("network: host\n")
    assert.equal("ok", res.loopback)
    assert.equal("ok", res.abstract)
  end)

  it("slirp4netns lives as long as the run and no longer, and holds no value in its environ", function()
    if not usable then pending(need.missing("bwrap network", why)) return end
    t.write(ws .. "/moat.yaml", "name: net\nsecrets:\n  TOKEN: env://T_TOKEN\n")
    local p = assert(proc.spawn({ _G.MOAT_BIN, "run", ws, "--runtime", "bwrap", "--trust", "--", "sh", "-c",
      "touch /workspace/ready; sleep 2" }, { env = t.env(env()), stdout = "pipe", stderr = "pipe", timeout = 60000 }))
    assert.is_true(P.wait_file(ws .. "/ready", p, 30000),
      "the command never started: " .. tostring((p:result() or {}).stderr))
    local slirp = {}
    for _, d in ipairs(P.descendants(p:pid())) do
      if (P.cmdline(d) or ""):find("slirp4netns --configure", 1, true) then slirp[#slirp + 1] = d end
    end
    assert.is_true(#slirp >= 1, "no slirp4netns runs for the sandbox")
    for _, pid in ipairs(slirp) do
      assert.matches("--disable-host-loopback", P.cmdline(pid) or "--disable-host-loopback", 1, true)
      assert.equal("", P.read("/proc/" .. pid .. "/environ") or "")
    end
    local res = P.finish(p)
    assert.equal(0, res.code, res.stderr)
    for _, pid in ipairs(slirp) do assert.is_nil(P.cmdline(pid)) end
  end)

  it("hides moat's home, the config and site dirs under /opt and behind symlinks, for good", function()
    if not usable then pending(need.missing("bwrap network", why)) return end
    local opt = "/opt/moat-itest-" .. sys.random_hex(6)
    finally(function() t.rmtree(opt) end)
    for _, d in ipairs({ "/home", "/xdg/moat", "/site" }) do
      assert.equal(0, t.exec({ "mkdir", "-p", opt .. d }).code)
    end
    t.write(opt .. "/xdg/moat/policy-note", "config-file-itest\n")
    t.write(opt .. "/site/site-note", "site-file-itest\n")
    local lfs = require("lfs")
    assert(lfs.link(opt .. "/home", home .. "/moat-link", true))
    local extra = { MOAT_HOME = home .. "/moat-link", XDG_CONFIG_HOME = opt .. "/xdg", MOAT_SITE_DIR = opt .. "/site" }
    t.write(ws .. "/moat.yaml", "name: hide\n")
    -- The first run makes moat's signing key under MOAT_HOME.
    local code, _, err = t.moat({ "run", ws, "--runtime", "bwrap", "--", "true" }, { env = env(extra) })
    assert.equal(0, code, err)
    local keys = {}
    for f in lfs.dir(opt .. "/home/keys") do
      if f ~= "." and f ~= ".." then keys[#keys + 1] = opt .. "/home/keys/" .. f end
    end
    assert.is_true(#keys > 0, "moat made no key under MOAT_HOME")
    local out
    code, out, err = t.moat({ "run", ws, "--runtime", "bwrap", "--no-mask", "--", "sh", "-c",
      "umount " .. opt .. "/home " .. opt .. "/site 2>/dev/null; grep CapEff /proc/self/status;"
        .. ' for f in "$@"; do cat "$f" && echo "READ $f"; done;'
        .. " ls -A " .. opt .. "/home; ls -A " .. opt .. "/site; true",
      "sh", keys[1], opt .. "/xdg/moat/policy-note", opt .. "/site/site-note" }, { env = env(extra) })
    assert.equal(0, code, err)
    assert.is_nil(out:find("READ", 1, true))
    assert.is_nil(out:find("itest", 1, true), out)
    -- Not even root in the sandbox can unmount what hides them: it has no capabilities.
    assert.equal("CapEff:\t0000000000000000\n", out)
  end)
end)
