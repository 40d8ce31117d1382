local t = require("support.moat")
local config = require("moat.config")
local plan_mod = require("moat.plan")
local secrets = require("moat.secrets")

local FIX = MOAT_ROOT .. "/spec/fixtures/secrets"

-- A test backend driven by a shared state table: each request's key (tmem://KEY) names an action.
local BACKEND = [[
local M = { scheme = "%s", description = "test backend %s" }
function M.parse(ref)
  local key = ref:match("^%s://(.+)$")
  if not key then return nil, "must be %s://KEY" end
  return { key = key }
end
function M.resolve(requests, ctx)
  local st = require("tmem_state")
  st.calls = (st.calls or 0) + 1
  st.seen = st.seen or {}
  st.seen["%s"] = requests
  for _, req in ipairs(requests) do
    local a = st.actions[req.parsed.key]
    if type(a) == "string" then
      ctx.ok(req, a)
    elseif a == nil or a.skip then
    elseif a.raise then
      error(a.raise)
    elseif a.fail then
      ctx.fail(req, a.fail)
    elseif a.run then
      local r, msg = ctx.run(a.run, { stdin = a.stdin, timeout = a.timeout })
      if not r then
        ctx.fail(req, { kind = "unavailable", reason = msg })
      elseif ctx.run_failure(r, a.run[1]) then
        ctx.fail(req, ctx.run_failure(r, a.run[1]))
      elseif r.code == 0 then
        ctx.ok(req, r.stdout)
      else
        ctx.fail(req, { kind = "backend_error", reason = "cli said: " .. r.stderr })
      end
    end
  end
end
return M
]]

local dir, state

-- Plans as moat.session holds them: the plan, with its plain values beside it.
local plain_of = setmetatable({}, { __mode = "k" })

local function make_plan(lines, extra)
  local cfg = assert(config.parse("secrets:\n" .. lines, "moat.yaml", "/work/space"))
  local p, plain = assert(plan_mod.build(cfg, extra))
  plain_of[p] = plain
  return p
end

local function resolve(p, opts)
  opts = opts or {}
  opts.plain = plain_of[p]
  return secrets.resolve(p, opts)
end

local function env_with(extra)
  local env = require("moat.c.system").environ()
  for k, v in pairs(extra or {}) do env[k] = v end
  return env
end

setup(function()
  dir = t.tmpdir()
  for _, scheme in ipairs({ "tmem", "tmemb" }) do
    t.write(dir .. "/moat/backends/" .. scheme .. ".lua", BACKEND:gsub("%%s", scheme))
  end
  package.path = dir .. "/?.lua;" .. package.path
end)

teardown(function()
  t.rmtree(dir)
end)

before_each(function()
  state = { actions = {} }
  package.loaded["tmem_state"] = state
end)

describe("moat.secrets", function()
  it("resolves, dedupes identical references and keeps records free of values", function()
    state.actions = { a = "value-a", b = " spaced =\"quoted\"\n\nlines\n" }
    local p = make_plan("  A: tmem://a\n  B: tmem://b\n  A2: tmem://a\n  P: plain-value-here\n")
    local res = resolve(p)
    assert.is_true(res.ok)
    assert.same({ A = "value-a", B = " spaced =\"quoted\"\n\nlines\n", A2 = "value-a", P = "plain-value-here" },
      res.values)
    assert.equal(1, state.calls)
    assert.equal(2, #state.seen.tmem)
    assert.same({ "A", "A2" }, state.seen.tmem[1].names)
    assert.equal(4, #res.records)
    assert.same({ "A", "B", "A2", "P" }, { res.records[1].name, res.records[2].name, res.records[3].name,
      res.records[4].name })
    assert.equal("plain", res.records[4].backend)
    local blob = require("moat.c.json").encode(res.records)
    for _, v in pairs(res.values) do assert.is_nil(blob:find(v, 1, true)) end
    assert.same({}, res.failures)
  end)

  it("refuses values with NUL or over 128 KiB by name, accepts exactly 128 KiB", function()
    local max = string.rep("x", 128 * 1024)
    state.actions = { nul = "a\0b", big = max .. "y", max = max }
    local p = make_plan("  NUL: tmem://nul\n  BIG: tmem://big\n  MAX: tmem://max\n  PLAINBIG: " .. max .. "z\n")
    local res = resolve(p)
    assert.is_false(res.ok)
    assert.equal(max, res.values.MAX)
    assert.is_nil(res.values.NUL)
    assert.is_nil(res.values.BIG)
    assert.equal(3, #res.failures)
    local by = {}
    for _, f in ipairs(res.failures) do by[f.name] = f end
    assert.equal("invalid", by.NUL.kind)
    assert.matches("NUL", by.NUL.reason, 1, true)
    assert.equal("invalid", by.BIG.kind)
    assert.matches("over the 128 KiB limit", by.BIG.reason, 1, true)
    assert.equal("invalid", by.PLAINBIG.kind)
  end)

  it("collects every failure: reported, no value returned, raised errors", function()
    state.actions = {
      good = "fine-value",
      nf = { fail = { kind = "not_found", reason = "no such thing", fix = "create it" } },
      silent = { skip = true },
    }
    local p = make_plan("  G: tmem://good\n  NF: tmem://nf\n  S: tmem://silent\n  R: tmemb://boom\n  R2: tmemb://ok\n")
    state.actions.boom = { raise = "exploded fine-value" }
    state.actions.ok = "never-reached"
    local res = resolve(p)
    assert.is_false(res.ok)
    assert.equal("fine-value", res.values.G)
    local by = {}
    for _, f in ipairs(res.failures) do by[f.name] = f end
    assert.equal(4, #res.failures)
    assert.same({ "not_found", "no such thing", "create it" }, { by.NF.kind, by.NF.reason, by.NF.fix })
    assert.equal("no_value", by.S.kind)
    assert.matches("returned no value", by.S.reason, 1, true)
    assert.equal("backend_error", by.R.kind)
    assert.matches("exploded", by.R.reason, 1, true)
    -- the error text quoted a value another backend returned: it is hidden
    assert.is_nil(by.R.reason:find("fine-value", 1, true))
    assert.equal("backend_error", by.R2.kind)
    local text = secrets.report(res.failures)
    assert.matches("4 secrets could not be resolved", text, 1, true)
    assert.matches("NF (tmem://nf, backend tmem): no such thing [not_found]", text, 1, true)
    assert.matches("fix: create it", text, 1, true)
    assert.is_nil(text:find("fine-value", 1, true))
  end)

  it("never lets a value a failing CLI echoes on stderr through", function()
    state.actions = {
      good = "a-resolved-value",
      -- the CLI is fed the value on stdin and echoes it on stderr while failing
      leaky = { run = { FIX .. "/leak" }, stdin = "a-resolved-value" },
    }
    local p = make_plan("  GOOD: tmem://good\n  LEAKY: tmem://leaky\n  PLAIN: plain-secret-xyz\n")
    state.actions.leaky.stdin = "a-resolved-value and plain-secret-xyz"
    local res = resolve(p, { env = env_with() })
    assert.is_false(res.ok)
    local f = res.failures[1]
    assert.equal("LEAKY", f.name)
    assert.matches("cli said: error: cannot fetch", f.reason, 1, true)
    assert.is_nil(f.reason:find("a-resolved-value", 1, true))
    assert.is_nil(f.reason:find("plain-secret-xyz", 1, true))
    assert.matches(require("moat.scrub").PLACEHOLDER, f.reason, 1, true)
  end)

  -- Durations unique to this process, so another suite running at the same time cannot be
  -- mistaken for a survivor of ours.
  local uniq = ("%d"):format(require("moat.c.system").getpid() % 100000)
  local HANG_S, HELD_S = "47." .. uniq, "48." .. uniq

  -- A killed process may take a moment to be gone on a busy machine: look for up to 5 s.
  local function running(pattern)
    for _ = 1, 50 do
      if t.exec({ "pgrep", "-f", pattern }).code ~= 0 then return false end
      t.exec({ "sleep", "0.1" })
    end
    return true
  end

  it("kills a hanging backend program and its process group at the timeout, naming it", function()
    state.actions = {
      hang = { run = { "sleep", "30" } },
      held = { run = { FIX .. "/grandchild", HANG_S, "wait" } },
    }
    local p = make_plan("  HANG: tmem://hang\n  HELD: tmemb://held\n")
    local t0 = os.time()
    local res = resolve(p, { timeout = 1, env = env_with() })
    assert.is_true(os.time() - t0 < 20)
    assert.is_false(res.ok)
    assert.equal(2, #res.failures)
    for _, f in ipairs(res.failures) do
      assert.equal("timeout", f.kind)
      assert.matches("did not finish within 1 s and was killed", f.reason, 1, true)
      assert.matches("--timeout", f.fix, 1, true)
    end
    assert.is_false(running("sleep " .. HANG_S))
  end)

  it("does not wait for a grandchild that holds stdout after the program exits; kills it", function()
    state.actions = { held = { run = { FIX .. "/grandchild", HELD_S } } }
    local t0 = os.time()
    local res = resolve(make_plan("  HELD: tmem://held\n"), { timeout = 30, env = env_with() })
    assert.is_true(os.time() - t0 < 20)
    assert.is_true(res.ok)
    assert.equal("started\n", res.values.HELD)
    assert.is_false(running("sleep " .. HELD_S))
  end)

  it("kills a flooding backend program at the output cap", function()
    state.actions = { flood = { run = { "yes", "flood" } } }
    local res = resolve(make_plan("  FLOOD: tmem://flood\n"), { env = env_with() })
    assert.is_false(res.ok)
    assert.equal("output_limit", res.failures[1].kind)
    assert.matches("printed more than 16 MiB", res.failures[1].reason, 1, true)
  end)

  it("reports a program that is not installed", function()
    state.actions = { missing = { run = { "moat-no-such-program-here" } } }
    local res = resolve(make_plan("  M: tmem://missing\n"), { env = env_with() })
    assert.is_false(res.ok)
    assert.matches("No such file", res.failures[1].reason, 1, true)
  end)

  it("runs backends concurrently, and one at a time with jobs = 1", function()
    local log = os.tmpname()
    state.actions = {
      one = { run = { FIX .. "/stamp", "one" } },
      two = { run = { FIX .. "/stamp", "two" } },
    }
    local p = make_plan("  ONE: tmem://one\n  TWO: tmemb://two\n")
    local function lines()
      local f = assert(io.open(log))
      local out = {}
      for l in f:lines() do out[#out + 1] = l end
      f:close()
      os.remove(log)
      return out
    end
    local res = resolve(p, { env = env_with({ STAMP_LOG = log }) })
    assert.is_true(res.ok)
    assert.same({ ONE = "one", TWO = "two" }, res.values)
    local l = lines()
    assert.equal(4, #l)
    -- both started before either ended
    assert.matches("^start", l[1])
    assert.matches("^start", l[2])
    res = resolve(p, { jobs = 1, env = env_with({ STAMP_LOG = log }) })
    assert.is_true(res.ok)
    l = lines()
    assert.same({ "start", "end", "start", "end" },
      { l[1]:match("%a+"), l[2]:match("%a+"), l[3]:match("%a+"), l[4]:match("%a+") })
  end)

  it("finds backends on the search path, a user directory first", function()
    local registry = require("moat.registry")
    local mod, err, why = registry.get("nope")
    assert.is_nil(mod)
    assert.matches("no backend for scheme 'nope'", err, 1, true)
    assert.equal("missing", why)
    assert.is_nil((registry.get("../x")))
    local by = {}
    for _, b in ipairs(registry.files()) do
      if b.active then by[b.scheme] = b end
    end
    assert.matches("/lua/moat/backends/op%.lua$", by.op.file)
    assert.equal(dir .. "/moat/backends/tmem.lua", by.tmem.file)
    assert.equal("test backend tmem", assert(registry.get("tmem")).description)
    assert.truthy(by.env)
  end)
end)
