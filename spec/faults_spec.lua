-- Fault injection (SECURITY.md 8, 9, 14, and 5/12 for runtimes that cannot start): backends
-- that hang, hold the pipe through a grandchild, flood, die by a signal or print garbage; a
-- full or unwritable $MOAT_HOME; a runtime that is missing or cannot start. Each gives its
-- named error and documented exit status, launches nothing and leaves nothing behind.
local t = require("support.moat")
local need = require("support.need")
local sys = require("moat.c.system")
local lfs = require("lfs")
local P = dofile(MOAT_ROOT .. "/spec/fixtures/faults/procs.lua")

local FAULT = MOAT_ROOT .. "/spec/fixtures/faults/fault"
local TOKEN = "tok-fault-7c1e55aa90d3"
local NOBODY = "65534"

local CONFIG = [[
name: faults
secrets:
  A: op://vault/item/field
  S: ssm:///app/fault
  W: awssm:///app/fault
  TOKEN: env://T_TOKEN
]]

math.randomseed(sys.epoch_ms())

local exists = t.exists

local function as_nobody(argv)
  local out = { "setpriv", "--reuid=" .. NOBODY, "--regid=" .. NOBODY, "--clear-groups" }
  for _, a in ipairs(argv) do out[#out + 1] = a end
  return out
end

describe("fault injection", function()
  local ws, home, tmp, bin, cwd, tag

  before_each(function()
    ws, home, tmp, bin, cwd = t.tmpdir(), t.tmpdir(), t.tmpdir(), t.tmpdir(), t.tmpdir()
    t.write(ws .. "/moat.yaml", CONFIG)
    for _, name in ipairs({ "op", "aws" }) do
      assert.equal(0, t.exec({ "ln", "-s", FAULT, bin .. "/" .. name }).code)
    end
    tag = P.new_tag()
  end)

  after_each(function()
    P.kill_tagged(tag)
    for _, d in ipairs({ ws, home, tmp, bin, cwd }) do t.rmtree(d) end
  end)

  local function env(extra)
    local e = { MOAT_HOME = home .. "/moat", TMPDIR = tmp, PATH = bin .. ":" .. os.getenv("PATH"),
      T_TOKEN = TOKEN, FAULT_TAG = tag, FAULT_ECHO = "T_TOKEN", MOAT_RUNTIME = false, MOAT_NETWORK = false,
      MOAT_SITE_DIR = home .. "/site", XDG_CONFIG_HOME = home .. "/xdg", MOAT_LUA_PATH = false,
      AWS_REGION = "us-east-1", DOCKER_HOST = false, FAULT_MODE = false, FAULT_LOG = false,
      DOCKER_FAULT_MODE = false, DOCKER_FAULT_LOG = false }
    for k, v in pairs(extra or {}) do e[k] = v end
    return e
  end

  -- Runs moat from `cwd` (where a crashing child would drop a core file).
  local function moat(args, extra, argv_wrap)
    local argv = { _G.MOAT_BIN, table.unpack(t.trusting(args)) }
    if argv_wrap then argv = argv_wrap(argv) end
    local r = t.exec(argv, { env = env(extra), cwd = cwd, timeout = 60000 })
    return r.code, r.stdout, r.stderr, r
  end

  local function audit_records(moat_home)
    local runs = (moat_home or home .. "/moat") .. "/runs"
    local ids = {}
    for n in pairs(P.listing(runs)) do ids[#ids + 1] = n end
    table.sort(ids)
    assert.is_true(#ids > 0, "no run was recorded")
    local text = assert(P.read(runs .. "/" .. ids[#ids] .. "/audit.jsonl"))
    local recs, by = t.records(text), {}
    for _, r in ipairs(recs) do
      if r.data and r.data.name then by[r.data.name] = r end
    end
    return recs, by, text
  end

  -- Nothing launched, no process of the fault left, nothing in TMPDIR, no core file, no value
  -- in moat's output or under its home.
  local function nothing_left(out, err)
    assert.is_false(exists(ws .. "/ran"), "the command was launched")
    assert.same({ ["moat.yaml"] = true }, P.listing(ws))
    assert.same({}, P.wait_gone(tag, 5000))
    assert.same({}, P.listing(tmp))
    assert.same({}, P.listing(cwd))
    assert.is_nil(out:find(TOKEN, 1, true))
    assert.is_nil(err:find(TOKEN, 1, true))
    assert.same({}, P.grep_files(P.files_under(home), { TOKEN }))
  end

  describe("in backends", function()
    local cases = {
      { mode = "hang", why = "never exits and ignores TERM", kind = "timeout",
        op = "op did not finish within 1 s and was killed", aws = "aws did not finish within 1 s and was killed" },
      { mode = "grandchild", why = "waits for a grandchild that holds its stdout", kind = "timeout",
        op = "op did not finish within 1 s and was killed", aws = "aws did not finish within 1 s and was killed" },
      { mode = "orphan", why = "exits with an error while a grandchild holds its stdout",
        op = "op failed: fault: the grandchild keeps the pipe open", aws = "failed",
        kinds = { A = "backend_error", S = "backend_error", W = "backend_error" } },
      { mode = "flood", why = "prints without end", kind = "output_limit",
        op = "op printed more than 16 MiB and was killed", aws = "aws printed more than 16 MiB and was killed" },
      { mode = "segv", why = "dies by SIGSEGV", kind = "backend_error",
        op = "op was killed by signal SEGV", aws = "aws was killed by signal SEGV" },
    }
    for _, c in ipairs(cases) do
      it("a backend CLI that " .. c.why .. ": exit 69 naming variable, reference and backend", function()
        local t0 = sys.monotonic_ms()
        local code, out, err = moat({ "run", ws, "--runtime", "host", "--timeout", "1", "--", "touch", "ran" },
          { FAULT_MODE = c.mode })
        assert.is_true(sys.monotonic_ms() - t0 < 30000)
        assert.equal(69, code, err)
        assert.equal("", out)
        assert.matches("3 secrets could not be resolved", err, 1, true)
        assert.matches("A (op://vault/item/field, backend op): " .. c.op, err, 1, true)
        assert.matches("S (ssm:///app/fault, backend ssm): " .. (c.mode == "orphan" and "aws ssm" or c.aws),
          err, 1, true)
        assert.matches("W (awssm:///app/fault, backend awssm): " .. (c.mode == "orphan" and "aws secretsmanager"
          or c.aws), err, 1, true)
        nothing_left(out, err)
        local recs, by = audit_records()
        assert.equal("run.started", recs[1].type)
        for _, name in ipairs({ "A", "S", "W" }) do
          assert.equal("secret.failed", by[name].type)
          assert.equal(c.kind or c.kinds[name], by[name].data.kind)
        end
        assert.equal("secret.resolved", by.TOKEN.type)
        assert.equal("run.finished", recs[#recs].type)
        assert.equal(69, recs[#recs].data.exit)
        for _, r in ipairs(recs) do assert.are_not.equal("container.started", r.type) end
      end)
    end

    it("aws printing garbage with exit 0: ssm and awssm say it is not JSON without quoting it", function()
      local code, out, err = moat({ "run", ws, "--runtime", "host", "--", "touch", "ran" },
        { FAULT_MODE = "garbage" })
      assert.equal(69, code, err)
      assert.matches("2 secrets could not be resolved", err, 1, true)
      assert.matches("S (ssm:///app/fault, backend ssm): aws printed output that is not the expected JSON",
        err, 1, true)
      assert.matches("W (awssm:///app/fault, backend awssm): aws printed output that is not the expected JSON",
        err, 1, true)
      assert.is_nil(err:find("not JSON <html>", 1, true))
      nothing_left(out, err)
      local _, by = audit_records()
      assert.equal("backend_error", by.S.data.kind)
      assert.equal("backend_error", by.W.data.kind)
    end)

    it("a backend CLI that echoes a value on stderr while failing: the value stays hidden", function()
      local code, out, err = moat({ "run", "-v", "-v", ws, "--runtime", "host", "--", "touch", "ran" },
        { FAULT_MODE = "echo" })
      assert.equal(69, code, err)
      assert.matches("the value was <concealed by moat>", err, 1, true)
      nothing_left(out, err)
    end)
  end)

  describe("in $MOAT_HOME", function()
    local mnt

    -- Mounts a small tmpfs at `mnt`, fills it and runs `body`; always unmounts.
    local function with_full_disk(body, before_fill)
      mnt = t.tmpdir()
      local m = t.exec({ "mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", mnt })
      if m.code ~= 0 then
        t.rmtree(mnt)
        pending(need.missing("a tmpfs mount", (m.stderr:gsub("\n", " "))))
        return
      end
      local ok, e = pcall(function()
        if before_fill then before_fill() end
        local f = assert(io.open(mnt .. "/filler", "wb"))
        local chunk = string.rep("x", 4096)
        while f:write(chunk) and f:flush() do end
        f:close()
        body()
      end)
      local u = t.exec({ "umount", mnt })
      if u.code ~= 0 then t.exec({ "umount", "-l", mnt }) end
      t.rmtree(mnt)
      assert(ok, e)
    end

    local function no_temp_files(dir)
      for _, f in ipairs(P.files_under(dir)) do
        assert.is_nil(f:match("%.tmp%-[^/]*$"), f .. " was left behind")
      end
    end

    -- These runs take their config from outside the workspace (the user's own words), so no
    -- trust record is written: the first write to $MOAT_HOME is the audit log's.
    local function own_config()
      t.write(home .. "/own.yaml", CONFIG)
      return home .. "/own.yaml"
    end

    it("a full disk before the first run (no key yet): exit 74 naming the audit log, nothing launched", function()
      local own = own_config()
      with_full_disk(function()
        local code, out, err = moat({ "run", ws, "--config", own, "--runtime", "host", "--", "touch", "ran" },
          { MOAT_HOME = mnt .. "/moat", FAULT_MODE = "segv" })
        assert.equal(74, code, err)
        assert.matches("audit log", err, 1, true)
        assert.matches("No space left on device", err, 1, true)
        nothing_left(out, err)
        no_temp_files(mnt)
        assert.same({}, P.grep_files(P.files_under(mnt), { TOKEN }))
      end)
    end)

    it("a full disk once the keys exist: exit 74 before any backend runs, nothing launched", function()
      local log = bin .. "/calls.log"
      local own = own_config()
      with_full_disk(function()
        local code, out, err = moat({ "run", ws, "--config", own, "--runtime", "host", "--", "touch", "ran" },
          { MOAT_HOME = mnt .. "/moat", FAULT_MODE = "segv", FAULT_LOG = log })
        assert.equal(74, code, err)
        assert.matches("audit log", err, 1, true)
        assert.matches("No space left on device", err, 1, true)
        nothing_left(out, err)
        no_temp_files(mnt)
        -- The audit record of the run's start comes first: no backend was asked.
        assert.is_nil(P.read(log))
      end, function()
        -- A first run that fails (exit 69) makes the keys and one run directory.
        local code = moat({ "run", ws, "--config", own, "--runtime", "host", "--", "touch", "ran" },
          { MOAT_HOME = mnt .. "/moat", FAULT_MODE = "segv" })
        assert.equal(69, code)
        assert.is_true(exists(mnt .. "/moat/keys"))
      end)
    end)

    it("an unwritable $MOAT_HOME (owned by root, moat as another user): exit 74, nothing launched", function()
      -- root ignores permissions, so moat runs as nobody; everything else it needs is readable.
      if sys.getuid() ~= 0 then pending(need.missing("root", "needed to run moat as another user")) return end
      for _, d in ipairs({ ws, home, tmp, cwd }) do assert.equal(0, t.exec({ "chmod", "0755", d }).code) end
      assert.equal(0, t.exec({ "chown", NOBODY, tmp, cwd }).code)
      assert.equal(0, t.exec({ "chmod", "0777", ws }).code)
      assert(lfs.mkdir(home .. "/moat"))
      assert.equal(0, t.exec({ "chmod", "0755", home .. "/moat" }).code)
      local code, out, err = moat({ "run", ws, "--config", own_config(), "--runtime", "host", "--", "touch", "ran" },
        { FAULT_MODE = "segv" }, as_nobody)
      assert.equal(74, code, err)
      assert.matches("audit log", err, 1, true)
      assert.matches("Permission denied", err, 1, true)
      nothing_left(out, err)
      assert.same({}, P.listing(home .. "/moat"))
    end)
  end)

  describe("in runtimes", function()
    it("a runtime asked for by name that is not installed: exit 69 with the install hint, nothing recorded", function()
      local empty = t.tmpdir()
      for _, rt in ipairs({ "docker", "podman", "bwrap" }) do
        local code, out, err = moat({ "run", ws, "--runtime", rt, "--image", "busybox", "--", "touch", "ran" },
          { PATH = empty })
        assert.equal(69, code, err)
        assert.matches(("runtime %s (from --runtime) is not usable: no %s on PATH"):format(rt, rt), err, 1, true)
        assert.matches("hint: install", err, 1, true)
        nothing_left(out, err)
      end
      t.rmtree(empty)
      assert.is_false(exists(home .. "/moat/runs"))
    end)

    -- With a local engine the values travel through moat's init shim, so moat first reads the
    -- image's entrypoint: a daemon that is down stops the run there, before any launch.
    it("with every secret resolvable, a docker client whose daemon is down: 69 naming it, nothing launched, audited",
      function()
        t.write(ws .. "/moat.yaml", "name: faults\nsecrets:\n  TOKEN: env://T_TOKEN\n")
        local log = bin .. "/calls.log"
        assert.equal(0, t.exec({ "ln", "-s", FAULT, bin .. "/docker" }).code)
        local code, out, err = moat({ "run", ws, "--runtime", "docker", "--image", "busybox", "--", "touch", "ran" },
          { DOCKER_FAULT_MODE = "daemon-down", DOCKER_FAULT_LOG = log })
        assert.equal(69, code, err)
        assert.matches("Is the docker daemon running?", err, 1, true)
        -- Asked for by name, docker is not probed; no client call carried a value, none ran a container.
        local calls = assert(P.read(log))
        assert.is_nil(calls:find("docker run", 1, true))
        assert.is_nil(calls:find(TOKEN, 1, true))
        nothing_left(out, err)
        local recs = audit_records()
        local types = {}
        for _, r in ipairs(recs) do types[#types + 1] = r.type end
        assert.same({ "run.started", "secret.resolved", "run.finished" }, types)
        assert.equal("launch", recs[3].data.kind)
        assert.equal(69, recs[3].data.exit)
      end)

    it("the real docker client with no daemon at DOCKER_HOST: 69, no container, audited", function()
      if not t.which("docker") then pending(need.missing("the docker client")) return end
      t.write(ws .. "/moat.yaml", "name: faults\nsecrets:\n  TOKEN: env://T_TOKEN\n")
      local code, out, err = moat({ "run", ws, "--runtime", "docker", "--image", "busybox", "--", "touch",
        "/workspace/ran" }, { PATH = os.getenv("PATH"), DOCKER_HOST = "unix://" .. tmp .. "/no-daemon.sock" })
      assert.equal(69, code, err)
      assert.matches("Cannot connect to the Docker daemon", err, 1, true)
      nothing_left(out, err)
      local recs = audit_records()
      assert.equal("run.finished", recs[#recs].type)
      assert.equal("launch", recs[#recs].data.kind)
      assert.equal(69, recs[#recs].data.exit)
    end)

    it("a docker client that cannot be executed: exit 69 naming it, nothing recorded", function()
      t.write(ws .. "/moat.yaml", "name: faults\nsecrets:\n  TOKEN: env://T_TOKEN\n")
      t.write(bin .. "/docker", "#!/bin/sh\ntouch " .. ws .. "/ran\n")
      assert.equal(0, t.exec({ "chmod", "0644", bin .. "/docker" }).code)
      local code, out, err = moat({ "run", ws, "--runtime", "docker", "--image", "busybox", "--", "true" },
        { PATH = bin })
      assert.equal(69, code, err)
      -- Only an executable file counts as the client, found before anything is recorded.
      assert.matches("runtime docker (from --runtime) is not usable: no docker on PATH", err, 1, true)
      nothing_left(out, err)
      assert.is_false(exists(home .. "/moat/runs"))
    end)
  end)
end)
