-- Specs for `moat audit` and `moat runs`, through the moat binary.
local auditlog = require("moat.auditlog")
local json = require("moat.c.json")
local sys = require("moat.c.system")
local t = require("support.moat")

local function slurp(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

local function spit(path, data)
  local f = assert(io.open(path, "wb"))
  f:write(data)
  f:close()
end

describe("moat audit / moat runs", function()
  local tmp, home

  local function moat(...)
    return t.moat({ ... }, { env = { MOAT_HOME = home, NO_COLOR = "1" } })
  end

  local function finished(name, exit_code)
    local run = auditlog.start({ name = name, workspace = "/w", runtime = "docker", image = "alpine",
      command = { "sh", "-c", "echo hi" }, version = "test" })
    run:record("secret.resolved", { name = "DB_PASSWORD", backend = "op", ref = "op://vault/db/password", ms = 12 })
    run:record("secret.resolved", { name = "API_KEY", backend = "env", ref = "env://API_KEY", ms = 0 })
    run:record("container.started", { runtime = "docker", image = "alpine", container = "moat-abc" })
    run:record("container.exited", { status = exit_code, ms = 40 })
    run:finish({ outcome = "exited", exit = exit_code })
    return run
  end

  setup(function() assert(sys.harden()) end)

  before_each(function()
    tmp = t.tmpdir()
    home = tmp .. "/home"
    auditlog.set_home(home)
  end)

  after_each(function()
    auditlog.set_home(nil)
    t.rmtree(tmp)
  end)

  describe("runs", function()
    it("says so when nothing was recorded", function()
      local code, out = moat("runs")
      assert.equal(0, code)
      assert.matches("no runs recorded", out)
      code, out = moat("runs", "--json")
      assert.equal(0, code)
      assert.equal("[]\n", out)
    end)

    it("lists runs newest first with name, start, status and verification", function()
      local a = finished("alpha", 0)
      local b = auditlog.start({ name = "beta" })
      b:close()
      local c = auditlog.start({ name = "gamma" })
      c:record("secret.failed", { name = "X", backend = "ssm", ref = "ssm:///x", ms = 5, kind = "not_found" })
      c:finish({ outcome = "failed", exit = 69, kind = "secrets" })
      local code, out = moat("runs")
      assert.equal(0, code)
      local lines = {}
      for l in out:gmatch("[^\n]+") do lines[#lines + 1] = l end
      assert.equal(4, #lines)
      assert.matches("^RUN%s+NAME%s+STARTED%s+STATUS%s+VERIFIES", lines[1])
      assert.matches("^" .. c.id:gsub("%p", "%%%0") .. "%s+gamma%s+%S+Z%s+failed %(failed, exit 69%)%s+yes$", lines[2])
      assert.matches("^" .. b.id:gsub("%p", "%%%0") .. "%s+beta%s+%S+Z%s+unfinished%s+no %(unfinished%)$", lines[3])
      assert.matches("^" .. a.id:gsub("%p", "%%%0") .. "%s+alpha%s+%S+Z%s+finished %(exit 0%)%s+yes$", lines[4])
    end)

    it("--json gives one object per run with status and verification", function()
      local a = finished("alpha", 3)
      local code, out = moat("runs", "--json")
      assert.equal(0, code)
      local list = json.decode(out)
      assert.equal(1, #list)
      assert.equal(a.id, list[1].id)
      assert.equal("alpha", list[1].name)
      assert.equal("finished", list[1].status)
      assert.equal(3, list[1].exit)
      assert.is_true(list[1].verifies)
      assert.equal("valid", list[1].verify.status)
    end)

    it("shows a tampered run as not verifying, naming the seq", function()
      local a = finished("alpha", 0)
      spit(a.path, (slurp(a.path):gsub("DB_PASSWORD", "DB_PASSWORX")))
      local code, out = moat("runs")
      assert.equal(0, code)
      assert.matches("no %(seq 2%)", out)
    end)

    it("refuses arguments", function()
      assert.equal(64, (moat("runs", "extra")))
      assert.equal(64, (moat("runs", "--bogus")))
    end)
  end)

  describe("audit", function()
    it("lists the newest run by default: time, seq, type and key fields", function()
      finished("old", 0)
      local run = finished("new", 0)
      local code, out = moat("audit")
      assert.equal(0, code)
      assert.matches("run " .. run.id:gsub("%p", "%%%0"), out)
      assert.matches("%d%d%d%d%-%d%d%-%d%dT[%d:.]+Z%s+1 run%.started%s+name=new runtime=docker image=alpine", out)
      assert.matches('command=%[sh %-c "echo hi"%]', out)
      assert.matches("2 secret%.resolved%s+name=DB_PASSWORD backend=op reference=op://vault/db/password ms=12", out)
      assert.matches("4 container%.started%s+runtime=docker image=alpine container=moat%-abc", out)
      assert.matches("6 run%.finished%s+outcome=exited exit=0", out)
      assert.matches("valid: 6 records", out)
      assert.equal(out, select(2, moat("audit", "--last")))
    end)

    it("finds a run by id or unique prefix, and refuses unknown or doubled selectors", function()
      local a = finished("alpha", 0)
      finished("beta", 0)
      local code, out = moat("audit", a.id)
      assert.equal(0, code)
      assert.matches("name=alpha", out)
      code, out = moat("audit", a.id:sub(1, #a.id - 2))
      assert.equal(0, code)
      assert.matches("name=alpha", out)
      local err
      code, out, err = moat("audit", "1999")
      assert.equal(64, code)
      assert.equal("", out)
      assert.matches("no run matches '1999'", err)
      code, out, err = moat("audit", a.id, "--last")
      assert.equal(64, code)
      assert.equal("", out)
      assert.matches("not both", err)
    end)

    it("fails clearly when there are no runs", function()
      local code, _, err = moat("audit")
      assert.equal(64, code)
      assert.matches("no runs recorded", err)
    end)

    it("--json prints the log's records, one JSON object a line, without a torn last line", function()
      local run = finished("alpha", 0)
      local f = assert(io.open(run.path, "ab"))
      f:write('{"seq":7,"ts":"2026-')
      f:close()
      local code, out = moat("audit", "--json")
      assert.equal(0, code)
      local n = 0
      for line in out:gmatch("([^\n]*)\n") do
        n = n + 1
        local r = json.decode(line)
        assert.equal(n, r.seq)
        assert.is_string(r.hash)
      end
      assert.equal(6, n)
    end)

    it("--verify exits 0 on a valid run", function()
      local run = finished("alpha", 0)
      local code, out = moat("audit", "--verify", run.id)
      assert.equal(0, code)
      assert.matches("valid: 6 records, chain intact, last record %(seq 6%) signed", out)
    end)

    it("--verify exits 1 naming the first bad seq and why", function()
      local run = finished("alpha", 0)
      local lines = {}
      for l in slurp(run.path):gmatch("([^\n]*)\n") do lines[#lines + 1] = l end
      lines[3], lines[4] = lines[4], lines[3]
      spit(run.path, table.concat(lines, "\n") .. "\n")
      local code, out = moat("audit", "--verify")
      assert.equal(1, code)
      assert.matches("invalid at seq 3: expected seq 3, found seq 4", out)
      code, out = moat("audit", "--verify", "--json")
      assert.equal(1, code)
      local rep = json.decode(out)
      assert.equal("invalid", rep.status)
      assert.equal(3, rep.bad_seq)
      assert.is_false(rep.ok)
      assert.equal(run.id, rep.run)
    end)

    it("--verify exits 1 on an unfinished run and says so", function()
      local run = auditlog.start({ name = "killed" })
      run:record("secret.resolved", { name = "A", backend = "env", ref = "env://A", ms = 1 })
      run:close()
      local code, out = moat("audit", "--verify")
      assert.equal(1, code)
      assert.matches("unfinished: no signature — the run did not finish", out)
    end)

    it("--verify exits 1 when the tail was truncated", function()
      local run = finished("alpha", 0)
      local text = slurp(run.path)
      spit(run.path, text:sub(1, text:find("\n[^\n]*\n$")))
      local code, out = moat("audit", "--verify")
      assert.equal(1, code)
      assert.matches("invalid at seq 6: the log ends at seq 5 but the signature covers seq 6", out)
    end)
  end)
end)
