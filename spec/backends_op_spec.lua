local t = require("support.moat")
local config = require("moat.config")
local plan_mod = require("moat.plan")
local secrets = require("moat.secrets")
local op = require("moat.backends.op")

local BIN = t.FAKE_BIN

local VALUES = {
  SPACES = "  leading and trailing  ",
  LINES = "line one\nline two\n",
  NEWLINES = "\n\n",
  CRLF = "windows\r\n",
  EQUALS = "a=b==c",
  QUOTES = [[it's "double" and 'single' and `back`]],
  UTF8 = "naïve ☃ 日本語",
  BRACES = "}} {{ op://v/item/a }} {{",
  EMPTY = "",
}
do
  local chunk = {}
  for i = 1, 100 * 1024 // 64 do
    chunk[#chunk + 1] = ("%063d\n"):format(i)
  end
  VALUES.BIG = table.concat(chunk)
end

local dir

-- Writes the fake op's data file (ref -> value | {error=...}); returns the env for the fake.
local function fake(data, extra)
  local lines = { "return {" }
  for ref, v in pairs(data) do
    if type(v) == "string" then
      lines[#lines + 1] = ("[%q] = %q,"):format(ref, v)
    else
      lines[#lines + 1] = ("[%q] = { error = %q },"):format(ref, v.error)
    end
  end
  lines[#lines + 1] = "}"
  local file = dir .. "/data.lua"
  t.write(file, table.concat(lines, "\n"))
  local env = require("moat.c.system").environ()
  env.PATH = BIN .. ":" .. env.PATH
  env.FAKE_OP_DATA = file
  env.FAKE_OP_LOG = dir .. "/op.log"
  os.remove(dir .. "/op.log")
  for k, v in pairs(extra or {}) do env[k] = v or nil end
  return env
end

-- Returns the fake op's log as { {event, id, args} }.
local function oplog()
  local out = {}
  local f = io.open(dir .. "/op.log")
  if not f then return out end
  for line in f:lines() do
    local ev, id, rest = line:match("^(%a+) (%d+) %d+ ?(.*)$")
    out[#out + 1] = { event = ev, id = id, args = rest }
  end
  f:close()
  return out
end

local function count(log, prefix)
  local n = 0
  for _, e in ipairs(log) do
    if e.event == "start" and e.args:sub(1, #prefix) == prefix then n = n + 1 end
  end
  return n
end

local function make_plan(map)
  local lines, names = { "secrets:" }, {}
  for name in pairs(map) do names[#names + 1] = name end
  table.sort(names)
  for _, name in ipairs(names) do lines[#lines + 1] = ("  %s: %q"):format(name, map[name]) end
  local cfg = assert(config.parse(table.concat(lines, "\n") .. "\n", "moat.yaml", "/work/space"))
  return plan_mod.build(cfg)
end

local function by_name(res)
  local out = {}
  for _, r in ipairs(res.records) do out[r.name] = r end
  return out
end

setup(function() dir = t.tmpdir() end)
teardown(function() t.rmtree(dir) end)

describe("moat.backends.op", function()
  describe("parse", function()
    it("accepts the documented reference forms", function()
      assert.same({ vault = "prod", item = "db", field = "password" }, op.parse("op://prod/db/password"))
      assert.same({ vault = "My Vault", item = "The item", section = "Admin", field = "one-time password",
        query = "attribute=otp" }, op.parse("op://My Vault/The item/Admin/one-time password?attribute=otp"))
      assert.equal("ssh-format=openssh", op.parse("op://v/ssh key/private key?ssh-format=openssh").query)
      assert.equal("ab3x9", op.parse("op://ab3x9/xyz/pass_word.2").vault)
    end)

    it("refuses malformed references with a reason", function()
      local cases = {
        ["op://v/i"] = "op://vault/item/field",
        ["op://v/i/s/f/x"] = "op://vault/item/field",
        ["op://v//f"] = "empty",
        ["op:///i/f"] = "empty",
        [" op://v/i/f"] = "whitespace",
        ["op://v/i/f\n"] = "whitespace",
        ["op://v/i\1/f"] = "control",
        ["-op://v/i/f"] = "'-'",
        ["op://v/i/f?"] = "empty query",
        ["op://v/i/f?attribute"] = "key=value",
        ["op://v/{{i}}/f"] = "use the ID",
        ["op://v/ i/f"] = "spaces at its ends",
        ["vault://v/i/f"] = "op://",
      }
      for ref, why in pairs(cases) do
        local p, err = op.parse(ref)
        assert.is_nil(p, ref)
        assert.matches(why, err, 1, true)
      end
    end)
  end)

  describe("resolve", function()
    it("fetches a batch byte-exact with one op inject", function()
      local data, map = {}, {}
      for name, v in pairs(VALUES) do
        data["op://v/item/" .. name:lower()] = v
        map[name] = "op://v/item/" .. name:lower()
      end
      map.SAME_AS_LINES = map.LINES
      local env = fake(data)
      local res = secrets.resolve(make_plan(map), { env = env })
      assert.is_true(res.ok, secrets.report(res.failures))
      for name, v in pairs(VALUES) do assert.equal(v, res.values[name], name) end
      assert.equal(VALUES.LINES, res.values.SAME_AS_LINES)
      local log = oplog()
      assert.equal(1, count(log, "op inject"))
      assert.equal(2, #log)
    end)

    it("falls back to parallel op read on a failed batch, naming exactly the failing references", function()
      local data = {
        ["op://v/item/lines"] = VALUES.LINES,
        ["op://v/item/spaces"] = VALUES.SPACES,
        ["op://v/item/big"] = VALUES.BIG,
        ["op://v/other/x"] = "other",
      }
      local env = fake(data, { FAKE_OP_LATENCY_MS = "200" })
      local res = secrets.resolve(make_plan({
        LINES = "op://v/item/lines", SPACES = "op://v/item/spaces", BIG = "op://v/item/big",
        NOITEM = "op://v/missing/password", NOVAULT = "op://nowhere/item/x", NOFIELD = "op://v/item/nofield",
      }), { env = env })
      assert.is_false(res.ok)
      assert.equal(VALUES.LINES, res.values.LINES)
      assert.equal(VALUES.SPACES, res.values.SPACES)
      assert.equal(VALUES.BIG, res.values.BIG)
      local r = by_name(res)
      assert.equal(3, #res.failures)
      assert.equal("not_found", r.NOITEM.kind)
      assert.equal("item 'missing' not found in vault 'v'", r.NOITEM.reason)
      assert.equal("check the item name with `op item get 'missing' --vault 'v'` (or `op item list --vault 'v'`)",
        r.NOITEM.fix)
      assert.equal("not_found", r.NOVAULT.kind)
      assert.equal("vault 'nowhere' not found or not accessible", r.NOVAULT.reason)
      assert.matches("op vault list", r.NOVAULT.fix, 1, true)
      assert.equal("not_found", r.NOFIELD.kind)
      assert.equal("field 'nofield' not found in item 'item'", r.NOFIELD.reason)
      assert.matches("op item get 'item' --vault 'v'", r.NOFIELD.fix, 1, true)
      local log = oplog()
      assert.equal(1, count(log, "op inject"))
      assert.equal(6, count(log, "op read --no-newline op://"))
      -- the reads overlapped: a second one started before the first one ended
      local first_read, started, overlapped = nil, 0, false
      for _, e in ipairs(log) do
        if e.event == "start" and e.args:match("^op read") then
          started = started + 1
          first_read = first_read or e.id
        elseif e.event == "end" and e.id == first_read then
          overlapped = started > 1
          break
        end
      end
      assert.is_true(overlapped)
    end)

    it("maps not signed in to an auth failure for every reference, without reading each", function()
      local env = fake({ ["op://v/i/a"] = "x" }, { FAKE_OP_SIGNED_OUT = "1" })
      local res = secrets.resolve(make_plan({ A = "op://v/i/a", B = "op://v/i/b" }), { env = env })
      assert.is_false(res.ok)
      for _, f in ipairs(res.failures) do
        assert.equal("auth", f.kind)
        assert.equal("op is not signed in to a 1Password account", f.reason)
        assert.matches("op signin", f.fix, 1, true)
        assert.matches("OP_SERVICE_ACCOUNT_TOKEN", f.fix, 1, true)
      end
      assert.equal(2, #res.failures)
      assert.equal(1, count(oplog(), "op "))
    end)

    it("recognizes the other wording of not signed in", function()
      local f = op.map_error("[ERROR] 2024/01/01 12:00:00 account is not signed in\n", { ref = "op://v/i/f",
        parsed = op.parse("op://v/i/f") }, 1, { sanitize = function(s) return s end })
      assert.equal("auth", f.kind)
    end)

    it("reports op missing from PATH with the install hint", function()
      local env = fake({})
      env.PATH = dir .. "/empty-bin"
      local res = secrets.resolve(make_plan({ A = "op://v/i/a", B = "op://v/i/b" }), { env = env })
      assert.equal(2, #res.failures)
      for _, f in ipairs(res.failures) do
        assert.equal("unavailable", f.kind)
        assert.matches("not installed", f.reason, 1, true)
        assert.matches("https://developer.1password.com/docs/cli/get-started/", f.fix, 1, true)
      end
    end)

    it("passes other errors through without any value", function()
      local env = fake({
        ["op://v/i/good"] = "good-value-123",
        ["op://v/i/odd"] = { error = "something odd happened near good-value-123" },
      }, { FAKE_OP_LEAK = "1" })
      local res = secrets.resolve(make_plan({ GOOD = "op://v/i/good", ODD = "op://v/i/odd" }), { env = env })
      assert.is_false(res.ok)
      local f = by_name(res).ODD
      assert.equal("backend_error", f.kind)
      assert.matches("op failed: something odd happened near", f.reason, 1, true)
      assert.is_nil(f.reason:find("good-value-123", 1, true))
      assert.matches("op read --no-newline 'op://v/i/odd'", f.fix, 1, true)
      assert.equal("good-value-123", res.values.GOOD)
    end)

    it("kills a hanging op at the timeout with one call", function()
      local env = fake({ ["op://v/i/a"] = "x" }, { FAKE_OP_HANG = "1" })
      local res = secrets.resolve(make_plan({ A = "op://v/i/a", B = "op://v/i/a" }), { env = env, timeout = 1 })
      assert.equal(2, #res.failures)
      assert.equal("timeout", res.failures[1].kind)
      assert.matches("op did not finish within 1 s", res.failures[1].reason, 1, true)
      assert.equal(1, count(oplog(), "op inject"))
    end)
  end)

  describe("check", function()
    local function check(env)
      local p = make_plan({ A = "op://v/i/a" })
      return secrets.check(p, { env = env })[1]
    end

    it("is usable when op runs and is signed in", function()
      local c = check(fake({}))
      assert.is_true(c.ok)
      assert.equal("op", c.backend)
      assert.equal(1, count(oplog(), "op --version"))
    end)

    it("says how to sign in or install", function()
      local c = check(fake({}, { FAKE_OP_SIGNED_OUT = "1" }))
      assert.is_false(c.ok)
      assert.matches("not signed in", c.reason, 1, true)
      assert.matches("op signin", c.fix, 1, true)
      local env = fake({})
      env.PATH = dir .. "/empty-bin"
      c = check(env)
      assert.is_false(c.ok)
      assert.matches("not installed", c.reason, 1, true)
      assert.matches("developer.1password.com", c.fix, 1, true)
    end)
  end)

  describe("the fake op", function()
    it("appends a newline to op read unless --no-newline", function()
      local env = fake({ ["op://v/i/f"] = "val" })
      local list = {}
      for k, v in pairs(env) do list[k] = v end
      local r = t.exec({ BIN .. "/op", "read", "op://v/i/f" }, { env = list })
      assert.equal("val\n", r.stdout)
      r = t.exec({ BIN .. "/op", "read", "--no-newline", "op://v/i/f" }, { env = list })
      assert.equal("val", r.stdout)
      r = t.exec({ BIN .. "/op", "inject", "-i", env.FAKE_OP_DATA }, { env = list })
      assert.equal(0, r.code)
      r = t.exec({ BIN .. "/op", "read", "op://v/x/f" }, { env = list })
      assert.equal(1, r.code)
      assert.matches('^%[ERROR%] %d+/%d+/%d+ %d+:%d+:%d+ "x" isn\'t an item in the "v" vault%.', r.stderr)
    end)
  end)
end)
