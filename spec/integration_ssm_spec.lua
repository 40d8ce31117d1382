-- Integration: the ssm backend through the real pipeline against a moto server started here on
-- loopback and the real aws CLI (v1), with every aws process counted by a logging wrapper first
-- on PATH. KMS, expired-token and throttling texts come from a stand-in `aws`
-- (spec/fixtures/aws-standin/aws) because moto does not produce them; access denied against
-- moto enforcing IAM is spec/integration_ssm_iam_spec.lua.
local json = require("moat.c.json")
local moto = require("support.moto")
local t = require("support.moat")
local need = require("support.need")

local srv, why
local ROOT = MOAT_ROOT

-- Writes a moat.yaml with `secrets` (array of {NAME, REF}) into a fresh directory.
local function config(secrets)
  local dir = t.tmpdir()
  local lines = { "name: ssm-test", "secrets:" }
  for _, s in ipairs(secrets) do
    lines[#lines + 1] = ("  %s: %q"):format(s[1], s[2])
  end
  t.write(dir .. "/moat.yaml", table.concat(lines, "\n") .. "\n")
  return dir
end

-- Resolves through the in-process pipeline (spec/bench/resolve.lua); returns the decoded output.
local function resolve(dir, env)
  local r = t.exec({ "lua5.4", ROOT .. "/spec/bench/resolve.lua", dir, "--values" }, { env = env or srv.env })
  local out = json.decode(r.stdout)
  assert(out, "driver failed: " .. r.stderr)
  out.code = r.code
  out.by_name = {}
  for _, rec in ipairs(out.records) do out.by_name[rec.name] = rec end
  return out
end

-- Runs `moat secrets check --resolve --json`; returns code, records by name, stdout, stderr.
local function check(dir, env)
  local code, stdout, stderr = t.moat({ "secrets", "check", dir, "--resolve", "--json" }, { env = env or srv.env })
  local by_name = {}
  for _, rec in ipairs(json.decode(stdout) or {}) do by_name[rec.name] = rec end
  return code, by_name, stdout, stderr
end

-- Counts the get-parameters calls per region (the per-name get-parameter calls, if any, apart).
local function per_region(calls)
  local out = {}
  for _, c in ipairs(calls) do
    assert.truthy(c.argv:find("^ssm get%-parameters? "), c.argv)
    if c.argv:find("^ssm get%-parameter ") then goto next end
    local region = c.argv:match("%-%-region (%S+)") or "default"
    out[region] = (out[region] or 0) + 1
    ::next::
  end
  return out
end

local function names_in(call)
  local names = {}
  for n in call.argv:match("%-%-names (.-) %-%-with%-decryption"):gmatch("%S+") do names[#names + 1] = n end
  return names
end

local ODD = {
  "  leading and trailing spaces  ",
  "line one\nline two\n\n",
  "a=b==c",
  [["double" and 'single' quotes]],
  "ünïcødé ✓ 日本語",
  "back\\slash $HOME `cmd` ${x}",
  "\ttabbed\t",
  string.rep("0123456789abcdef", 256),
}

setup(function()
  local ok, reason = moto.available()
  if not ok then
    why = reason
    return
  end
  local s, err = moto.start()
  if not s then
    why = err
    return
  end
  srv = s
  local params = {}
  for i = 1, 23 do
    params[#params + 1] = { name = ("/int/p/%02d"):format(i), value = "plain-" .. i }
  end
  for i = 1, 12 do
    params[#params + 1] = { name = ("/int/eu/%02d"):format(i), value = "eu-" .. i, type = "SecureString",
      region = "eu-west-1" }
  end
  params[#params + 1] = { name = "/int/ap", value = "ap-value", region = "ap-southeast-2" }
  params[#params + 1] = { name = "/int/sec", value = "secure-value", type = "SecureString" }
  for i, v in ipairs(ODD) do
    params[#params + 1] = { name = "/int/odd/" .. i, value = v, type = i % 2 == 0 and "SecureString" or "String" }
  end
  params[#params + 1] = { name = "/int/ver", value = "version-one", labels = { "prod" } }
  params[#params + 1] = { name = "/int/ver", value = "version-two" }
  srv:seed(params)
end)

teardown(function()
  if srv then srv:stop() end
end)

local function need_moto()
  if not srv then
    pending(need.missing("moto and an aws CLI v1", why))
    return false
  end
  return true
end

describe("ssm against moto", function()
  before_each(function() if srv then srv:reset_log() end end)

  it("uses aws CLI v1 behind the counting wrapper", function()
    if not need_moto() then return end
    local r = t.exec({ "aws", "--version" }, { env = srv.env })
    assert.equal(0, r.code)
    assert.truthy(((r.stdout or "") .. (r.stderr or "")):match("^aws%-cli/1%."))
    assert.equal(1, #srv:calls())
  end)

  it("resolves several regions with ⌈n/10⌉ concurrent calls per region, byte-exact", function()
    if not need_moto() then return end
    local secrets = {}
    for i = 1, 23 do secrets[#secrets + 1] = { "P" .. i, ("ssm:///int/p/%02d"):format(i) } end
    for i = 1, 12 do secrets[#secrets + 1] = { "EU" .. i, ("ssm://eu-west-1/int/eu/%02d"):format(i) } end
    secrets[#secrets + 1] = { "AP", "ssm://ap-southeast-2/int/ap" }
    local dir = config(secrets)
    local out = resolve(dir)
    assert.equal(0, out.code)
    assert.is_true(out.ok)
    for i = 1, 23 do assert.equal("plain-" .. i, out.values["P" .. i]) end
    for i = 1, 12 do assert.equal("eu-" .. i, out.values["EU" .. i]) end
    assert.equal("ap-value", out.values.AP)
    local calls = srv:calls()
    assert.same({ ["us-east-1"] = 3, ["eu-west-1"] = 2, ["ap-southeast-2"] = 1 }, per_region(calls))
    for _, c in ipairs(calls) do
      assert.truthy(#names_in(c) <= 10)
      assert.equal(0, c.code)
      assert.truthy(c.argv:find("--with-decryption --output json", 1, true))
    end
    assert.is_true(moto.overlapped(calls), "the aws calls did not overlap")
    t.rmtree(dir)
  end)

  it("handles SecureString, String, versions, labels, odd bytes and one reference under two names", function()
    if not need_moto() then return end
    local secrets = {
      { "SEC", "ssm:///int/sec" }, { "SEC_AGAIN", "ssm:///int/sec" }, { "SEC_REGION", "ssm://us-east-1/int/sec" },
      { "LATEST", "ssm:///int/ver" }, { "V1", "ssm:///int/ver:1" }, { "V2", "ssm:///int/ver:2" },
      { "PROD", "ssm:///int/ver:prod" },
    }
    for i = 1, #ODD do secrets[#secrets + 1] = { "ODD" .. i, "ssm:///int/odd/" .. i } end
    local out = resolve(config(secrets))
    assert.is_true(out.ok)
    assert.equal("secure-value", out.values.SEC)
    assert.equal("secure-value", out.values.SEC_AGAIN)
    assert.equal("secure-value", out.values.SEC_REGION)
    assert.equal("version-two", out.values.LATEST)
    assert.equal("version-one", out.values.V1)
    assert.equal("version-two", out.values.V2)
    assert.equal("version-one", out.values.PROD)
    for i, v in ipairs(ODD) do assert.equal(v, out.values["ODD" .. i], "ODD" .. i) end
    -- 14 distinct names (ssm:///x and ssm://us-east-1/x are one name when the environment's region is
    -- us-east-1), /int/ver at four selectors: four calls, none asking for one parameter twice.
    local calls = srv:calls()
    assert.same({ ["us-east-1"] = 4 }, per_region(calls))
    for _, c in ipairs(calls) do
      local seen = {}
      for _, n in ipairs(names_in(c)) do
        local path = n:match("^([^:]*)")
        assert.is_nil(seen[path], c.argv)
        seen[path] = true
      end
    end
  end)

  it("fails exactly the missing names as not found, exit 69, no value printed", function()
    if not need_moto() then return end
    local dir = config({
      { "HERE", "ssm:///int/sec" }, { "GONE", "ssm:///int/nope" }, { "GONE_EU", "ssm://eu-west-1/int/p/01" },
      { "NO_VERSION", "ssm:///int/ver:9" }, { "NO_LABEL", "ssm:///int/ver:staging" }, { "ALSO", "ssm:///int/p/02" },
    })
    local code, recs, stdout, stderr = check(dir)
    assert.equal(69, code)
    assert.is_true(recs.HERE.ok)
    assert.is_true(recs.ALSO.ok)
    for _, n in ipairs({ "GONE", "GONE_EU", "NO_VERSION", "NO_LABEL" }) do
      assert.is_false(recs[n].ok, n)
      assert.equal("not_found", recs[n].kind, n)
      assert.is_string(recs[n].fix)
    end
    assert.truthy(recs.GONE_EU.reason:find("eu-west-1", 1, true))
    for _, v in ipairs({ "secure-value", "plain-2", "version-one", "version-two" }) do
      assert.is_nil(stdout:find(v, 1, true))
      assert.is_nil(stderr:find(v, 1, true))
    end
    t.rmtree(dir)
  end)

  it("moat secrets check (without --resolve) finds the aws CLI usable", function()
    if not need_moto() then return end
    local dir = config({ { "A", "ssm:///int/sec" } })
    local code, stdout = t.moat({ "secrets", "check", dir }, { env = srv.env })
    assert.equal(0, code)
    assert.truthy(stdout:find("A", 1, true))
    assert.is_nil(stdout:find("secure-value", 1, true))
  end)
end)

describe("ssm error mapping", function()
  local dir
  before_each(function()
    dir = dir or config({ { "DB", "ssm:///int/sec" }, { "EU", "ssm://eu-west-1/int/eu/01" } })
    if srv then srv:reset_log() end
  end)

  local function expect(env, kind, reason, fix)
    local code, recs, stdout, stderr = check(dir, env)
    assert.equal(69, code)
    for _, n in ipairs({ "DB", "EU" }) do
      local r = recs[n]
      assert.is_false(r.ok, n)
      assert.equal(kind, r.kind, n .. ": " .. tostring(r.reason))
      assert.truthy(r.reason:find(reason, 1, true), r.reason)
      assert.truthy(r.fix:find(fix, 1, true), r.fix)
    end
    assert.is_nil((stdout .. stderr):find("secure-value", 1, true))
    return recs
  end

  it("aws not on PATH", function()
    if not need_moto() then return end
    local empty = t.tmpdir()
    expect(srv:env_for({ PATH = empty }), "unavailable", "not installed", "install")
    t.rmtree(empty)
  end)

  it("no credentials", function()
    if not need_moto() then return end
    expect(srv:env_for({ AWS_ACCESS_KEY_ID = false, AWS_SECRET_ACCESS_KEY = false }), "auth",
      "no AWS credentials", "aws configure")
    assert.equal(2, #srv:calls())
  end)

  it("endpoint not reachable", function()
    if not need_moto() then return end
    -- One attempt: the CLI otherwise retries a refused connection for several seconds.
    expect(srv:env_for({ AWS_ENDPOINT_URL = "http://127.0.0.1:1", AWS_MAX_ATTEMPTS = "1" }), "network",
      "could not reach SSM", "AWS_ENDPOINT_URL")
  end)

  local standin = {
    { "access_denied", "permission", "denied access", "grant ssm:GetParameter on" },
    { "kms_denied", "permission", "KMS refused", "kms:Decrypt" },
    { "expired", "auth", "expired", "aws sso login" },
    { "sso_expired", "auth", "expired", "aws sso login" },
    { "throttled", "throttled", "throttled", "retry" },
  }
  for _, c in ipairs(standin) do
    it(c[1] .. " (stand-in aws with the real CLI's text)", function()
      if not need_moto() then return end
      local env = srv:env_for({ PATH = moto.STANDIN_DIR .. ":" .. os.getenv("PATH"), FAKE_AWS_ERROR = c[1] })
      local recs = expect(env, c[2], c[3], c[4])
      assert.is_nil(recs.DB.reason:find("[%c]"))
      assert.same({ ["us-east-1"] = 1, ["eu-west-1"] = 1 }, per_region(srv:calls()))
      -- Only a denied GetParameters is asked again, name by name.
      assert.equal(c[1] == "access_denied" and 4 or 2, #srv:calls())
    end)
  end

  it("moat secrets check (without --resolve) says there are no AWS credentials, one sts call a region", function()
    if not need_moto() then return end
    local code, stdout = t.moat({ "secrets", "check", dir },
      { env = srv:env_for({ AWS_ACCESS_KEY_ID = false, AWS_SECRET_ACCESS_KEY = false }) })
    assert.equal(69, code)
    assert.truthy(stdout:find("backend ssm is not usable: no AWS credentials", 1, true), stdout)
    assert.truthy(stdout:find("fix: run `aws configure`", 1, true), stdout)
    local regions = {}
    for _, c in ipairs(srv:calls()) do
      assert.truthy(c.argv:find("^sts get%-caller%-identity "), c.argv)
      local r = c.argv:match("%-%-region (%S+)")
      regions[r] = (regions[r] or 0) + 1
    end
    assert.same({ ["us-east-1"] = 1, ["eu-west-1"] = 1 }, regions)
  end)
end)

describe("ssm region", function()
  before_each(function() if srv then srv:reset_log() end end)

  it("asks ssm when a secret's value is the region's name (env://AWS_REGION): the region is not in argv", function()
    if not need_moto() then return end
    local dir = config({ { "SEC", "ssm:///int/sec" }, { "R", "env://AWS_REGION" },
      { "S2", "ssm://us-east-1/int/sec" } })
    local env = srv:env_for({ AWS_DEFAULT_REGION = false, AWS_REGION = "us-east-1" })
    local code, recs, out, err = check(dir, env)
    assert.equal(0, code, out .. err)
    assert.is_true(recs.SEC.ok and recs.S2.ok and recs.R.ok, out)
    code, out, err = t.moat({ "secrets", "check", dir }, { env = env })
    assert.equal(0, code, out .. err)
    assert.is_nil((out .. err):find("argv", 1, true))
    t.rmtree(dir)
  end)

  it("resolves with only AWS_REGION set, through CLI v1 (which ignores AWS_REGION) given the region", function()
    if not need_moto() then return end
    local dir = config({ { "SEC", "ssm:///int/sec" } })
    local out = resolve(dir, srv:env_for({ AWS_DEFAULT_REGION = false, AWS_REGION = "eu-west-1" }))
    assert.equal("not_found", out.by_name.SEC.kind)
    assert.equal("the parameter does not exist in eu-west-1", out.by_name.SEC.reason)
    out = resolve(dir, srv:env_for({ AWS_DEFAULT_REGION = false, AWS_REGION = "us-east-1" }))
    assert.is_true(out.ok, out.records[1].reason)
    assert.equal("secure-value", out.values.SEC)
    assert.same({ ["us-east-1"] = 1, ["eu-west-1"] = 1 }, per_region(srv:calls()))
    t.rmtree(dir)
  end)

  it("leaves the region to the CLI's profile when none is known, and says so", function()
    if not need_moto() then return end
    local dir = config({ { "SEC", "ssm:///int/sec" } })
    local out = resolve(dir, srv:env_for({ AWS_DEFAULT_REGION = false }))
    assert.equal("invalid", out.by_name.SEC.kind)
    assert.equal("no AWS region is configured", out.by_name.SEC.reason)
    assert.same({ default = 1 }, per_region(srv:calls()))
    t.rmtree(dir)
  end)
end)
