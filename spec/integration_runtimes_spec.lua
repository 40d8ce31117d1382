-- Integration: `moat run` on real runtimes started by the suite — a private Docker Engine,
-- podman with its own storage, bubblewrap — with the same scenarios on each.
local t = require("support.moat")
local need = require("support.need")
local proc = require("moat.c.proc")
local sys = require("moat.c.system")
local dockerd = require("support.dockerd")
local podman = require("support.podman")

local VALUES = {
  T_MULTI = "-----BEGIN KEY-----\nline two with  spaces\n\tand a tab\n-----END KEY-----\n",
  T_SPACES = "  leading and trailing = \"quoted\" 'single'  ",
  T_UTF = "héllo wörld ✓ 秘密の値",
  T_TOKEN = "tok-4f9a7c21be8d03e6",
}

local CONFIG = [[
name: itest
secrets:
  MULTI: env://T_MULTI
  SPACES: env://T_SPACES
  UTF: env://T_UTF
  TOKEN: env://T_TOKEN
env:
  PLAIN: "a plain value: 1.0"
]]

local read, exists = t.read, t.exists

-- Processes whose command line contains `needle`: array of pids.
local function cmdline_holding(needle)
  local lfs = require("lfs")
  local found = {}
  for pid in lfs.dir("/proc") do
    if pid:match("^%d+$") then
      local s = read("/proc/" .. pid .. "/cmdline")
      if s and s:find(needle, 1, true) then found[#found + 1] = pid end
    end
  end
  return found
end

local runtimes = {
  {
    name = "docker",
    start = function()
      local d, why = dockerd.start()
      if not d then return nil, why end
      return {
        handle = d, stop = function() dockerd.stop(d) end,
        args = { "--runtime", "docker", "--image", dockerd.IMAGE },
        env = { DOCKER_HOST = d.host, MOAT_NETWORK = "none" },
        root = d.dir, client = d.docker,
        left = function()
          local r = d.docker({ "ps", "-aq", "--filter", "label=moat.run" })
          assert.equal(0, r.code, r.stderr)
          return r.stdout
        end,
      }
    end,
  },
  {
    name = "podman",
    start = function()
      local p, why = podman.start()
      if not p then return nil, why end
      return {
        handle = p, stop = function() podman.stop(p) end,
        args = { "--runtime", "podman", "--image", podman.IMAGE },
        env = { CONTAINERS_CONF = p.env.CONTAINERS_CONF, CONTAINERS_STORAGE_CONF = p.env.CONTAINERS_STORAGE_CONF },
        root = p.dir, client = p.podman,
        left = function()
          local r = p.podman({ "ps", "-aq", "--filter", "label=moat.run" })
          assert.equal(0, r.code, r.stderr)
          return r.stdout
        end,
      }
    end,
  },
  {
    name = "bwrap",
    start = function()
      if not t.bwrap_works() then
        return nil, "bwrap cannot create a sandbox here"
      end
      return {
        stop = function() end,
        args = { "--runtime", "bwrap" },
        env = {},
        left = function()
          return table.concat(cmdline_holding("moat-itest-sleeper"), " ")
        end,
      }
    end,
  },
}

for _, rt in ipairs(runtimes) do
  describe("moat run on " .. rt.name .. " (real runtime)", function()
    local r, why, ws, home

    lazy_setup(function()
      r, why = rt.start()
    end)

    lazy_teardown(function()
      if r then r.stop() end
    end)

    before_each(function()
      ws = t.tmpdir()
      home = t.tmpdir()
      t.write(ws .. "/moat.yaml", CONFIG)
    end)

    after_each(function()
      if ws then t.rmtree(ws) end
      if home then t.rmtree(home) end
    end)

    local function env(extra)
      local e = { MOAT_HOME = home .. "/moat", MOAT_RUNTIME = false, MOAT_NETWORK = false, MOAT_LUA_PATH = false,
        MOAT_SITE_DIR = home .. "/site", XDG_CONFIG_HOME = home .. "/xdg" }
      for k, v in pairs(VALUES) do e[k] = v end
      for k, v in pairs(r.env) do e[k] = v end
      for k, v in pairs(extra or {}) do e[k] = v end
      return e
    end

    local function argv(extra, command)
      local a = { "run", "--trust", ws }
      for _, x in ipairs(r.args) do a[#a + 1] = x end
      for _, x in ipairs(extra or {}) do a[#a + 1] = x end
      if command then
        a[#a + 1] = "--"
        for _, x in ipairs(command) do a[#a + 1] = x end
      end
      return a
    end

    local function moat(extra, command, opts)
      opts = opts or {}
      return t.moat(argv(extra, command), { env = env(opts.env) })
    end

    it("hands over values byte-exact and env values, in a writable /workspace", function()
      if not r then pending(need.missing(rt.name, why)) return end
      local script = 'for v in MULTI SPACES UTF TOKEN PLAIN; do eval "printf %s \\"\\$$v\\"" > /workspace/out.$v; done;'
        .. ' ls /workspace > /workspace/listing'
      local code, out, err = moat({ "--no-mask" }, { "sh", "-c", script })
      assert.equal(0, code, err)
      assert.equal("", out)
      assert.equal(VALUES.T_MULTI, read(ws .. "/out.MULTI"))
      assert.equal(VALUES.T_SPACES, read(ws .. "/out.SPACES"))
      assert.equal(VALUES.T_UTF, read(ws .. "/out.UTF"))
      assert.equal(VALUES.T_TOKEN, read(ws .. "/out.TOKEN"))
      assert.equal("a plain value: 1.0", read(ws .. "/out.PLAIN"))
      assert.matches("moat.yaml", read(ws .. "/listing"), 1, true)
    end)

    it("passes the command's exit status through unchanged", function()
      if not r then pending(need.missing(rt.name, why)) return end
      for _, c in ipairs({ 0, 3, 42 }) do
        local code, _, err = moat({}, { "sh", "-c", "exit " .. c })
        assert.equal(c, code, err)
      end
      local code = moat({}, { "sh", "-c", "exit 127" })
      assert.equal(127, code)
      code = moat({}, { "no-such-command-here" })
      assert.equal(127, code)
      code = moat({}, { "sh", "-c", "kill -9 $$" })
      assert.equal(137, code)
      assert.equal("", r.left())
    end)

    it("--dry-run shows names and the runtime argv, resolves and launches nothing", function()
      if not r then pending(need.missing(rt.name, why)) return end
      local code, out, err = moat({ "--dry-run" }, { "sh", "-c", "touch /workspace/ran" })
      assert.equal(0, code, err)
      assert.is_false(exists(ws .. "/ran"))
      assert.matches("runtime: " .. rt.name, out, 1, true)
      assert.matches("secret: MULTI  env  env://T_MULTI", out, 1, true)
      if rt.name ~= "bwrap" then
        -- A local engine gets the values through moat's init shim, never as --env.
        assert.matches("--entrypoint /.moat/init", out, 1, true)
        assert.is_nil(out:find("--env", 1, true))
      end
      for _, v in pairs(VALUES) do
        assert.is_nil(out:find(v, 1, true))
        assert.is_nil(err:find(v, 1, true))
      end
      assert.is_nil(out:find("a plain value", 1, true))
      assert.equal("", r.left())
      -- Even a missing secret does not stop a dry run: nothing is resolved.
      code = moat({ "--dry-run" }, { "true" }, { env = { T_TOKEN = false } })
      assert.equal(0, code)
    end)

    it("keeps values out of every command line and leaves nothing behind on SIGTERM", function()
      if not r then pending(need.missing(rt.name, why)) return end
      local p = assert(proc.spawn({ _G.MOAT_BIN, table.unpack(argv({}, { "sh", "-c",
        "touch /workspace/ready; sleep 30; : moat-itest-sleeper" })) }, {
        env = t.env(env()), stdout = "pipe", stderr = "pipe", timeout = 120000,
      }))
      -- The marker in the script names the sandboxed shell for the bwrap check.
      local deadline = sys.monotonic_ms() + 60000
      while not exists(ws .. "/ready") and not p:done() and sys.monotonic_ms() < deadline do
        proc.wait({ p }, 100)
      end
      assert.is_true(exists(ws .. "/ready"), "the command never started")
      local needles = { VALUES.T_TOKEN, VALUES.T_UTF, VALUES.T_SPACES, "line two with  spaces" }
      for _, v in ipairs(needles) do
        assert.same({}, cmdline_holding(v))
      end
      assert.is_true(p:kill("TERM"))
      while not p:done() do proc.wait({ p }, 1000) end
      local res = p:result()
      assert.is_true(res.code == 143 or res.code == 137, ("status %s: %s"):format(res.code, res.stderr))
      assert.equal("", r.left())
    end)

    it("masks values in the output: whole, split with delays, base64, on stderr", function()
      if not r then pending(need.missing(rt.name, why)) return end
      local script = table.concat({
        'printf "whole:%s\\n" "$TOKEN"',
        'printf "split:%s" "${TOKEN%????????????}"; sleep 1; printf "%s\\n" "${TOKEN#????????}"',
        'printf %s "$TOKEN" | base64',
        'printf "err:%s\\n" "$UTF" >&2',
        'printf "line:%s\\n" "$MULTI"',
      }, "; ")
      local code, out, err = moat({}, { "sh", "-c", script })
      assert.equal(0, code, err)
      for _, v in pairs(VALUES) do
        assert.is_nil(out:find(v, 1, true))
        assert.is_nil(err:find(v, 1, true))
      end
      assert.is_nil(out:find(sys.base64_encode(VALUES.T_TOKEN), 1, true))
      assert.is_nil(out:find("line two with  spaces", 1, true))
      assert.matches("whole:<concealed by moat>", out, 1, true)
      assert.matches("err:<concealed by moat>", err, 1, true)
      -- --no-mask hands the output over as it is.
      code, out = moat({ "--no-mask" }, { "sh", "-c", 'printf "%s" "$TOKEN"' })
      assert.equal(0, code)
      assert.equal(VALUES.T_TOKEN, out)
    end)

    it("passes output without secrets through byte for byte", function()
      if not r then pending(need.missing(rt.name, why)) return end
      local bytes = {}
      math.randomseed(42)
      for i = 1, 65536 do bytes[i] = string.char(math.random(0, 255)) end
      local data = table.concat(bytes)
      t.write(ws .. "/random.bin", data)
      local code, out, err = moat({ "--mask" }, { "cat", "/workspace/random.bin" })
      assert.equal(0, code, err)
      assert.equal(#data, #out)
      assert.is_true(data == out)
    end)

    -- Engines only: the values go through moat's init shim and a FIFO (SECURITY 19).
    local NEEDLES = { VALUES.T_TOKEN, VALUES.T_UTF, VALUES.T_SPACES, "line two with  spaces", "a plain value: 1.0" }

    -- Says where a needle shows: `inspect` of the running containers, files under the engine's root.
    local function engine_holds()
      local found = {}
      local ids = r.client({ "ps", "-aq", "--filter", "label=moat.run" }).stdout
      for id in ids:gmatch("%S+") do
        local out = r.client({ "inspect", id }).stdout
        for _, n in ipairs(NEEDLES) do
          if out:find(n, 1, true) then found[#found + 1] = "inspect " .. id .. ": " .. n end
        end
      end
      local grep = { "grep", "-r", "-l", "-a", "-s", "-F", "-D", "skip" }
      for _, n in ipairs(NEEDLES) do grep[#grep + 1] = "-e"; grep[#grep + 1] = n end
      grep[#grep + 1] = r.root
      local g = t.exec(grep)
      if g.stdout ~= "" then found[#found + 1] = "files: " .. g.stdout end
      return found, ids
    end

    -- Starts moat in the background and waits until the command has touched /workspace/ready.
    local function started(extra, command)
      local p = assert(proc.spawn({ _G.MOAT_BIN, table.unpack(argv(extra, command)) },
        { env = t.env(env()), stdout = "pipe", stderr = "pipe", timeout = 120000 }))
      local deadline = sys.monotonic_ms() + 60000
      while not exists(ws .. "/ready") and not p:done() and sys.monotonic_ms() < deadline do proc.wait({ p }, 100) end
      assert.is_true(exists(ws .. "/ready"), "the command never started: " .. tostring((p:result() or {}).stderr))
      return p
    end

    if rt.name ~= "bwrap" then
      it("keeps every value out of inspect and the engine's files, during the run and after it", function()
        if not r then pending(need.missing(rt.name, why)) return end
        local script = 'for v in MULTI SPACES UTF TOKEN PLAIN; do'
          .. ' eval "printf %s \\"\\$$v\\"" > /workspace/out.$v; done;'
          .. ' touch /workspace/ready; sleep 3'
        for _, keep in ipairs({ false, true }) do
          t.rmtree(ws .. "/ready")
          local p = started(keep and { "--keep" } or {}, { "sh", "-c", script })
          local during, ids = engine_holds()
          assert.matches("%x", ids)
          assert.same({}, during)
          while not p:done() do proc.wait({ p }, 1000) end
          local res = p:result()
          assert.equal(0, res.code, res.stderr)
          for k, v in pairs({ MULTI = VALUES.T_MULTI, SPACES = VALUES.T_SPACES, UTF = VALUES.T_UTF }) do
            assert.equal(v, read(ws .. "/out." .. k))
          end
          assert.equal("a plain value: 1.0", read(ws .. "/out.PLAIN"))
          -- With --keep the stopped container's config stays on disk: it holds no value either.
          assert.same({}, (engine_holds()))
          if keep then r.client({ "rm", "-f", (r.left():match("%S+")) }) end
          assert.equal("", r.left())
        end
      end)

      it("runs the command under the init through the shim: orphans reaped, TERM forwarded, status kept", function()
        if not r then pending(need.missing(rt.name, why)) return end
        local script = 'trap "echo term > /workspace/term; exit 7" TERM; sh -c "sleep 0.2 &"; sleep 1;'
          .. ' echo $$ > /workspace/pid; cat /proc/1/cmdline > /workspace/init;'
          .. ' cat /proc/[0-9]*/stat > /workspace/stats 2>/dev/null; touch /workspace/ready;'
          .. ' while :; do sleep 0.2; done'
        local p = started({}, { "sh", "-c", script })
        assert.not_equal("1", read(ws .. "/pid"):match("%d+"))
        assert.matches("init", read(ws .. "/init"), 1, true)
        assert.is_nil(read(ws .. "/stats"):find(") Z ", 1, true), "a zombie was left unreaped")
        assert.is_true(p:kill("TERM"))
        while not p:done() do proc.wait({ p }, 1000) end
        local res = p:result()
        assert.equal(7, res.code, res.stderr)
        assert.equal("term\n", read(ws .. "/term"))
        assert.equal("", r.left())
      end)
    end

    it("launches nothing and exits 69 when a secret cannot be resolved", function()
      if not r then pending(need.missing(rt.name, why)) return end
      local code, out, err = moat({}, { "sh", "-c", "touch /workspace/ran" }, { env = { T_TOKEN = false } })
      assert.equal(69, code)
      assert.equal("", out)
      assert.matches("TOKEN", err, 1, true)
      assert.is_false(exists(ws .. "/ran"))
      assert.equal("", r.left())
    end)
  end)
end
