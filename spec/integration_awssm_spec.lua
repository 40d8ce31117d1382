-- Integration: the awssm backend (AWS Secrets Manager) through the real pipeline against a moto
-- server on loopback and the real aws CLI v1, every aws process counted by the logging wrapper
-- of spec/support/moto.lua. A second wrapper (spec/fixtures/aws-nobatch) plays a CLI without
-- batch-get-secret-value to exercise the concurrent get-secret-value fallback.
local json = require("moat.c.json")
local moto = require("support.moto")
local t = require("support.moat")
local need = require("support.need")
local awssm = require("moat.backends.awssm")

local ROOT = MOAT_ROOT
local srv, why

local SEED_PY = [[
import base64, json, os, sys
import botocore.session
data = json.load(sys.stdin)
session = botocore.session.get_session()
clients = {}
for s in data:
    region = s.get("region") or "us-east-1"
    c = clients.get(region)
    if c is None:
        c = clients[region] = session.create_client("secretsmanager", region_name=region,
                                                    endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    if "binary" in s:
        c.create_secret(Name=s["name"], SecretBinary=base64.b64decode(s["binary"]))
    else:
        c.create_secret(Name=s["name"], SecretString=s["value"])
]]

local ODD = {
  "  leading and trailing spaces  ",
  "line one\nline two\n\n",
  "a=b==c",
  [["double" and 'single' quotes]],
  "ünïcødé ✓ 日本語",
  "back\\slash $HOME `cmd` ${x}",
}

local function seed(list)
  local r = t.exec({ "python3", "-c", SEED_PY }, { env = srv:env_for({ PATH = os.getenv("PATH") }),
    stdin = assert(json.encode(json.array(list))), timeout = 300000 })
  assert(r.code == 0, "seeding moto failed: " .. (r.stderr or ""):sub(-2000))
end

local function config(secrets)
  local dir = t.tmpdir()
  local lines = { "name: awssm-test", "secrets:" }
  for _, s in ipairs(secrets) do lines[#lines + 1] = ("  %s: %q"):format(s[1], s[2]) end
  t.write(dir .. "/moat.yaml", table.concat(lines, "\n") .. "\n")
  return dir
end

-- Resolves in-process through spec/bench/resolve.lua (which may print values: test data only).
local function resolve(dir, env)
  local r = t.exec({ "lua5.4", ROOT .. "/spec/bench/resolve.lua", dir, "--values" }, { env = env or srv.env })
  local out = json.decode(r.stdout)
  assert(out, "driver failed: " .. r.stderr)
  out.by_name = {}
  for _, rec in ipairs(out.records) do out.by_name[rec.name] = rec end
  return out
end

local function check(dir, env)
  local code, stdout, stderr = t.moat({ "secrets", "check", dir, "--resolve", "--json" }, { env = env or srv.env })
  local by_name = {}
  for _, rec in ipairs(json.decode(stdout) or {}) do by_name[rec.name] = rec end
  return code, by_name, stdout, stderr
end

local function ids_in(call)
  local ids = {}
  local list = call.argv:match("%-%-secret%-id%-list (.-) %-%-output")
  for id in (list or ""):gmatch("%S+") do ids[#ids + 1] = id end
  return ids
end

setup(function()
  local ok, reason = moto.available()
  if not ok then why = reason return end
  local s, err = moto.start()
  if not s then why = err return end
  srv = s
  local list = {}
  for i = 1, 25 do list[#list + 1] = { name = ("int/s/%02d"):format(i), value = "value-" .. i } end
  for i, v in ipairs(ODD) do list[#list + 1] = { name = "odd/" .. i, value = v } end
  list[#list + 1] = { name = "app/db",
    value = '{"user":"admin","password":" p@ss w0rd\\n","port":5432,"tls":true,"nested":{"a":1}}' }
  list[#list + 1] = { name = "bin/key", binary = "AQIgYmluIOKckwo=" }
  list[#list + 1] = { name = "west/only", value = "from-eu", region = "eu-west-1" }
  seed(list)
end)

teardown(function()
  if srv then srv:stop() end
end)

local function need_moto()
  if not srv then pending(need.missing("moto and an aws CLI v1", why)) return false end
  srv:reset_log()
  return true
end

describe("awssm against moto and the real aws CLI", function()
  it("fetches 25 secrets of one region in two batch calls of at most 20", function()
    if not need_moto() then return end
    local secrets = {}
    for i = 1, 25 do secrets[#secrets + 1] = { ("S%02d"):format(i), ("awssm:///int/s/%02d"):format(i) } end
    local out = resolve(config(secrets))
    assert.is_true(out.ok)
    for i = 1, 25 do assert.equal("value-" .. i, out.values[("S%02d"):format(i)]) end
    local calls = srv:calls()
    assert.equal(2, #calls)
    local total = 0
    for _, c in ipairs(calls) do
      assert.truthy(c.argv:find("^secretsmanager batch%-get%-secret%-value "), c.argv)
      assert.is_true(#ids_in(c) <= 20)
      total = total + #ids_in(c)
    end
    assert.equal(25, total)
  end)

  it("keeps values byte-exact, takes #key of JSON secrets and decodes binary secrets", function()
    if not need_moto() then return end
    local secrets = {}
    for i = 1, #ODD do secrets[#secrets + 1] = { "ODD" .. i, "awssm:///odd/" .. i } end
    secrets[#secrets + 1] = { "DB_USER", "awssm:///app/db#user" }
    secrets[#secrets + 1] = { "DB_PASS", "awssm:///app/db#password" }
    secrets[#secrets + 1] = { "DB_PORT", "awssm:///app/db#port" }
    secrets[#secrets + 1] = { "DB_TLS", "awssm:///app/db#tls" }
    secrets[#secrets + 1] = { "DB_JSON", "awssm:///app/db" }
    secrets[#secrets + 1] = { "BIN", "awssm:///bin/key" }
    local out = resolve(config(secrets))
    assert.is_true(out.ok, out.records and json.encode(out.records))
    for i, v in ipairs(ODD) do assert.equal(v, out.values["ODD" .. i]) end
    assert.equal("admin", out.values.DB_USER)
    assert.equal(" p@ss w0rd\n", out.values.DB_PASS)
    assert.equal("5432", out.values.DB_PORT)
    assert.equal("true", out.values.DB_TLS)
    assert.truthy(out.values.DB_JSON:find('"user":"admin"', 1, true))
    assert.equal("\1\2 bin ✓\n", out.values.BIN)
    -- one secret fetched once although four variables use it
    assert.equal(1, #srv:calls())
  end)

  it("reports a missing secret, a missing key and a non-object key by name; the others resolve", function()
    if not need_moto() then return end
    local code, by = check(config({
      { "GOOD", "awssm:///int/s/01" },
      { "GONE", "awssm:///no/such/secret" },
      { "NOKEY", "awssm:///app/db#nope" },
      { "NESTED", "awssm:///app/db#nested" },
    }))
    assert.equal(69, code)
    assert.is_true(by.GOOD.ok)
    assert.equal("not_found", by.GONE.kind)
    assert.truthy(by.GONE.reason:find("does not exist", 1, true))
    assert.equal("not_found", by.NOKEY.kind)
    assert.truthy(by.NOKEY.reason:find("'nope'", 1, true))
    assert.equal("invalid", by.NESTED.kind)
  end)

  it("asks each region with its own call, the environment's region named by --region", function()
    if not need_moto() then return end
    local out = resolve(config({
      { "EAST", "awssm:///int/s/02" },
      { "WEST", "awssm://eu-west-1/west/only" },
      { "WEST_IN_EAST", "awssm://us-east-1/west/only" },
    }))
    assert.equal("value-2", out.values.EAST)
    assert.equal("from-eu", out.values.WEST)
    assert.equal("not_found", out.by_name.WEST_IN_EAST.kind)
    local regions = {}
    for _, c in ipairs(srv:calls()) do
      local r = c.argv:match("%-%-region (%S+)") or "default"
      regions[r] = (regions[r] or 0) + 1
    end
    -- AWS_DEFAULT_REGION is us-east-1: awssm:///x and awssm://us-east-1/y go in one call.
    assert.same({ ["eu-west-1"] = 1, ["us-east-1"] = 1 }, regions)
  end)

  it("falls back to one concurrent get-secret-value per secret when the CLI has no batch call", function()
    if not need_moto() then return end
    local env = srv:env_for({ PATH = ROOT .. "/spec/fixtures/aws-nobatch:" .. srv.env.PATH })
    local out = resolve(config({
      { "A", "awssm:///int/s/03" }, { "B", "awssm:///int/s/04" }, { "C", "awssm:///nope/x" },
    }), env)
    assert.equal("value-3", out.values.A)
    assert.equal("value-4", out.values.B)
    assert.equal("not_found", out.by_name.C.kind)
    local batch, single = 0, 0
    for _, c in ipairs(srv:calls()) do
      if c.argv:find("batch%-get%-secret%-value") then batch = batch + 1 end
      if c.argv:find("^secretsmanager get%-secret%-value") then single = single + 1 end
    end
    assert.equal(1, batch)
    assert.equal(3, single)
  end)

  it("names missing credentials as an auth failure without retrying per secret", function()
    if not need_moto() then return end
    local env = srv:env_for({ AWS_ACCESS_KEY_ID = false, AWS_SECRET_ACCESS_KEY = false })
    local code, by, stdout = check(config({ { "A", "awssm:///int/s/05" }, { "B", "awssm:///int/s/06" } }), env)
    assert.equal(69, code)
    assert.equal("auth", by.A.kind)
    assert.truthy(by.A.reason:find("no AWS credentials", 1, true))
    assert.falsy(stdout:find("value-5", 1, true))
    assert.equal(1, #srv:calls())
  end)

  it("says when aws is not installed", function()
    if not need_moto() then return end
    local code, by = check(config({ { "A", "awssm:///int/s/07" } }), srv:env_for({ PATH = "/nonexistent" }))
    assert.equal(69, code)
    assert.equal("unavailable", by.A.kind)
    assert.truthy(by.A.reason:find("not installed", 1, true))
  end)
end)

describe("awssm.parse", function()
  it("accepts the documented forms", function()
    assert.same({ id = "app/db" }, awssm.parse("awssm:///app/db"))
    assert.same({ region = "eu-west-1", id = "app/db", key = "password" },
      awssm.parse("awssm://eu-west-1/app/db#password"))
    local p = assert(awssm.parse("awssm:///arn:aws:secretsmanager:us-east-1:123456789012:secret:app/db-AbCdEf"))
    assert.equal("arn:aws:secretsmanager:us-east-1:123456789012:secret:app/db-AbCdEf", p.id)
  end)

  it("refuses malformed references with a reason", function()
    for _, ref in ipairs({ "awssm://", "awssm:///", "awssm://notaregion/x", "awssm:///a b", "awssm:///x#",
      "awssm:///x#a#b", "awssm:///bad!name", "awssm:///arn:aws:s3:::bucket", "awssm:///--debug",
      "awssm://eu-west-1/-x" }) do
      local p, w = awssm.parse(ref)
      assert.is_nil(p, ref)
      assert.is_string(w)
    end
  end)
end)
