-- The example policies in examples/policies/, run by moat.policy on plans built the way
-- moat.plan builds them.
local policy = require("moat.policy")
local ssm = require("moat.backends.ssm")

local ROOT = MOAT_ROOT

local function run(name, plan)
  local scripts = { { path = ROOT .. "/examples/policies/" .. name, kind = "site" } }
  local ok, denials = policy.check(plan, { scripts = scripts, warn = function() end })
  return ok, denials or {}
end

local function plan(secrets, extra)
  local p = { name = "p", workspace = "/w", image = "i", env = {}, mounts = {}, secrets = secrets }
  for k, v in pairs(extra or {}) do p[k] = v end
  return p
end

local function ref(name, r, backend, parsed)
  return { name = name, ref = r, backend = backend, plain = false, parsed = parsed or {} }
end

local function plain(name)
  return { name = name, ref = "(plain value)", backend = "plain", plain = true, parsed = {} }
end

local function targets(denials)
  local out = {}
  for _, d in ipairs(denials) do out[#out + 1] = d.target end
  table.sort(out)
  return out
end

describe("examples/policies/no-plain-secrets.lua", function()
  it("denies plain values and env entries with credential-like names only", function()
    local ok, denials = run("no-plain-secrets.lua", plan({
      plain("API_KEY"), plain("DB_PASSWORD"), plain("LOG_LEVEL"), ref("GH_TOKEN", "op://v/i/f", "op"),
    }, { env = { { name = "AWS_SECRET", value = "x" }, { name = "DEBUG", value = "1" } } }))
    assert.is_nil(ok)
    assert.same({ "API_KEY", "AWS_SECRET", "DB_PASSWORD" }, targets(denials))
  end)

  it("passes a plan whose credentials all come from backends", function()
    assert.is_true((run("no-plain-secrets.lua", plan({ ref("API_KEY", "op://v/i/f", "op"), plain("REGION") }))))
  end)
end)

describe("examples/policies/allowed-sources.lua", function()
  it("allows listed 1Password vaults and SSM prefixes, in any region and case of vault", function()
    local ok = run("allowed-sources.lua", plan({
      ref("A", "op://Engineering/db/password", "op"),
      ref("B", "op://ci/deploy/token", "op"),
      ref("C", "ssm:///team/app/db", "ssm", ssm.parse("ssm:///team/app/db")),
      ref("D", "ssm://eu-west-1/shared/ci/key:3", "ssm", ssm.parse("ssm://eu-west-1/shared/ci/key:3")),
      plain("E"),
    }))
    assert.is_true(ok)
  end)

  it("denies other vaults, other prefixes, look-alike prefixes and other backends", function()
    local ok, denials = run("allowed-sources.lua", plan({
      ref("A", "op://Personal/x/y", "op"),
      ref("B", "ssm:///team/application/x", "ssm", ssm.parse("ssm:///team/application/x")),
      ref("C", "ssm:///other/x", "ssm", ssm.parse("ssm:///other/x")),
      ref("D", "env://HOME", "env"),
      ref("E", "op://Engineering/db/password", "op"),
    }))
    assert.is_nil(ok)
    assert.same({ "A", "B", "C", "D" }, targets(denials))
    assert.truthy(denials[1].reason:find("Personal", 1, true))
  end)
end)

describe("examples/policies/no-host-runtime.lua", function()
  it("denies the host runtime and allows the others and the automatic choice", function()
    local ok, denials = run("no-host-runtime.lua", plan({}, { runtime = "host" }))
    assert.is_nil(ok)
    assert.same({ "runtime" }, targets(denials))
    for _, rt in ipairs({ "docker", "podman", "bwrap" }) do
      assert.is_true((run("no-host-runtime.lua", plan({}, { runtime = rt }))), rt)
    end
    assert.is_true((run("no-host-runtime.lua", plan({}))))
  end)
end)
