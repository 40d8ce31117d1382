-- Leak checks on real container runtimes (SECURITY.md 1 and 13): a private Docker Engine and
-- podman, started by the suite's support modules. While moat resolves (through the fake op)
-- and the container runs, no process on the machine shows a value on its command line; the
-- values travel through moat's init shim (fed by `moat-init --feed`), not even in the runtime
-- client's environ; no client, container process or backend holds the audit log's fd. Host and
-- bwrap are covered by leaks_spec.
local t = require("support.moat")
local need = require("support.need")
local proc = require("moat.c.proc")
local sys = require("moat.c.system")
local lfs = require("lfs")
local dockerd = require("support.dockerd")
local podman = require("support.podman")
local P = dofile(MOAT_ROOT .. "/spec/fixtures/faults/procs.lua")

local FAKE_OP = t.FAKE_BIN .. "/op"

local VALUES = {
  OPV = "op-value-itest-7Hc2Qv",
  KEY = "-----BEGIN KEY-----\nitest-multi-line-two-31\n-----END KEY-----",
  TOKEN = "tok-itest-leak-5d9e0b17",
}
local NEEDLES = P.needles(VALUES)

local CONFIG = [[
name: leaks
secrets:
  OPV: op://vault/item/password
  KEY: op://vault/item/key
  TOKEN: env://T_TOKEN
]]

local OP_DATA = ([[return {
  ["op://vault/item/password"] = %q,
  ["op://vault/item/key"] = %q,
}
]]):format(VALUES.OPV, VALUES.KEY)

math.randomseed(sys.epoch_ms())

local runtimes = {
  {
    name = "docker",
    start = function()
      local d, why = dockerd.start()
      if not d then return nil, why end
      return { stop = function() dockerd.stop(d) end, image = dockerd.IMAGE,
        env = { DOCKER_HOST = d.host, MOAT_NETWORK = "none" },
        left = function()
          return d.docker({ "ps", "-aq", "--filter", "label=moat.run" }).stdout
        end }
    end,
  },
  {
    name = "podman",
    start = function()
      local p, why = podman.start()
      if not p then return nil, why end
      return { stop = function() podman.stop(p) end, image = podman.IMAGE,
        env = { CONTAINERS_CONF = p.env.CONTAINERS_CONF, CONTAINERS_STORAGE_CONF = p.env.CONTAINERS_STORAGE_CONF },
        left = function()
          return p.podman({ "ps", "-aq", "--filter", "label=moat.run" }).stdout
        end }
    end,
  },
}

for _, rt in ipairs(runtimes) do
  describe("leak checks on " .. rt.name .. " (real runtime)", function()
    local r, why, ws, home, bin, tag

    lazy_setup(function()
      r, why = rt.start()
    end)

    lazy_teardown(function()
      if r then r.stop() end
    end)

    before_each(function()
      ws, home, bin = t.tmpdir(), t.tmpdir(), t.tmpdir()
      t.write(ws .. "/moat.yaml", CONFIG)
      t.write(home .. "/op-data.lua", OP_DATA)
      assert.equal(0, t.exec({ "cp", FAKE_OP, bin .. "/op" }).code)
      tag = P.new_tag()
    end)

    after_each(function()
      if tag then
        P.kill_tagged(bin)
      end
      for _, d in ipairs({ ws, home, bin }) do
        if d then t.rmtree(d) end
      end
    end)

    local function spawn(command, extra)
      local e = { MOAT_HOME = home .. "/moat", PATH = bin .. ":" .. os.getenv("PATH"), T_TOKEN = VALUES.TOKEN,
        FAKE_OP_DATA = home .. "/op-data.lua", FAKE_OP_LATENCY_MS = "400", FAKE_OP_LEAK = false, FAKE_OP_LOG = false,
        MOAT_RUNTIME = false, MOAT_NETWORK = false, MOAT_LUA_PATH = false, MOAT_SITE_DIR = home .. "/site",
        XDG_CONFIG_HOME = home .. "/xdg" }
      for k, v in pairs(r.env) do e[k] = v end
      for k, v in pairs(extra or {}) do e[k] = v end
      local argv = { _G.MOAT_BIN, "run", "--trust", ws, "--runtime", rt.name, "--image", r.image, "--" }
      for _, a in ipairs(command) do argv[#argv + 1] = a end
      return assert(proc.spawn(argv, { env = t.env(e), stdout = "pipe", stderr = "pipe", timeout = 120000 }))
    end

    it("no value on any command line while moat resolves and the container runs, nor in the client's environ",
      function()
        if not r then pending(need.missing(rt.name, why)) return end
        local p = spawn({ "sh", "-c", 'printf %s "$OPV" > /workspace/opv; printf %s "$KEY" > /workspace/key;'
          .. " sleep 1.5; : " .. tag })
        local expect = { backend = bin .. "/op", client = rt.name .. " run --rm", command = ": " .. tag,
          feeder = "moat-init --feed /" }
        local client_env
        -- Sample every command line; once the client is up, read its environ (the control).
        local res = { hits = {}, scans = 0, seen = {} }
        local deadline = sys.monotonic_ms() + 90000
        while not p:done() and sys.monotonic_ms() < deadline do
          local hits, lines = P.scan_cmdlines(NEEDLES)
          res.scans = res.scans + 1
          for _, h in ipairs(hits) do res.hits[#res.hits + 1] = h end
          for label, sub in pairs(expect) do
            for _, l in ipairs(lines) do
              if l:find(sub, 1, true) then res.seen[label] = true break end
            end
          end
          if not client_env then
            for _, d in ipairs(P.descendants(p:pid())) do
              if (P.cmdline(d) or ""):find(expect.client, 1, true) then
                client_env = P.read("/proc/" .. d .. "/environ")
              end
            end
          end
          proc.wait({ p }, 5)
        end
        local result = P.finish(p)
        assert.equal(0, result.code, result.stderr)
        assert.same({}, res.hits)
        for label in pairs(expect) do assert.is_true(res.seen[label], "never saw the " .. label) end
        assert.is_string(client_env, "never read the client's environ")
        for _, v in pairs(VALUES) do assert.is_nil(client_env:find(v, 1, true)) end
        assert.equal(VALUES.OPV, t.read(ws .. "/opv"))
        assert.equal(VALUES.KEY, t.read(ws .. "/key"))
        assert.equal("", r.left())
      end)

    it("no backend, client or container process holds the audit log's fd", function()
      if not r then pending(need.missing(rt.name, why)) return end
      local p = spawn({ "sh", "-c", "touch /workspace/ready; sleep 30; : " .. tag }, { FAKE_OP_LATENCY_MS = "1500" })
      local pid = p:pid()
      local function audit_path()
        local dir = "/proc/" .. pid .. "/fd"
        for fd in lfs.dir(dir) do
          local target = fd:match("^%d+$") and lfs.symlinkattributes(dir .. "/" .. fd, "target")
          if target and target:match("/runs/[^/]+/audit%.jsonl$") then return target end
        end
      end
      local function holders(path)
        local out = {}
        local pids = P.descendants(pid)
        -- The container's processes are not moat's descendants; they carry the tag.
        for _, x in ipairs(P.tagged(tag)) do
          if x ~= pid then pids[#pids + 1] = x end
        end
        for _, d in ipairs(pids) do
          if #P.fds_to(d, path) > 0 then out[#out + 1] = d .. " " .. tostring(P.cmdline(d)) end
        end
        return out
      end
      local op
      local deadline = sys.monotonic_ms() + 20000
      while not op and not p:done() and sys.monotonic_ms() < deadline do
        for _, d in ipairs(P.descendants(pid)) do
          if (P.cmdline(d) or ""):find(bin .. "/op", 1, true) then op = d end
        end
        if not op then proc.wait({ p }, 10) end
      end
      assert.is_number(op, "never saw the backend run")
      local path = audit_path()
      assert.is_string(path, "moat does not hold its audit log open")
      assert.same({}, holders(path))
      assert.is_true(P.wait_file(ws .. "/ready", p, 60000), "the container never started")
      assert.is_true(#P.tagged(tag) >= 2, "the container's command is not visible")
      assert.same({}, holders(path))
      p:kill("TERM")
      local res = P.finish(p)
      assert.is_true(res.code == 143 or res.code == 137, tostring(res.code) .. " " .. res.stderr)
      assert.equal("", r.left())
    end)
  end)
end
