-- Leak checks (SECURITY.md 1, 3, 4, 6, 13): no value in any process's command line while moat
-- runs (host and bwrap here; docker and podman in integration_leaks_spec), none in moat's own
-- output at any verbosity with hostile backends, none at rest after runs killed with SIGKILL at
-- random points, no child holding the audit log's fd, and moat not dumpable and without core.
local t = require("support.moat")
local need = require("support.need")
local proc = require("moat.c.proc")
local sys = require("moat.c.system")
local lfs = require("lfs")
local P = dofile(MOAT_ROOT .. "/spec/fixtures/faults/procs.lua")

local FAKE_OP = t.FAKE_BIN .. "/op"
local FAULT = MOAT_ROOT .. "/spec/fixtures/faults/fault"
local NOBODY = "65534"

local VALUES = {
  OPV = "op-value-4Fq9Zx-secret",
  KEY = "-----BEGIN KEY-----\nop-multi-line-two-77\n-----END KEY-----",
  TOKEN = "tok-leak-18c4e0a7b2",
  PLAIN = "plain-secret-value-5a5a",
  OWN = "leaky-own-value-93ab",
}
local NEEDLES = P.needles(VALUES)

local OP_DATA = ([[return {
  ["op://vault/item/password"] = %q,
  ["op://vault/item/key"] = %q,
}
]]):format(VALUES.OPV, VALUES.KEY)

-- A user backend that puts values in everything it says: its debug lines, its failures (with
-- a CLI's stderr that echoes a value) and an error it raises.
local LEAKY = ([[
local M = { scheme = "leaky", description = "a backend that puts values in its messages" }
function M.parse(ref)
  local key = ref:match("^leaky://(%%w+)$")
  if not key then return nil, "must be leaky://KEY" end
  return { key = key }
end
function M.resolve(requests, ctx)
  local own = %q
  local r = ctx.run({ %q })
  local said = r and r.stderr or "nothing"
  for _, req in ipairs(requests) do
    if req.parsed.key == "own" then ctx.ok(req, own) end
  end
  ctx.log("fetched", own, "the CLI said", said, "token", ctx.env("T_TOKEN"))
  for _, req in ipairs(requests) do
    if req.parsed.key == "fail" then
      ctx.fail(req, { kind = "backend_error", reason = "cannot use " .. own .. ": " .. said,
        fix = "replace " .. tostring(ctx.env("T_TOKEN")) })
    end
  end
  for _, req in ipairs(requests) do
    if req.parsed.key == "raise" then error("exploded near " .. own .. " and " .. tostring(ctx.env("T_TOKEN"))) end
  end
end
return M
]]):format(VALUES.OWN, FAULT)

local CONFIG = ([[
name: leaks
secrets:
  OPV: op://vault/item/password
  KEY: op://vault/item/key
  TOKEN: env://T_TOKEN
  PLAIN: %s
]]):format(VALUES.PLAIN)

math.randomseed(sys.epoch_ms())

local exists = t.exists

describe("leak checks", function()
  local ws, home, tmp, bin, tag

  before_each(function()
    ws, home, tmp, bin = t.tmpdir(), t.tmpdir(), t.tmpdir(), t.tmpdir()
    t.write(ws .. "/moat.yaml", CONFIG)
    t.write(home .. "/op-data.lua", OP_DATA)
    -- A copy of the fake op, so its processes carry this test's own path.
    assert.equal(0, t.exec({ "cp", FAKE_OP, bin .. "/op" }).code)
    assert.equal(0, t.exec({ "ln", "-s", FAULT, bin .. "/aws" }).code)
    t.write(home .. "/xdg/moat/lua/moat/backends/leaky.lua", LEAKY)
    tag = P.new_tag()
  end)

  after_each(function()
    P.kill_tagged(tag)
    P.kill_tagged(bin)
    for _, d in ipairs({ ws, home, tmp, bin }) do t.rmtree(d) end
  end)

  local function env(extra)
    local e = { MOAT_HOME = home .. "/moat", TMPDIR = tmp, PATH = bin .. ":" .. os.getenv("PATH"),
      T_TOKEN = VALUES.TOKEN, FAKE_OP_DATA = home .. "/op-data.lua", FAKE_OP_LATENCY_MS = false,
      FAKE_OP_LEAK = false, FAKE_OP_LOG = false, FAKE_OP_HANG = false, FAKE_OP_SIGNED_OUT = false,
      FAULT_TAG = tag, FAULT_MODE = "echo", FAULT_ECHO = "T_TOKEN", MOAT_RUNTIME = false,
      MOAT_NETWORK = false, MOAT_SITE_DIR = home .. "/site", XDG_CONFIG_HOME = home .. "/xdg",
      MOAT_LUA_PATH = false, AWS_REGION = "us-east-1" }
    for k, v in pairs(extra or {}) do e[k] = v end
    return e
  end

  local function spawn(args, extra, wrap, cwd)
    local argv = { _G.MOAT_BIN, table.unpack(t.trusting(args)) }
    if wrap then argv = wrap(argv) end
    return assert(proc.spawn(argv, { env = t.env(env(extra)), stdout = "pipe", stderr = "pipe",
      timeout = 120000, cwd = cwd }))
  end

  local function moat(args, extra)
    return t.moat(args, { env = env(extra) })
  end

  describe("command lines", function()
    for _, rt in ipairs({ "host", "bwrap" }) do
      it("hold no value while moat resolves and runs on " .. rt, function()
        if rt == "bwrap" and not t.bwrap_works() then pending(need.missing("a bwrap sandbox")) return end
        local p = spawn({ "run", ws, "--runtime", rt, "--", "sh", "-c", "sleep 0.8; : " .. tag },
          { FAKE_OP_LATENCY_MS = "400" })
        local expect = { backend = bin .. "/op", command = ": " .. tag }
        if rt == "bwrap" then expect.sandbox = "bwrap " end
        local w = P.watch(p, NEEDLES, expect)
        local r = P.finish(p)
        assert.equal(0, r.code, r.stderr)
        assert.same({}, w.hits)
        -- The sampler saw the backend, the command (and the sandbox) it was meant to check.
        assert.is_true(w.scans > 10)
        for label in pairs(expect) do assert.is_true(w.seen[label], "never saw the " .. label) end
      end)
    end
  end)

  describe("moat's own output", function()
    local function check(code, out, err, what)
      local n = P.holds(out, NEEDLES) or P.holds(err, NEEDLES)
      assert.is_nil(n, what .. " printed a value")
      return code
    end

    it("holds no value at any verbosity, with backends that echo values and fail", function()
      t.write(ws .. "/moat.yaml", CONFIG .. table.concat({
        "  BAD: op://vault/item/missing",
        "  S: ssm:///app/leak",
        "  W: awssm:///app/leak",
        "  OWN: leaky://own",
        "  LFAIL: leaky://fail",
        "  LRAISE: leaky://raise",
        "",
      }, "\n"))
      local hidden, debug = false, false
      for _, verbosity in ipairs({ {}, { "-v" }, { "-v", "-v" } }) do
        local function args(cmd, ...)
          local a = { cmd }
          table.move(verbosity, 1, #verbosity, 2, a)
          table.move({ ... }, 1, select("#", ...), #a + 1, a)
          return a
        end
        -- op inject fails (a missing item) and prints the values it found on stderr.
        local extra = { FAKE_OP_LEAK = "1" }
        local code, out, err = moat(args("run", ws, "--runtime", "host", "--", "touch", "ran"), extra)
        assert.equal(69, check(code, out, err, "moat run"))
        assert.is_false(exists(ws .. "/ran"))
        assert.matches("BAD (op://vault/item/missing", err, 1, true)
        assert.matches("LFAIL (leaky://fail, backend leaky)", err, 1, true)
        assert.matches("LRAISE (leaky://raise, backend leaky)", err, 1, true)
        hidden = hidden or err:find("<concealed by moat>", 1, true) ~= nil
        debug = debug or err:find("moat: debug: backend leaky: fetched", 1, true) ~= nil
        code, out, err = moat(args("secrets", "check", ws, "--resolve"), extra)
        assert.equal(69, check(code, out, err, "moat secrets check --resolve"))
        code, out, err = moat(args("secrets", "check", ws, "--resolve", "--json"), extra)
        assert.equal(69, check(code, out, err, "moat secrets check --resolve --json"))
        assert.matches('"LFAIL"', out, 1, true)
        code, out, err = moat(args("secrets", "check", ws, "--json"), extra)
        check(code, out, err, "moat secrets check --json")
      end
      -- The hostile paths were taken: values were concealed and debug lines were written.
      assert.is_true(hidden)
      assert.is_true(debug)
      for _, a in ipairs({ { "audit", "--last" }, { "audit", "--last", "--json" }, { "audit", "--last", "--verify" },
        { "runs" }, { "runs", "--json" }, { "audit", "-v", "-v", "--last" } }) do
        local code, out, err = moat(a)
        assert.equal(0, check(code, out, err, "moat " .. table.concat(a, " ")), err)
      end
    end)

    it("holds no value in a successful run at -v -v, masked or not", function()
      t.write(ws .. "/moat.yaml", CONFIG .. "  OWN: leaky://own\n")
      for _, mask in ipairs({ "--mask", "--no-mask" }) do
        local code, out, err = moat({ "run", "-v", "-v", ws, mask, "--runtime", "host", "--", "true" })
        assert.equal(0, check(code, out, err, "moat run " .. mask), err)
        assert.matches("moat: debug:", err, 1, true)
        code, out, err = moat({ "secrets", "-v", "-v", "check", ws, "--resolve", "--json" })
        assert.equal(0, check(code, out, err, "moat secrets check --resolve --json"), err)
      end
    end)
  end)

  describe("files at rest", function()
    it("no file under $MOAT_HOME, $TMPDIR or new in /dev/shm holds a value after runs killed at random", function()
      local shm_before = P.listing("/dev/shm")
      local killed, finished = 0, 0
      for i = 1, 12 do
        local extra = { FAKE_OP_LATENCY_MS = tostring(math.random(0, 400)) }
        local args = { "run", ws, "--runtime", "host" }
        if i % 4 == 0 then
          -- some runs fail: a reference op does not know
          args[#args + 1] = "--secret"
          args[#args + 1] = "MISSING=op://vault/item/nope"
        end
        args[#args + 1] = "--"
        for _, a in ipairs({ "sh", "-c", ("sleep 0.%d; : %s"):format(math.random(0, 5), tag) }) do
          args[#args + 1] = a
        end
        local p = spawn(args, extra)
        proc.wait({ p }, math.random(0, 900))
        if not p:done() then p:kill("KILL") end
        local r = P.finish(p)
        if r.signal then killed = killed + 1 else finished = finished + 1 end
        -- A killed moat leaves its backend and command running: end them (by pid).
        P.kill_tagged(tag)
        P.kill_tagged(bin)
      end
      assert.same({}, P.wait_gone(tag, 5000))
      assert.is_true(killed >= 1, "no run was killed")
      local files = P.files_under(home .. "/moat")
      assert.is_true(#files >= 3, "moat wrote no audit logs")
      P.files_under(tmp, files)
      for name in pairs(P.listing("/dev/shm")) do
        if not shm_before[name] then
          local path = "/dev/shm/" .. name
          if lfs.symlinkattributes(path, "mode") == "directory" then P.files_under(path, files)
          else files[#files + 1] = path end
        end
      end
      assert.same({}, P.grep_files(files, NEEDLES))
    end)
  end)

  describe("the audit log's file descriptor", function()
    -- Returns the audit log moat (pid) has open | nil.
    local function audit_path(pid)
      local dir = "/proc/" .. pid .. "/fd"
      for fd in lfs.dir(dir) do
        local target = fd:match("^%d+$") and lfs.symlinkattributes(dir .. "/" .. fd, "target")
        if target and target:match("/runs/[^/]+/audit%.jsonl$") then return target end
      end
      return nil
    end

    local function holders(pid, path)
      local out = {}
      for _, d in ipairs(P.descendants(pid)) do
        if #P.fds_to(d, path) > 0 then out[#out + 1] = d .. " " .. tostring(P.cmdline(d)) end
      end
      return out
    end

    for _, rt in ipairs({ "host", "bwrap" }) do
      it("is held by moat but by no backend, runtime or command process on " .. rt, function()
        if rt == "bwrap" and not t.bwrap_works() then pending(need.missing("a bwrap sandbox")) return end
        local p = spawn({ "run", ws, "--runtime", rt, "--", "sh", "-c", "touch ready; sleep 30; : " .. tag },
          { FAKE_OP_LATENCY_MS = "1500" })
        local pid = p:pid()
        -- While the backend runs.
        local deadline = sys.monotonic_ms() + 20000
        local op
        while not op and not p:done() and sys.monotonic_ms() < deadline do
          for _, d in ipairs(P.descendants(pid)) do
            if (P.cmdline(d) or ""):find(bin .. "/op", 1, true) then op = d end
          end
          if not op then proc.wait({ p }, 10) end
        end
        assert.is_number(op, "never saw the backend run")
        local path = audit_path(pid)
        assert.is_string(path, "moat does not hold its audit log open")
        assert.same({}, holders(pid, path))
        -- While the command runs.
        assert.is_true(P.wait_file(ws .. "/ready", p), "the command never started")
        local d = P.descendants(pid)
        assert.is_true(#d >= 1)
        assert.same({}, holders(pid, path))
        p:kill("TERM")
        local r = P.finish(p)
        assert.is_true(r.code == 143 or r.code == 137, tostring(r.code) .. " " .. r.stderr)
      end)
    end
  end)

  describe("moat's process", function()
    -- Runs argv as nobody (uid and gid 65534, no supplementary groups).
    local function as_nobody(argv)
      local out = { "setpriv", "--reuid=" .. NOBODY, "--regid=" .. NOBODY, "--clear-groups" }
      for _, a in ipairs(argv) do out[#out + 1] = a end
      return out
    end

    local function limits_core(pid)
      local lim = assert(P.read("/proc/" .. pid .. "/limits"))
      return lim:match("Max core file size%s+(%S+)%s+(%S+)")
    end

    -- Can nobody read /proc/<pid>/environ? Returns ok, what it read.
    local function nobody_reads_environ(pid)
      local r = t.exec(as_nobody({ "cat", "/proc/" .. pid .. "/environ" }))
      return r.code == 0, r.stdout, r.stderr
    end

    local function own_for_nobody()
      for _, d in ipairs({ ws, home, tmp, bin }) do
        assert.equal(0, t.exec({ "chown", "-R", NOBODY .. ":" .. NOBODY, d }).code)
        assert.equal(0, t.exec({ "chmod", "0755", d }).code)
      end
    end

    it("is not dumpable while a backend runs: a same-uid process cannot read its environ", function()
      if sys.getuid() ~= 0 then pending(need.missing("root", "to run moat and its reader as another user")) return end
      -- op is the fault stand-in here: it says it is ready, then sleeps.
      os.remove(bin .. "/op")
      assert.equal(0, t.exec({ "ln", "-s", FAULT, bin .. "/op" }).code)
      own_for_nobody()
      local ready = tmp .. "/backend-ready"
      local p = spawn({ "run", ws, "--runtime", "host", "--timeout", "20", "--", "touch", "ran" },
        { FAULT_MODE = "wait", FAULT_READY = ready, T_TOKEN = VALUES.TOKEN }, as_nobody)
      local ok = P.wait_file(ready, p)
      local pid = p:pid()
      local backend
      for _, d in ipairs(P.descendants(pid)) do
        if (P.cmdline(d) or ""):find(tag, 1, true) then backend = d end
      end
      local status = P.read("/proc/" .. pid .. "/status") or ""
      local readable, got, why = nobody_reads_environ(pid)
      local b_readable, b_got = nobody_reads_environ(backend or pid)
      local owner = lfs.attributes("/proc/" .. pid .. "/environ", "uid")
      local core_soft = limits_core(pid)
      p:kill("TERM")
      P.finish(p)
      assert.is_true(ok, "the backend never started")
      assert.matches("Uid:%s+" .. NOBODY .. "%s", status)
      -- moat runs as nobody, yet its /proc files belong to root and nobody cannot read them …
      assert.equal(0, owner)
      assert.is_false(readable, "nobody read moat's environ")
      assert.matches("Permission denied", why, 1, true)
      assert.is_nil(got:find(VALUES.TOKEN, 1, true))
      -- … while the backend, an ordinary process of the same user, is readable (the control).
      assert.is_number(backend, "never found the backend process")
      assert.is_true(b_readable, "the control process was not readable")
      assert.matches("T_TOKEN=" .. VALUES.TOKEN, b_got, 1, true)
      -- No core (soft limit 0); the hard limit stays, so the command can get the user's back.
      assert.equal("0", core_soft)
    end)

    it("is not dumpable while the command runs, and the command is (the control)", function()
      if sys.getuid() ~= 0 then pending(need.missing("root", "to run moat and its reader as another user")) return end
      t.write(ws .. "/moat.yaml", "name: leaks\nsecrets:\n  TOKEN: env://T_TOKEN\n")
      own_for_nobody()
      local p = spawn({ "run", ws, "--runtime", "host", "--", "sh", "-c", "touch ready; sleep 30; : " .. tag },
        {}, as_nobody)
      local ok = P.wait_file(ws .. "/ready", p)
      local pid = p:pid()
      -- The command (moat's reaper, also its child, is moat itself and as closed as moat).
      local child
      for _, d in ipairs(P.descendants(pid)) do
        if (P.cmdline(d) or ""):find(tag, 1, true) and not child then child = d end
      end
      local readable = nobody_reads_environ(pid)
      local c_readable, c_got = nobody_reads_environ(child or pid)
      local core_soft = limits_core(pid)
      p:kill("TERM")
      local r = P.finish(p)
      assert.is_true(ok, "the command never started: " .. r.stderr)
      assert.is_false(readable, "nobody read moat's environ")
      assert.is_true(c_readable, "nobody could not read its own command's environ")
      assert.matches("TOKEN=" .. VALUES.TOKEN, c_got, 1, true)
      -- No core (soft limit 0); the hard limit stays, so the command can get the user's back.
      assert.equal("0", core_soft)
      assert.equal(143, r.code)
    end)

    it("writes no core file when killed by SIGQUIT, even when started with an unlimited core size", function()
      local pattern = (P.read("/proc/sys/kernel/core_pattern") or ""):gsub("\n$", "")
      local cwd = t.tmpdir()
      local wrap = function(argv)
        return { "sh", "-c", 'ulimit -c unlimited && exec "$@"', "sh", table.unpack(argv) }
      end
      -- The control: an ordinary process started the same way dumps core here.
      local control_core = false
      if pattern:match("^core") then
        local c = assert(proc.spawn(wrap({ "sleep", tag }), { env = t.env(), cwd = cwd }))
        proc.wait({ c }, 100)
        c:kill("QUIT")
        P.finish(c)
        for n in pairs(P.listing(cwd)) do
          if n:match("^core") then control_core = true os.remove(cwd .. "/" .. n) end
        end
      end
      t.write(ws .. "/moat.yaml", "name: leaks\nsecrets:\n  TOKEN: env://T_TOKEN\n")
      local p = spawn({ "run", ws, "--runtime", "host", "--", "sh", "-c", "touch ready; sleep 30; : " .. tag },
        {}, wrap, cwd)
      local ok = P.wait_file(ws .. "/ready", p)
      local pid = p:pid()
      local soft = limits_core(pid)
      local child = P.descendants(pid)[1]
      p:kill("QUIT")
      local r = P.finish(p)
      if child then os.execute("kill -KILL " .. child .. " 2>/dev/null") end
      local listing = P.listing(cwd)
      t.rmtree(cwd)
      assert.is_true(ok, "the command never started")
      assert.equal("0", soft)
      assert.equal(require("moat.c.signal").number("QUIT"), r.signal)
      assert.same({}, listing)
      if pattern:match("^core") then
        assert.is_true(control_core, "the control process wrote no core: the check proves nothing here")
      end
    end)
  end)
end)
