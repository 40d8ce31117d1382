-- The op backend's error side: classification of op's messages by stable fragments (several
-- op versions' wordings per class), backend text that never carries a value (SECURITY 22:
-- recognised messages become fixed text, the rest is sanitized with quoted strings elided),
-- and a value printed by an op whose setsid grandchild holds stdout counting as delivered.
local t = require("support.moat")
local op = require("moat.backends.op")
local sys = require("moat.c.system")

local BIN = t.FAKE_BIN

local function req(ref) return { name = "X", ref = ref, parsed = assert(op.parse(ref)) } end
local function stderr(msg) return ("[ERROR] 2024/05/01 10:11:12 %s\n"):format(msg) end
local CTX = { sanitize = function(s) return s end }

describe("op.map_error by stable fragments", function()
  -- class -> kind, reason for op://Private/GitHub/token, texts of several op versions
  local classes = {
    { "auth", "op is not signed in to a 1Password account", {
      "You are not currently signed in. Please run `op signin --help` for instructions",
      "account is not signed in",
      "no accounts configured for use with 1Password CLI",
      "session expired, sign in to create a new session",
      "authorization prompt dismissed, please try again",
      "error initializing client: invalid service account token",
    } },
    { "not_found", "item 'GitHub' not found in vault 'Private'", {
      "\"GitHub\" isn't an item in the \"Private\" vault. Specify the item with its UUID, name, or domain.",
      "\"GitHub\" isn't an item.",
      "\"GitHub\" isn't an item in any vault.",
      "could not read secret 'op://Private/GitHub/token': no item matched \"GitHub\"",
    } },
    { "not_found", "field 'token' not found in item 'GitHub'", {
      "could not read secret 'op://Private/GitHub/token': error parsing secret reference: \"token\" isn't a "
        .. "field in the \"GitHub\" item",
      "\"token\" isn't a field in the \"GitHub\" item.",
      "\"token\" isn't a field.",
    } },
    { "not_found", "vault 'Private' not found or not accessible", {
      "\"Private\" isn't a vault in this account. Specify the vault with its ID or name.",
      "\"Private\" isn't a vault.",
      "\"Private\" doesn't seem to be a vault in this account",
    } },
    { "network", "op could not reach 1Password", {
      "Get \"https://my.1password.com/api/v1/account\": dial tcp: lookup my.1password.com: no such host",
      "Post \"https://my.1password.com/api/v2/auth\": read tcp 10.0.0.2:5555->1.2.3.4:443: connection reset by peer",
      "could not connect to 1Password: connection refused",
    } },
    { "throttled", "1Password throttled the requests", {
      "Too many requests. Please try again later. (429)",
      "rate limit exceeded",
    } },
    { "permission", "1Password refused access to this item", {
      "(403) Forbidden: You do not have permission to perform this action",
      "forbidden",
    } },
  }

  for _, c in ipairs(classes) do
    for i, text in ipairs(c[3]) do
      it(("%s #%d: %s"):format(c[2], i, text:sub(1, 50)), function()
        local f = op.map_error(stderr(text), req("op://Private/GitHub/token"), 1, CTX)
        assert.equal(c[1], f.kind)
        assert.equal(c[2], f.reason)
        assert.is_string(f.fix)
        -- Fixed text only: none of op's wording is carried over.
        assert.is_nil(f.reason:find("1password.com", 1, true))
        assert.is_nil(f.reason:find("Specify", 1, true))
      end)
    end
  end

  it("also reads stderr that has no [ERROR] prefix", function()
    local f = op.map_error("\"GitHub\" isn't an item.\n", req("op://Private/GitHub/token"), 1, CTX)
    assert.equal("not_found", f.kind)
  end)

  it("shows an unrecognised message sanitized, its quoted strings elided", function()
    local seen
    local ctx = { sanitize = function(s)
      seen = s
      return (s:gsub("known%-value%-12345", "<concealed by moat>"))
    end }
    local f = op.map_error(stderr("unexpected response for known-value-12345: 'never-seen-777' and \"x y\""),
      req("op://v/i/f"), 1, ctx)
    assert.is_string(seen)
    assert.equal("backend_error", f.kind)
    assert.equal("op failed: unexpected response for <concealed by moat>: '<elided>' and \"<elided>\"", f.reason)
  end)
end)

describe("op backend text never carries a value (moat binary)", function()
  local root, home

  local function env(extra)
    local e = {
      HOME = home, MOAT_HOME = home .. "/.moat", XDG_CONFIG_HOME = home .. "/.config",
      MOAT_SITE_DIR = home .. "/site", PATH = BIN .. ":" .. os.getenv("PATH"),
      FAKE_OP_DATA = root .. "/data.lua", NO_COLOR = "1",
    }
    for k, v in pairs(extra or {}) do e[k] = v end
    return e
  end

  setup(function()
    root = t.tmpdir()
    home = root .. "/home"
    t.write(home .. "/.keep", "")
    -- The fake op prints GOOD's value, then fails SEEN quoting that value, and UNSEEN quoting a
    -- value moat was never given.
    t.write(root .. "/data.lua", [[
return {
  ["op://v/app/good"] = "printed-value-4242",
  ["op://v/app/seen"] = { error = "unexpected item data near 'printed-value-4242' (check the item)" },
  ["op://v/app/unseen"] = { error = 'could not decode field: "never-seen-value-777" is malformed' },
}
]])
  end)
  teardown(function() t.rmtree(root) end)

  local function workspace()
    local ws = t.tmpdir()
    t.write(ws .. "/moat.yaml", "secrets:\n  GOOD: op://v/app/good\n  SEEN: op://v/app/seen\n"
      .. "  UNSEEN: op://v/app/unseen\n")
    return ws
  end

  local function clean(text)
    assert.is_nil(text:find("printed-value-4242", 1, true), text)
    assert.is_nil(text:find("never-seen-value-777", 1, true), text)
    assert.is_nil(text:find("never-seen", 1, true), text)
  end

  it("secrets check --resolve (text and --json)", function()
    local ws = workspace()
    local code, out, err = t.moat({ "secrets", "check", ws, "--resolve" }, { env = env() })
    assert.equal(69, code)
    assert.matches("op failed: unexpected item data near '<elided>'", out, 1, true)
    assert.matches("op failed: could not decode field: \"<elided>\" is malformed", out, 1, true)
    clean(out .. err)
    code, out, err = t.moat({ "secrets", "check", ws, "--resolve", "--json", "-v", "-v" }, { env = env() })
    assert.equal(69, code)
    clean(out .. err)
    t.rmtree(ws)
  end)

  it("run", function()
    local ws = workspace()
    local code, out, err = t.moat({ "run", ws, "--runtime", "host", "-v", "-v", "--", "true" }, { env = env() })
    assert.equal(69, code)
    assert.matches("UNSEEN (op://v/app/unseen, backend op): op failed", err, 1, true)
    clean(out .. err)
    t.rmtree(ws)
  end)
end)

describe("op whose grandchild calls setsid and keeps stdout open", function()
  -- Unique to this process, so the leftover grandchild can be found by its command line; well
  -- over the 30 s timeout, so a moat that waited for the pipes would wait for the timeout.
  local HELD = ("41.%05d"):format(sys.getpid() % 100000)
  local root

  local function leftovers()
    local out = {}
    for pid in require("lfs").dir("/proc") do
      if pid:match("^%d+$") and t.read("/proc/" .. pid .. "/cmdline") == "sleep\0" .. HELD .. "\0" then
        out[#out + 1] = tonumber(pid)
      end
    end
    return out
  end

  -- Kills the fake's leftover `sleep HELD` by its pid (it is in a session of its own).
  local function kill_leftover()
    for _, pid in ipairs(leftovers()) do sys.kill(pid, "KILL") end
  end

  setup(function()
    root = t.tmpdir()
    t.write(root .. "/data.lua", 'return { ["op://v/app/a"] = "held-value-1", ["op://v/app/b"] = "held-value-2" }\n')
    t.write(root .. "/home/.keep", "")
  end)
  teardown(function()
    kill_leftover()
    t.rmtree(root)
  end)

  it("delivers what op printed as soon as op exits, and ends the grandchild", function()
    local secrets = require("moat.secrets")
    local config = require("moat.config")
    local cfg = assert(config.parse("secrets:\n  A: op://v/app/a\n  B: op://v/app/b\n", "moat.yaml", "/work/space"))
    local plan = require("moat.plan").build(cfg)
    local environ = sys.environ()
    environ.PATH = BIN .. ":" .. environ.PATH
    environ.FAKE_OP_DATA = root .. "/data.lua"
    environ.FAKE_OP_SETSID = HELD
    -- As a run does (moat.session): orphans come back to moat, which ends them.
    assert.is_true(sys.subreaper(true))
    local ok, res = pcall(secrets.resolve, plan, { env = environ, timeout = 30 })
    sys.subreaper(false)
    assert.is_true(ok, tostring(res))
    assert.is_true(res.ok, res.failures[1] and res.failures[1].reason)
    assert.equal("held-value-1", res.values.A)
    assert.equal("held-value-2", res.values.B)
    -- Settled when op exited (plus the linger), not when the 30 s timeout cut the pipes.
    for _, rec in ipairs(res.records) do assert.is_true(rec.ms < 15000, "waited for the timeout") end
    assert.same({}, leftovers())
  end)

  it("moat secrets check --resolve: delivered, and no grandchild is left", function()
    local ws = t.tmpdir()
    t.write(ws .. "/moat.yaml", "secrets:\n  A: op://v/app/a\n")
    local home = root .. "/home"
    local code, out, err = t.moat({ "secrets", "check", ws, "--resolve", "--timeout", "30" }, { env = {
      HOME = home, MOAT_HOME = home .. "/.moat", XDG_CONFIG_HOME = home .. "/.config",
      MOAT_SITE_DIR = home .. "/site", PATH = BIN .. ":" .. os.getenv("PATH"),
      FAKE_OP_DATA = root .. "/data.lua", FAKE_OP_SETSID = HELD, NO_COLOR = "1" } })
    t.rmtree(ws)
    assert.equal(0, code, out .. err)
    assert.same({}, leftovers())
  end)
end)
