-- Integration (SECURITY.md 20, 5): moat killed with SIGKILL in the middle of a run on a real
-- docker (a private dockerd started by the suite) and podman takes the runtime client and the
-- container down with it: the client by its parent-death signal, the container by moat's reaper.
local t = require("support.moat")
local need = require("support.need")
local proc = require("moat.c.proc")
local sys = require("moat.c.system")
local dockerd = require("support.dockerd")
local podman = require("support.podman")

local CONFIG = "name: stops\nsecrets:\n  TOKEN: env://T_TOKEN\n"

-- Returns the pids whose command line holds `needle`, this process excluded.
local function holding(needle)
  local lfs = require("lfs")
  local me, out = tostring(sys.getpid()), {}
  for pid in lfs.dir("/proc") do
    if pid:match("^%d+$") and pid ~= me then
      local s = t.read("/proc/" .. pid .. "/cmdline")
      if s and s:find(needle, 1, true) then out[#out + 1] = pid end
    end
  end
  return out
end

local runtimes = {
  { name = "docker", start = function()
    local d, why = dockerd.start()
    if not d then return nil, why end
    return { stop = function() dockerd.stop(d) end, image = dockerd.IMAGE, env = { DOCKER_HOST = d.host },
      client = function(args) return d.docker(args) end }
  end },
  { name = "podman", start = function()
    local p, why = podman.start()
    if not p then return nil, why end
    return { stop = function() podman.stop(p) end, image = podman.IMAGE, env = p.env, client = p.podman }
  end },
}

for _, rt in ipairs(runtimes) do
  describe("moat killed during a run on " .. rt.name .. " (real runtime)", function()
    local r, why, ws, home

    lazy_setup(function() r, why = rt.start() end)
    lazy_teardown(function() if r then r.stop() end end)

    before_each(function()
      ws, home = t.tmpdir(), t.tmpdir()
      t.write(ws .. "/moat.yaml", CONFIG)
    end)

    after_each(function()
      t.rmtree(ws)
      t.rmtree(home)
    end)

    -- Returns the ids of the containers moat made (any state).
    local function containers()
      local res = r.client({ "ps", "-aq", "--filter", "label=moat.run" })
      assert.equal(0, res.code, res.stderr)
      return res.stdout
    end

    it("SIGKILL of moat: the client and the container are gone within 5 s", function()
      if not r then pending(need.missing(rt.name, why)) return end
      local env = { MOAT_HOME = home .. "/moat", MOAT_RUNTIME = false, MOAT_NETWORK = false, MOAT_LUA_PATH = false,
        MOAT_SITE_DIR = home .. "/site", XDG_CONFIG_HOME = home .. "/xdg", T_TOKEN = "tok-killed-7f3a9c0d1e" }
      for k, v in pairs(r.env) do env[k] = v end
      local p = assert(proc.spawn({ _G.MOAT_BIN, "run", "--trust", ws, "--runtime", rt.name, "--image", r.image,
        "--", "sh", "-c", "touch /workspace/ready; sleep 600" },
        { env = t.env(env), stdout = "pipe", stderr = "pipe", timeout = 120000 }))
      local deadline = sys.monotonic_ms() + 60000
      while not t.exists(ws .. "/ready") and not p:done() and sys.monotonic_ms() < deadline do proc.wait({ p }, 100) end
      assert.is_true(t.exists(ws .. "/ready"), "the command never started: " .. ((p:result() or {}).stderr or ""))
      assert.is_true(#holding(ws .. ":/workspace") > 0, "no runtime client holds the workspace mount")
      assert.is_true(p:kill("KILL"))
      while not p:done() do proc.wait({ p }, 1000) end
      local t0 = sys.monotonic_ms()
      while (containers() ~= "" or #holding(ws .. ":/workspace") > 0) and sys.monotonic_ms() - t0 < 5000 do
        proc.wait({}, 200)
      end
      assert.equal("", containers(), "a container outlived moat")
      assert.same({}, holding(ws .. ":/workspace"), "a runtime client outlived moat")
    end)
  end)
end
