-- Integration: the ssm backend against a moto server that enforces IAM (moto's
-- /moto-api/reset-auth, i.e. INITIAL_NO_AUTH_ACTION_COUNT = 0, turned on after the users and
-- their policies were made with the admin's keys), through the real aws CLI v1 and the moat
-- binary. The identity of the upstream guide's policy (ssm:GetParameter + kms:Decrypt only)
-- must still get its values; one without SSM rights must be told which grant is missing.
local json = require("moat.c.json")
local moto = require("support.moto")
local t = require("support.moat")
local need = require("support.need")

local srv, why
local users = {}
local ROOT = MOAT_ROOT

local function config(secrets)
  local dir = t.tmpdir()
  local lines = { "name: ssm-iam-test", "secrets:" }
  for _, s in ipairs(secrets) do lines[#lines + 1] = ("  %s: %q"):format(s[1], s[2]) end
  t.write(dir .. "/moat.yaml", table.concat(lines, "\n") .. "\n")
  return dir
end

local function resolve(dir, env)
  local r = t.exec({ "lua5.4", ROOT .. "/spec/bench/resolve.lua", dir, "--values" }, { env = env })
  local out = assert(json.decode(r.stdout), "driver failed: " .. r.stderr)
  out.by_name = {}
  for _, rec in ipairs(out.records) do out.by_name[rec.name] = rec end
  return out
end

local function check(dir, env, extra)
  local argv = { "secrets", "check", dir, "--resolve", "--json" }
  for _, a in ipairs(extra or {}) do argv[#argv + 1] = a end
  local code, stdout, stderr = t.moat(argv, { env = env })
  local by_name = {}
  for _, rec in ipairs(json.decode(stdout) or {}) do by_name[rec.name] = rec end
  return code, by_name, stdout, stderr
end

local function ops(calls)
  local out = {}
  for _, c in ipairs(calls) do
    local op = c.argv:match("^%S+ (%S+)")
    out[op] = (out[op] or 0) + 1
  end
  return out
end

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
  srv:seed({
    { name = "/iam/a", value = "iam-secure-a", type = "SecureString" },
    { name = "/iam/b", value = "iam-plain-b" },
    { name = "/iam/eu", value = "iam-eu-value", type = "SecureString", region = "eu-west-1" },
  })
  users.guide = srv:env_for(srv:iam_user("guide", { "ssm:GetParameter", "kms:Decrypt" }))
  users.nobody = srv:env_for(srv:iam_user("nobody", nil))
  srv:enforce_iam()
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

describe("ssm against moto enforcing IAM", function()
  local dir
  before_each(function()
    dir = dir or config({ { "A", "ssm:///iam/a" }, { "B", "ssm:///iam/b" }, { "EU", "ssm://eu-west-1/iam/eu" },
      { "GONE", "ssm:///iam/gone" } })
    if srv then srv:reset_log() end
  end)

  it("enforces IAM: the admin's dummy keys are no longer accepted", function()
    if not need_moto() then return end
    local r = t.exec({ "aws", "ssm", "get-parameter", "--name", "/iam/b" }, { env = srv.env })
    assert.equal(255, r.code)
    assert.truthy(r.stderr:find("InvalidClientTokenId", 1, true), r.stderr)
  end)

  it("resolves with only ssm:GetParameter + kms:Decrypt, per name and concurrently, saying so under -v", function()
    if not need_moto() then return end
    local out = resolve(dir, users.guide)
    assert.equal("iam-secure-a", out.values.A)
    assert.equal("iam-plain-b", out.values.B)
    assert.equal("iam-eu-value", out.values.EU)
    assert.equal("not_found", out.by_name.GONE.kind)
    local calls = srv:calls()
    -- One denied get-parameters per region, then one get-parameter for each of its names.
    assert.same({ ["get-parameters"] = 2, ["get-parameter"] = 4 }, ops(calls))
    local per = {}
    for _, c in ipairs(calls) do
      if c.argv:find("get-parameters", 1, true) then assert.equal(255, c.code) end
      if c.argv:find("^ssm get%-parameter ") and not c.argv:find("gone", 1, true) then assert.equal(0, c.code) end
      assert.truthy(c.argv:find("--region (%S+)"), c.argv)
      per[c.argv:match("%-%-region (%S+)")] = true
    end
    assert.same({ ["us-east-1"] = true, ["eu-west-1"] = true }, per)
    local singles = {}
    for _, c in ipairs(calls) do
      if c.argv:find("^ssm get%-parameter ") and c.argv:find("us-east-1", 1, true) then singles[#singles + 1] = c end
    end
    assert.is_true(moto.overlapped(singles), "the per-name calls did not overlap")
    srv:reset_log()
    local code, _, stdout, stderr = check(dir, users.guide, { "-v", "-v" })
    assert.equal(69, code)
    assert.truthy(stderr:find("GetParameters was denied in us-east-1; asking for 3 names one by one", 1, true),
      stderr)
    for _, v in ipairs({ "iam-secure-a", "iam-plain-b", "iam-eu-value" }) do
      assert.is_nil((stdout .. stderr):find(v, 1, true))
    end
  end)

  it("tells an identity without SSM rights that access was denied and which grant is missing", function()
    if not need_moto() then return end
    local code, recs, stdout, stderr = check(dir, users.nobody)
    assert.equal(69, code)
    for _, n in ipairs({ "A", "B", "EU", "GONE" }) do
      assert.is_false(recs[n].ok, n)
      assert.equal("permission", recs[n].kind, n)
      assert.truthy(recs[n].fix:find("grant ssm:GetParameter on the parameter", 1, true), recs[n].fix)
    end
    assert.equal("AWS denied access to the parameter in us-east-1", recs.A.reason)
    assert.equal("AWS denied access to the parameter in eu-west-1", recs.EU.reason)
    for _, v in ipairs({ "iam-secure-a", "iam-plain-b", "iam-eu-value" }) do
      assert.is_nil((stdout .. stderr):find(v, 1, true))
    end
  end)

  it("moat secrets check (without --resolve) checks the credentials with one sts call per region", function()
    if not need_moto() then return end
    local code, stdout = t.moat({ "secrets", "check", dir }, { env = users.nobody })
    assert.equal(0, code, stdout)
    -- The references name two regions (the environment's and eu-west-1): one call each.
    assert.same({ ["get-caller-identity"] = 2 }, ops(srv:calls()))
    srv:reset_log()
    code, stdout = t.moat({ "secrets", "check", dir }, { env = srv:env_for({ AWS_ACCESS_KEY_ID = "AKIANOTAUSER0000",
      AWS_SECRET_ACCESS_KEY = "wrong" }) })
    assert.equal(69, code)
    assert.truthy(stdout:find("backend ssm is not usable: AWS rejected the credentials", 1, true), stdout)
    assert.truthy(stdout:find("aws sts get-caller-identity", 1, true), stdout)
    assert.same({ ["get-caller-identity"] = 2 }, ops(srv:calls()))
  end)
end)
