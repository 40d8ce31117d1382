-- The example site backends in examples/backends/, each run through the real pipeline
-- (spec/bench/resolve.lua) against a fake of its CLI in spec/fixtures/bin that prints the real
-- tool's output and error texts and logs every call.
local json = require("moat.c.json")
local moto = require("support.moto")   -- read_log / overlapped for the fakes' call logs
local t = require("support.moat")
local lfs = require("lfs")

local ROOT = MOAT_ROOT
local BIN = t.FAKE_BIN

-- A scratch area with the example installed as moat/backends/<scheme>.lua on the Lua path.
local function setup_area(scheme)
  local dir = t.tmpdir()
  local src = assert(io.open(ROOT .. "/examples/backends/" .. scheme .. ".lua")):read("a")
  t.write(dir .. "/lua/moat/backends/" .. scheme .. ".lua", src)
  return dir
end

local function config(dir, secrets)
  local lines = { "name: ex", "secrets:" }
  for _, s in ipairs(secrets) do lines[#lines + 1] = ("  %s: %q"):format(s[1], s[2]) end
  t.write(dir .. "/ws/moat.yaml", table.concat(lines, "\n") .. "\n")
  return dir .. "/ws"
end

local function data(dir, name, lua_text)
  t.write(dir .. "/" .. name, lua_text)
  return dir .. "/" .. name
end

-- Resolves in a child process; returns { ok, values, by_name }.
local function resolve(dir, ws, env)
  env = env or {}
  env.LUA_PATH_5_4 = dir .. "/lua/?.lua;;"
  env.PATH = env.PATH or (BIN .. ":" .. os.getenv("PATH"))
  local r = t.exec({ "lua5.4", ROOT .. "/spec/bench/resolve.lua", ws, "--values" }, { env = env })
  local out = json.decode(r.stdout)
  assert(out, "driver failed: " .. r.stderr)
  out.by_name = {}
  for _, rec in ipairs(out.records) do out.by_name[rec.name] = rec end
  return out
end

local function calls(log) return moto.read_log(log) end

local ODD = "  spaced = \"quoted\" ünï ✓\nsecond line\n"

describe("examples/backends/vault.lua", function()
  local dir
  before_each(function() dir = setup_area("vault") end)
  after_each(function() t.rmtree(dir) end)

  it("reads fields of KV v2 and v1 secrets, one call per path, paths concurrently", function()
    local df = data(dir, "vault.lua", ([[return {
      ["secret/app"] = { password = %q, user = "admin" },
      ["secret/other"] = { token = "tok-123456" },
      ["kv/legacy"] = { __kv1 = true, key = "v1-value" },
    }]]):format(ODD))
    local ws = config(dir, {
      { "PASS", "vault://secret/app#password" }, { "USER", "vault://secret/data/app#user" },
      { "TOKEN", "vault://secret/other#token" }, { "OLD", "vault://kv/legacy#key" },
      { "MISSING", "vault://secret/nope#x" }, { "NOFIELD", "vault://secret/app#nope" },
    })
    local log = dir .. "/vault.log"
    local out = resolve(dir, ws, { FAKE_VAULT_DATA = df, FAKE_VAULT_LOG = log, FAKE_VAULT_LATENCY_MS = "300" })
    assert.equal(ODD, out.values.PASS)
    assert.equal("admin", out.values.USER)
    assert.equal("tok-123456", out.values.TOKEN)
    assert.equal("v1-value", out.values.OLD)
    assert.equal("not_found", out.by_name.MISSING.kind)
    assert.equal("not_found", out.by_name.NOFIELD.kind)
    local c = calls(log)
    assert.equal(4, #c)   -- secret/app once for two fields
    assert.is_true(moto.overlapped(c))
  end)

  it("maps permission denied, a missing token and an unreachable server", function()
    local ws = config(dir, { { "A", "vault://secret/app#password" } })
    for mode, kind in pairs({ denied = "auth", notoken = "auth", down = "unavailable" }) do
      local out = resolve(dir, ws, { FAKE_VAULT_MODE = mode })
      assert.equal(kind, out.by_name.A.kind, mode)
    end
  end)

  it("refuses malformed references when the plan is built", function()
    local mod = dofile(ROOT .. "/examples/backends/vault.lua")
    assert.is_nil((mod.parse("vault://secret/app")))
    assert.is_nil((mod.parse("vault://secret#x")))
    assert.is_nil((mod.parse("vault://secret/../x#y")))
    assert.same({ mount = "secret", path = "app", field = "p" }, mod.parse("vault://secret/data/app#p"))
  end)
end)

describe("examples/backends/gcpsm.lua", function()
  local dir
  before_each(function() dir = setup_area("gcpsm") end)
  after_each(function() t.rmtree(dir) end)

  it("reads versions byte-exact through --format=json, concurrently", function()
    local df = data(dir, "gcloud.lua", ([[return {
      ["proj-a/db"] = { ["1"] = "old", ["2"] = %q },
      ["proj-a/api"] = "api-key-value",
      ["default-proj/solo"] = "from-default",
    }]]):format(ODD))
    local ws = config(dir, {
      { "DB", "gcpsm://proj-a/db" }, { "DB_OLD", "gcpsm://proj-a/db#1" }, { "API", "gcpsm://proj-a/api" },
      { "SOLO", "gcpsm:///solo" }, { "GONE", "gcpsm://proj-a/gone" },
    })
    local log = dir .. "/gcloud.log"
    local out = resolve(dir, ws, { FAKE_GCLOUD_DATA = df, FAKE_GCLOUD_LOG = log, FAKE_GCLOUD_PROJECT = "default-proj",
      FAKE_GCLOUD_LATENCY_MS = "300" })
    assert.equal(ODD, out.values.DB)
    assert.equal("old", out.values.DB_OLD)
    assert.equal("api-key-value", out.values.API)
    assert.equal("from-default", out.values.SOLO)
    assert.equal("not_found", out.by_name.GONE.kind)
    local c = calls(log)
    assert.equal(5, #c)
    assert.is_true(moto.overlapped(c))
  end)

  it("maps a signed-out gcloud, PERMISSION_DENIED and a missing project", function()
    local ws = config(dir, { { "A", "gcpsm://proj-a/db" }, { "B", "gcpsm:///db" } })
    local out = resolve(dir, ws, { FAKE_GCLOUD_MODE = "signed_out" })
    assert.equal("auth", out.by_name.A.kind)
    assert.truthy(out.by_name.A.fix:find("gcloud auth login", 1, true))
    out = resolve(dir, ws, { FAKE_GCLOUD_MODE = "denied" })
    assert.equal("auth", out.by_name.A.kind)
    out = resolve(dir, ws, { FAKE_GCLOUD_PROJECT = false, CLOUDSDK_CORE_PROJECT = false })
    assert.equal("invalid", out.by_name.B.kind)
  end)
end)

describe("examples/backends/azkv.lua", function()
  local dir
  before_each(function() dir = setup_area("azkv") end)
  after_each(function() t.rmtree(dir) end)

  it("reads secrets and versions, concurrently, and names what is missing", function()
    local df = data(dir, "az.lua", ([[return {
      ["my-vault/db-pass"] = %q,
      ["my-vault/api"] = { ["aa11"] = "old-api", ["bb22"] = "new-api", current = "bb22" },
    }]]):format(ODD))
    local ws = config(dir, {
      { "DB", "azkv://my-vault/db-pass" }, { "API", "azkv://my-vault/api" }, { "API_OLD", "azkv://my-vault/api#aa11" },
      { "GONE", "azkv://my-vault/gone" }, { "NOVAULT", "azkv://other-vault/x" },
    })
    local log = dir .. "/az.log"
    local out = resolve(dir, ws, { FAKE_AZ_DATA = df, FAKE_AZ_LOG = log, FAKE_AZ_LATENCY_MS = "300" })
    assert.equal(ODD, out.values.DB)
    assert.equal("new-api", out.values.API)
    assert.equal("old-api", out.values.API_OLD)
    assert.equal("not_found", out.by_name.GONE.kind)
    assert.equal("not_found", out.by_name.NOVAULT.kind)
    local c = calls(log)
    assert.equal(5, #c)
    assert.is_true(moto.overlapped(c))
  end)

  it("maps a signed-out az and Forbidden", function()
    local df = data(dir, "az.lua", [[return { ["my-vault/x"] = "v" }]])
    local ws = config(dir, { { "A", "azkv://my-vault/x" } })
    local out = resolve(dir, ws, { FAKE_AZ_DATA = df, FAKE_AZ_MODE = "signed_out" })
    assert.equal("auth", out.by_name.A.kind)
    assert.truthy(out.by_name.A.fix:find("az login", 1, true))
    out = resolve(dir, ws, { FAKE_AZ_DATA = df, FAKE_AZ_MODE = "denied" })
    assert.equal("auth", out.by_name.A.kind)
  end)
end)

describe("examples/backends/pass.lua", function()
  local dir
  before_each(function() dir = setup_area("pass") end)
  after_each(function() t.rmtree(dir) end)

  it("takes the first line as the password and KEY: lines by key, one call per entry", function()
    local df = data(dir, "pass.lua", [[return {
      ["work/db"] = "  pw with spaces \nlogin: admin\nurl: https://db.example\n",
      ["solo"] = "only-line",
    }]])
    local ws = config(dir, {
      { "PW", "pass://work/db" }, { "LOGIN", "pass://work/db#login" }, { "SOLO", "pass://solo" },
      { "NOKEY", "pass://work/db#nope" }, { "GONE", "pass://nope/x" },
    })
    local log = dir .. "/pass.log"
    local out = resolve(dir, ws, { FAKE_PASS_DATA = df, FAKE_PASS_LOG = log, FAKE_PASS_LATENCY_MS = "300" })
    assert.equal("  pw with spaces ", out.values.PW)
    assert.equal("admin", out.values.LOGIN)
    assert.equal("only-line", out.values.SOLO)
    assert.equal("not_found", out.by_name.NOKEY.kind)
    assert.equal("not_found", out.by_name.GONE.kind)
    local c = calls(log)
    assert.equal(3, #c)
    assert.is_true(moto.overlapped(c))
    for _, call in ipairs(c) do assert.truthy(call.argv:find("^pass show %-%- ")) end
  end)

  it("maps gpg failures and an empty store", function()
    local df = data(dir, "pass.lua", [[return { ["a"] = "x" }]])
    local ws = config(dir, { { "A", "pass://a" } })
    assert.equal("auth", resolve(dir, ws, { FAKE_PASS_DATA = df, FAKE_PASS_MODE = "nokey" }).by_name.A.kind)
    assert.equal("unavailable", resolve(dir, ws, { FAKE_PASS_DATA = df, FAKE_PASS_MODE = "empty" }).by_name.A.kind)
    assert.is_nil((dofile(ROOT .. "/examples/backends/pass.lua").parse("pass://-rf")))
  end)
end)

describe("examples/backends/file.lua", function()
  local dir
  before_each(function() dir = setup_area("file") end)
  after_each(function() t.rmtree(dir) end)

  local function chmod(mode, path) assert.equal(0, t.exec({ "chmod", mode, path }).code) end

  it("reads private files byte for byte and refuses files others can read, also through symlinks", function()
    t.write(dir .. "/private", ODD)
    chmod("600", dir .. "/private")
    t.write(dir .. "/shared", "shared")
    chmod("644", dir .. "/shared")
    t.write(dir .. "/group", "group")
    chmod("640", dir .. "/group")
    assert(lfs.link(dir .. "/private", dir .. "/link-ok", true))
    assert(lfs.link(dir .. "/shared", dir .. "/link-bad", true))
    local ws = config(dir, {
      { "P", "file://" .. dir .. "/private" }, { "S", "file://" .. dir .. "/shared" },
      { "G", "file://" .. dir .. "/group" }, { "LOK", "file://" .. dir .. "/link-ok" },
      { "LBAD", "file://" .. dir .. "/link-bad" }, { "NONE", "file://" .. dir .. "/none" },
    })
    local out = resolve(dir, ws)
    assert.equal(ODD, out.values.P)
    assert.equal(ODD, out.values.LOK)
    for _, n in ipairs({ "S", "G", "LBAD" }) do
      assert.equal("invalid", out.by_name[n].kind, n)
      assert.truthy(out.by_name[n].fix:find("chmod 600", 1, true))
      assert.is_nil(out.values[n])
    end
    assert.equal("not_found", out.by_name.NONE.kind)
  end)

  it("wants absolute paths", function()
    local mod = dofile(ROOT .. "/examples/backends/file.lua")
    assert.is_nil((mod.parse("file://relative/path")))
    assert.same({ path = "/abs" }, mod.parse("file:///abs"))
  end)
end)
