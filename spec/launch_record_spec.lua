-- Nothing runs that was not recorded (SECURITY.md 21, 14): when the durable write of the launch
-- intent (container.started, committed with the records before it) fails, or the output masker
-- cannot be built, moat refuses before the command starts, and the marker the command would
-- create is absent.
local t = require("support.moat")
local need = require("support.need")
local proc = require("moat.c.proc")
local P = dofile(MOAT_ROOT .. "/spec/fixtures/faults/procs.lua")

describe("nothing runs that was not recorded", function()
  local ws, home

  before_each(function()
    ws, home = t.tmpdir(), t.tmpdir()
  end)

  after_each(function()
    t.rmtree(ws)
    t.rmtree(home)
  end)

  local function env(extra)
    local e = { MOAT_HOME = home .. "/moat", MOAT_RUNTIME = false, MOAT_NETWORK = false, MOAT_LUA_PATH = false,
      MOAT_SITE_DIR = home .. "/site", XDG_CONFIG_HOME = home .. "/xdg", PATH = t.fake_path(),
      FAKE_OP_DATA = home .. "/data.lua", FAKE_OP_LOG = home .. "/op.log", FAKE_OP_LATENCY_MS = "1500" }
    for k, v in pairs(extra or {}) do e[k] = v end
    return t.env(e)
  end

  local function argv(...)
    return { _G.MOAT_BIN, "run", "--trust", ws, "--runtime", "host", "--mask", ... }
  end

  it("a MOAT_HOME that fills up while secrets are fetched: the launch intent fails, exit 74, nothing ran", function()
    local mnt = t.tmpdir()
    local m = t.exec({ "mount", "-t", "tmpfs", "-o", "size=512k,mode=0700", "tmpfs", mnt })
    if m.code ~= 0 then
      t.rmtree(mnt)
      return pending(need.missing("a tmpfs mount", (m.stderr:gsub("\n", " "))))
    end
    local ok, e = pcall(function()
      -- run.started is made durable before the backends run, so its page of the log exists; the
      -- records that follow (60 secrets) need pages of their own, which the full disk refuses.
      local yaml, data = { "name: full", "secrets:" }, { "return {" }
      for i = 1, 60 do
        local ref = ("op://vault/item-with-a-longer-name-%02d/field"):format(i)
        yaml[#yaml + 1] = ("  SECRET_WITH_A_LONG_NAME_%02d: %s"):format(i, ref)
        data[#data + 1] = ("[%q] = %q,"):format(ref, i == 1 and "value-of-a-0123456789" or ("v" .. i .. "-xxxxxxxx"))
      end
      t.write(ws .. "/moat.yaml", table.concat(yaml, "\n") .. "\n")
      t.write(home .. "/data.lua", table.concat(data, "\n") .. "}\n")
      local p = assert(proc.spawn(argv("--", "touch", ws .. "/ran"),
        { env = env({ MOAT_HOME = mnt .. "/moat" }), stdout = "pipe", stderr = "pipe", timeout = 60000 }))
      -- The backend runs: the run has started (keys made, nothing of its log written yet).
      assert.is_true(P.wait_file(home .. "/op.log", p, 20000), "the backend never ran")
      local f = assert(io.open(mnt .. "/filler", "wb"))
      local chunk = string.rep("x", 4096)
      while f:write(chunk) and f:flush() do end
      f:close()
      local r = P.finish(p)
      assert.equal(74, r.code, r.stderr)
      assert.matches("audit log", r.stderr, 1, true)
      assert.matches("No space left on device", r.stderr, 1, true)
      assert.is_false(t.exists(ws .. "/ran"), "the command ran although its launch was not recorded")
      assert.is_nil(r.stderr:find("value-of-a-0123456789", 1, true))
    end)
    local u = t.exec({ "umount", mnt })
    if u.code ~= 0 then t.exec({ "umount", "-l", mnt }) end
    t.rmtree(mnt)
    assert(ok, e)
  end)

  it("values too large to mask: a named refusal (78) before the launch, audited, nothing ran", function()
    -- 12 values of 127 KiB (the most one environment string may hold) of bytes that every
    -- encoding expands: their patterns exceed what the masker takes.
    local lines, extra = { "name: big", "secrets:" }, {}
    local big = string.rep("\1", 127 * 1024)
    for i = 1, 12 do
      lines[#lines + 1] = ("  BIG%d: env://T_BIG%d"):format(i, i)
      extra["T_BIG" .. i] = big:sub(1, -3) .. ("%02d"):format(i)
    end
    t.write(ws .. "/moat.yaml", table.concat(lines, "\n") .. "\n")
    local r = P.finish(assert(proc.spawn(argv("--", "touch", ws .. "/ran"),
      { env = env(extra), stdout = "pipe", stderr = "pipe", timeout = 60000 })))
    assert.equal(78, r.code, r.stderr:sub(1, 2000))
    assert.matches("cannot be masked", r.stderr, 1, true)
    assert.matches("--no-mask", r.stderr, 1, true)
    assert.is_false(t.exists(ws .. "/ran"))
    local runs = {}
    for n in pairs(P.listing(home .. "/moat/runs")) do runs[#runs + 1] = n end
    assert.equal(1, #runs)
    local recs = t.records(t.slurp(home .. "/moat/runs/" .. runs[1] .. "/audit.jsonl"))
    for _, rec in ipairs(recs) do assert.are_not.equal("container.started", rec.type) end
    assert.equal("run.finished", recs[#recs].type)
    assert.equal("failed", recs[#recs].data.outcome)
    assert.equal(78, recs[#recs].data.exit)
    local v = t.exec({ _G.MOAT_BIN, "audit", "--last", "--verify" }, { env = { MOAT_HOME = home .. "/moat" } })
    assert.equal(0, v.code, v.stdout .. v.stderr)
  end)
end)
