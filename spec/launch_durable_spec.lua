-- What a run makes durable, and when (DESIGN 7, SECURITY 13, 21): every fsync moat makes is
-- logged by an LD_PRELOAD shim, and the command marks its start in the same log (with the
-- number of start lines runs.jsonl holds by then), so the spec sees the order. Before the
-- launch: one durable batch (run.started with container.started when no backend is asked)
-- and the log's place; the run's start line is written into runs.jsonl before that batch and
-- made durable with the finish line. At the end: the last records with the signature line in
-- one write, then runs.jsonl. The whole list is the fsync budget of a run (issue 15): a
-- change that adds one shows here.
local t = require("support.moat")

describe("the durable writes of a run", function()
  local ws, home, shim, log

  setup(function()
    shim = os.tmpname()
    local r = t.exec({ "cc", "-shared", "-fPIC", "-o", shim, MOAT_ROOT .. "/spec/fixtures/audit/failshim.c", "-ldl" })
    assert.equal(0, r.code, r.stderr)
  end)
  teardown(function() os.remove(shim) end)

  before_each(function()
    ws, home = t.tmpdir(), t.tmpdir()
    log = home .. "/fsync.log"
  end)

  after_each(function()
    t.rmtree(ws)
    t.rmtree(home)
  end)

  -- Runs `moat run` on the workspace with the shim; returns the log's lines, the run's
  -- directory and moat's result. The command appends "LAUNCH" to the log.
  local function run(yaml, extra)
    t.write(ws .. "/moat.yaml", yaml)
    -- Under ASan the sanitizer's runtime must come first in the preload list.
    local asan = os.getenv("MOAT_ASAN_RUNTIME")
    local env = { MOAT_HOME = home .. "/moat", MOAT_RUNTIME = false, MOAT_NETWORK = false,
      MOAT_SITE_DIR = home .. "/site", XDG_CONFIG_HOME = home .. "/xdg", PATH = t.fake_path(),
      LD_PRELOAD = (asan and asan ~= "" and (asan .. " ") or "") .. shim, MOAT_TEST_FSYNC_LOG = log }
    for k, v in pairs(extra or {}) do env[k] = v end
    local runs = home .. "/moat/runs.jsonl"
    local argv = { _G.MOAT_BIN, "run", "--trust", ws, "--runtime", "host", "--no-mask", "--",
      "sh", "-c", "echo LAUNCH $(grep -c '\"event\":\"start\"' '" .. runs .. "') >> '" .. log .. "'" }
    -- The first run also makes $MOAT_HOME, its keys and the trust record; the second is a
    -- run like any other.
    local r = t.exec(argv, { env = env })
    assert.equal(0, r.code, r.stderr)
    os.remove(log)
    local before = {}
    for name in require("lfs").dir(home .. "/moat/runs") do before[name] = true end
    r = t.exec(argv, { env = env })
    local lines = {}
    for l in (t.exists(log) and t.slurp(log) or ""):gmatch("[^\n]+") do lines[#lines + 1] = l end
    local rundirs = home .. "/moat/runs"
    local id
    for name in require("lfs").dir(rundirs) do
      if not before[name] then id = name end
    end
    return lines, rundirs .. "/" .. id, r
  end

  -- Replaces the paths in `lines` by short names.
  local function names(lines, rundir)
    local root = home .. "/moat"
    local out = {}
    for i, l in ipairs(lines) do
      if l:match("^LAUNCH") then out[i] = l
      elseif l == root .. "/runs" then out[i] = "runs/"
      elseif l == root .. "/runs.jsonl" then out[i] = "runs.jsonl"
      elseif l == rundir then out[i] = "RUN/"
      elseif l == rundir .. "/audit.jsonl" then out[i] = "RUN/audit.jsonl"
      else out[i] = l end
    end
    return out
  end

  it("asks no backend: one durable batch before the launch, then the finish", function()
    local lines, rundir, r = run("name: durable\n")
    assert.equal(0, r.code, r.stderr)
    assert.same({
      "RUN/audit.jsonl", "RUN/", "runs/",     -- run.started and container.started, one batch; its place
      "LAUNCH 2",                             -- runs.jsonl has this run's start line (and the first run's)
      "RUN/audit.jsonl",                      -- container.exited, run.finished and the signature line
      "runs.jsonl",                           -- the finish line, and with it the start line
    }, names(lines, rundir))
  end)

  it("asks a backend: run.started is durable before it runs, the rest before the launch", function()
    t.write(home .. "/data.lua", 'return { ["op://vault/item/field"] = "value-0123456789" }\n')
    local lines, rundir, r = run("name: durable\nsecrets:\n  TOKEN: op://vault/item/field\n", {
      FAKE_OP_DATA = home .. "/data.lua" })
    assert.equal(0, r.code, r.stderr)
    assert.same({ "RUN/audit.jsonl", "RUN/", "runs/", "RUN/audit.jsonl", "LAUNCH 2", "RUN/audit.jsonl", "runs.jsonl" },
      names(lines, rundir))
  end)
end)
