-- `moat secrets check` end to end: the moat binary, the fake op first on PATH, user backends
-- from a temporary MOAT_LUA_PATH.
local t = require("support.moat")
local json = require("moat.c.json")

local BIN = t.FAKE_BIN
local FIX = MOAT_ROOT .. "/spec/fixtures/secrets"
-- How long the held backend's grandchild sleeps: unique to this process, so that the same test
-- running in another suite at the same time cannot pass for a survivor of ours.
local HELD_S = ("49.%05d"):format(require("moat.c.system").getpid() % 100000)

local BACKENDS = {
  -- op under a second scheme, one `op read` per reference: a second backend that uses the fake op
  op2 = [[
local M = { scheme = "op2", description = "test: op read under another scheme" }
function M.parse(ref) return require("moat.backends.op").parse((ref:gsub("^op2://", "op://"))) end
function M.resolve(requests, ctx)
  local tasks = {}
  for _, req in ipairs(requests) do
    tasks[#tasks + 1] = function()
      local r = ctx.run({ "op", "read", "--no-newline", (req.ref:gsub("^op2://", "op://")) })
      if r and r.code == 0 then ctx.ok(req, r.stdout) else ctx.fail(req, { kind = "x", reason = "op2 failed" }) end
    end
  end
  ctx.gather(tasks)
end
return M
]],
  hang = [[
return { scheme = "hang", resolve = function(requests, ctx) ctx.run({ "sleep", "30" }) end }
]],
  flood = [[
return { scheme = "flood", resolve = function(requests, ctx) ctx.run({ "yes", "flooding" }) end }
]],
  held = [[
return { scheme = "held", resolve = function(requests, ctx) ctx.run({ "FIX/grandchild", "HELD_S", "wait" }) end }
]],
  -- resolves leaky://ok/VALUE to VALUE; fails leaky://fail quoting a CLI that echoed those values
  leaky = [[
local M = { scheme = "leaky" }
function M.resolve(requests, ctx)
  local got = {}
  for _, req in ipairs(requests) do
    local v = req.ref:match("^leaky://ok/(.*)$")
    if v then ctx.ok(req, v); got[#got + 1] = v end
  end
  for _, req in ipairs(requests) do
    if req.ref == "leaky://fail" then
      local r = ctx.run({ "FIX/leak" }, { stdin = table.concat(got, " ") })
      ctx.fail(req, { kind = "backend_error", reason = "cli said: " .. r.stderr })
    end
  end
end
return M
]],
}

local root, home, luadir

local function env(extra)
  local e = {
    HOME = home, MOAT_HOME = home .. "/.moat", XDG_CONFIG_HOME = home .. "/.config",
    MOAT_SITE_DIR = home .. "/site", MOAT_LUA_PATH = luadir, PATH = BIN .. ":" .. os.getenv("PATH"),
    FAKE_OP_DATA = root .. "/data.lua", FAKE_OP_LOG = root .. "/op.log", NO_COLOR = "1",
  }
  for k, v in pairs(extra or {}) do e[k] = v end
  return e
end

local function workspace(yaml)
  local ws = t.tmpdir()
  t.write(ws .. "/moat.yaml", yaml)
  return ws
end

local function oplog()
  local out = {}
  local f = io.open(root .. "/op.log")
  if not f then return out end
  for line in f:lines() do
    local ev, id, args = line:match("^(%a+) (%d+) %d+ ?(.*)$")
    out[#out + 1] = { event = ev, id = id, args = args }
  end
  f:close()
  return out
end

local function assert_no_values(values, ...)
  for _, text in ipairs({ ... }) do
    for _, v in ipairs(values) do
      assert.is_nil(text:find(v, 1, true), "a value leaked: " .. v)
    end
  end
end

local DATA = {
  ["op://v/app/db"] = "db-pass word\nline2 ",
  ["op://v/app/api"] = "api-key-0123456789",
  ["op://v/app/second"] = "second-value-xyz",
}

setup(function()
  root = t.tmpdir()
  home = root .. "/home"
  require("lfs").mkdir(home)
  luadir = root .. "/lua"
  for name, src in pairs(BACKENDS) do
    t.write(luadir .. "/moat/backends/" .. name .. ".lua", (src:gsub("FIX", FIX):gsub("HELD_S", HELD_S)))
  end
  local lines = { "return {" }
  for k, v in pairs(DATA) do lines[#lines + 1] = ("[%q] = %q,"):format(k, v) end
  t.write(root .. "/data.lua", table.concat(lines, "\n") .. "}\n")
end)

teardown(function() t.rmtree(root) end)

before_each(function() os.remove(root .. "/op.log") end)

local VALUES = { "db-pass word", "api-key-0123456789", "second-value-xyz", "plain-value-abc" }

describe("moat secrets check", function()
  it("validates and asks each backend in use, printing no value", function()
    local ws = workspace([[
secrets:
  DB: op://v/app/db
  HOSTVAR: env://SOME_HOST_VAR
  PLAIN: plain-value-abc
]])
    local code, out, err = t.moat({ "secrets", "check", ws }, { env = env() })
    assert.equal(0, code, err)
    -- Columns line up: status, name and backend padded to the widest.
    assert.matches("valid   DB       op     op://v/app/db\n", out, 1, true)
    assert.matches("valid   PLAIN    plain  (plain value)\n", out, 1, true)
    assert_no_values(VALUES, out, err)
    local log = oplog()
    assert.equal("op --version", log[1].args)
    for _, e in ipairs(log) do assert.is_nil(e.args:find("inject", 1, true)) end
    t.rmtree(ws)
  end)

  it("exits 69 naming the fix when a backend is not usable", function()
    local ws = workspace("secrets:\n  DB: op://v/app/db\n")
    local code, out, err = t.moat({ "secrets", "check", ws }, { env = env({ FAKE_OP_SIGNED_OUT = "1" }) })
    assert.equal(69, code)
    assert.matches("backend op is not usable: op is not signed in", out, 1, true)
    assert.matches("OP_SERVICE_ACCOUNT_TOKEN", out, 1, true)
    assert.matches("1 backend is not usable", err, 1, true)
    t.rmtree(ws)
  end)

  it("resolves everything with --resolve: ok per name with milliseconds, one op inject", function()
    local ws = workspace([[
secrets:
  DB: op://v/app/db
  API: op://v/app/api
  API_AGAIN: op://v/app/api
  PLAIN: plain-value-abc
]])
    local code, out, err = t.moat({ "secrets", "check", "--resolve", ws, "--secret", "SECOND=op://v/app/second" },
      { env = env() })
    assert.equal(0, code, err)
    for _, name in ipairs({ "DB", "API", "API_AGAIN", "SECOND" }) do
      assert.matches("ok      " .. name .. (" "):rep(11 - #name) .. "op     %d+ ms\n", out)
    end
    assert.matches("ok      PLAIN      plain  0 ms", out, 1, true)
    assert_no_values(VALUES, out, err)
    local log = oplog()
    assert.equal(2, #log)
    assert.equal("op inject", log[1].args)
    t.rmtree(ws)
  end)

  it("audits --resolve like a run: a record per secret, no container records, signed", function()
    local ws = workspace("secrets:\n  DB: op://v/app/db\n  BAD: op://v/nope/x\n")
    local code = t.moat({ "secrets", "check", "--resolve", ws }, { env = env() })
    assert.equal(69, code)
    local runs = {}
    for f in require("lfs").dir(home .. "/.moat/runs") do
      if f:sub(1, 1) ~= "." then runs[#runs + 1] = f end
    end
    table.sort(runs)
    local types = {}
    local text = t.slurp(home .. "/.moat/runs/" .. runs[#runs] .. "/audit.jsonl")
    for _, r in ipairs(t.records(text)) do types[#types + 1] = r.type end
    assert.same({ "run.started", "secret.resolved", "secret.failed", "run.finished" }, types)
    assert_no_values(VALUES, text, "")
    code = t.moat({ "audit", "--last", "--verify" }, { env = env() })
    assert.equal(0, code)
    t.rmtree(ws)
  end)

  it("prints records as JSON, never a value", function()
    local ws = workspace("secrets:\n  DB: op://v/app/db\n  BAD: op://v/nope/x\n")
    local code, out, err = t.moat({ "secrets", "check", ws, "--resolve", "--json" }, { env = env() })
    assert.equal(69, code)
    local list = assert(json.decode(out))
    assert.equal(2, #list)
    assert.same({ "DB", "op://v/app/db", "op", true }, { list[1].name, list[1].ref, list[1].backend, list[1].ok })
    assert.equal("number", type(list[1].ms))
    assert.same({ "BAD", false, "not_found" }, { list[2].name, list[2].ok, list[2].kind })
    assert.matches("item 'nope' not found in vault 'v'", list[2].reason, 1, true)
    assert.matches("1 of 2 secrets could not be resolved", err, 1, true)
    assert_no_values(VALUES, out, err)
    t.rmtree(ws)
  end)

  it("reports every failure with reason and fix and exits 69", function()
    local ws = workspace([[
secrets:
  DB: op://v/app/db
  GONE: op://v/app/gone
  NOVAULT: op://elsewhere/app/db
  UNSET: env://MOAT_TEST_SURELY_UNSET
]])
    local code, out, err = t.moat({ "secrets", "check", ws, "--resolve" }, { env = env({ FAKE_OP_LEAK = "1" }) })
    assert.equal(69, code)
    assert.matches("ok      DB       op", out, 1, true)
    assert.matches("failed  GONE     op   %d+ ms\n        op://v/app/gone: field 'gone' not found in item 'app'", out)
    assert.matches("failed  NOVAULT  op", out, 1, true)
    assert.matches("vault 'elsewhere' not found or not accessible", out, 1, true)
    assert.matches("fix: list the vaults you can use with `op vault list`", out, 1, true)
    assert.matches("fix: export MOAT_TEST_SURELY_UNSET=... before moat run", out, 1, true)
    assert.matches("3 of 4 secrets could not be resolved", err, 1, true)
    assert_no_values(VALUES, out, err)
    t.rmtree(ws)
  end)

  it("runs two backends at the same time (overlapping calls in the fake op's log)", function()
    local ws = workspace("secrets:\n  DB: op://v/app/db\n  API: op2://v/app/api\n  SECOND: op2://v/app/second\n")
    local code, out, err = t.moat({ "secrets", "check", ws, "--resolve" },
      { env = env({ FAKE_OP_LATENCY_MS = "300" }) })
    assert.equal(0, code, err)
    assert.matches("ok      API     op2", out, 1, true)
    local log = oplog()
    assert.equal(6, #log)
    -- all three calls (one inject from op, two reads from op2) started before any ended
    assert.same({ "start", "start", "start" }, { log[1].event, log[2].event, log[3].event })
    local kinds = {}
    for i = 1, 3 do kinds[#kinds + 1] = log[i].args:match("^op (%a+)") end
    table.sort(kinds)
    assert.same({ "inject", "read", "read" }, kinds)
    assert_no_values(VALUES, out, err)
    t.rmtree(ws)
  end)

  it("limits live backend processes with --jobs", function()
    local ws = workspace("secrets:\n  DB: op://v/app/db\n  API: op2://v/app/api\n  SECOND: op2://v/app/second\n")
    local code, _, err = t.moat({ "secrets", "check", ws, "--resolve", "--jobs", "1" },
      { env = env({ FAKE_OP_LATENCY_MS = "100" }) })
    assert.equal(0, code, err)
    local log = oplog()
    for i = 1, #log, 2 do
      assert.equal("start", log[i].event)
      assert.same({ "end", log[i].id }, { log[i + 1].event, log[i + 1].id })
    end
    t.rmtree(ws)
  end)

  it("kills hanging, stuck and flooding backends, naming variable and backend, exit 69", function()
    local ws = workspace("secrets:\n  SLOW: hang://x\n  STUCK: held://x\n  LOUD: flood://x\n  DB: op://v/app/db\n")
    local t0 = os.time()
    local code, out = t.moat({ "secrets", "check", ws, "--resolve", "--timeout", "1" }, { env = env() })
    assert.is_true(os.time() - t0 < 30)
    assert.equal(69, code)
    assert.matches("failed  SLOW   hang", out, 1, true)
    assert.matches("sleep did not finish within 1 s and was killed [timeout]", out, 1, true)
    assert.matches("failed  STUCK  held ", out, 1, true)
    assert.matches("grandchild did not finish within 1 s", out, 1, true)
    assert.matches("failed  LOUD   flood", out, 1, true)
    assert.matches("yes printed more than 16 MiB and was killed [output_limit]", out, 1, true)
    assert.matches("ok      DB     op", out, 1, true)
    -- Killed, the grandchild may take a moment to be gone on a busy machine: look for up to 5 s.
    local survived = true
    for _ = 1, 50 do
      survived = t.exec({ "pgrep", "-f", "^sleep " .. HELD_S .. "$" }).code == 0
      if not survived then break end
      t.exec({ "sleep", "0.1" })
    end
    assert.is_false(survived, "the held backend's grandchild (sleep " .. HELD_S .. ") survived")
    t.rmtree(ws)
  end)

  it("never shows a value a failing backend echoes on stderr", function()
    local ws = workspace(
      "secrets:\n  A: leaky://ok/echoed-value-one\n  B: leaky://ok/echoed-value-two\n  C: leaky://fail\n")
    local code, out, err = t.moat({ "secrets", "check", ws, "--resolve", "-v", "-v" }, { env = env() })
    assert.equal(69, code)
    assert.matches("failed  C  leaky", out, 1, true)
    assert.matches("cli said: error: cannot fetch; the value was <concealed by moat> <concealed by moat>", out, 1, true)
    assert_no_values({ "echoed-value-one", "echoed-value-two" }, out, err)
    t.rmtree(ws)
  end)

  it("refuses an unknown scheme with exit 78 before contacting any backend", function()
    local ws = workspace("secrets:\n  DB: op://v/app/db\n  URL: postgres://u:pw-123@h/db\n")
    local code, out, err = t.moat({ "secrets", "check", ws, "--resolve" }, { env = env() })
    assert.equal(78, code)
    assert.equal("", out)
    assert.matches("moat.yaml:3:8: secret URL: unknown scheme 'postgres://'", err, 1, true)
    assert.matches("known backends: ", err, 1, true)
    assert.matches("env://VAR", err, 1, true)
    assert.is_nil(err:find("pw-123", 1, true))
    assert.same({}, oplog())
    t.rmtree(ws)
  end)

  it("lets a user backend replace a built-in one", function()
    local user = home .. "/.config/moat/lua/moat/backends/env.lua"
    t.write(user, [[
return { scheme = "env", resolve = function(requests, ctx)
  for _, r in ipairs(requests) do ctx.fail(r, { kind = "custom", reason = "the user's env backend says no" }) end
end }
]])
    local ws = workspace("secrets:\n  X: env://HOME\n")
    local code, out = t.moat({ "secrets", "check", ws, "--resolve" }, { env = env() })
    os.remove(user)
    assert.equal(69, code)
    assert.matches("the user's env backend says no [custom]", out, 1, true)
    t.rmtree(ws)
  end)

  it("names the open-files limit and --jobs when backend processes cannot be started", function()
    local args = { "sh", "-c", 'ulimit -n 40; exec "$0" "$@"', MOAT_BIN, "secrets", "check", "--resolve",
      "--jobs", "100" }
    for i = 1, 60 do
      args[#args + 1] = "--secret"
      args[#args + 1] = ("S%d=op://v/app/missing-%d"):format(i, i)
    end
    local ws = workspace("name: limits\n")
    local r = t.exec(args, { env = env(), cwd = ws })
    t.rmtree(ws)
    assert.equal(69, r.code, r.stderr)
    assert.matches("too many open files (the limit is 40", r.stdout, 1, true)
    assert.matches("lower --jobs (now 100)", r.stdout, 1, true)
    assert.is_nil(r.stdout:find("install the 1Password CLI", 1, true))
  end)

  it("refuses bad usage with exit 64", function()
    local code, _, err = t.moat({ "secrets" }, { env = env() })
    assert.equal(64, code)
    assert.matches("missing subcommand 'check'", err, 1, true)
    code, _, err = t.moat({ "secrets", "check", "--jobs", "0" }, { env = env() })
    assert.equal(64, code)
    assert.matches("--jobs", err, 1, true)
    code, _, err = t.moat({ "secrets", "check", "--timeout", "soon" }, { env = env() })
    assert.equal(64, code)
    assert.matches("--timeout", err, 1, true)
    code = t.moat({ "secrets", "check", "--secret", "NOEQUALS" }, { env = env(), cwd = root })
    assert.equal(64, code)
  end)
end)
