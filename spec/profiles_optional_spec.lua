-- End to end through build/moat on the host runtime with the fake op: profiles (--profile,
-- MOAT_PROFILE, unknown ones), optional secrets and defaults against real failure kinds
-- (not found is tolerated, signed out is not), --env-file, -e NAME and --name.
local t = require("support.moat")
local json = require("moat.c.json")

local DEFAULT = "default-value-xyz"
local DB = "db-value-0123456789"
local PROD = "prod-db-value-987654"
local VALUES = { DEFAULT, DB, PROD, "host-pass-value-42" }

describe("profiles, optional secrets and defaults end to end", function()
  local root, ws, home

  setup(function()
    root = t.tmpdir()
    t.write(root .. "/data.lua", ("return { [%q] = %q, [%q] = %q }"):format(
      "op://v/app/db", DB, "op://prod/app/db", PROD))
  end)
  teardown(function() t.rmtree(root) end)

  before_each(function()
    ws = t.tmpdir()
    home = t.tmpdir()
  end)
  after_each(function()
    t.rmtree(ws)
    t.rmtree(home)
  end)

  local function moat(args, extra)
    local e = { MOAT_HOME = home .. "/moat", HOME = home, XDG_CONFIG_HOME = home .. "/xdg",
      MOAT_SITE_DIR = home .. "/site", MOAT_LUA_PATH = false, MOAT_RUNTIME = false, MOAT_NETWORK = false,
      MOAT_PROFILE = false, PATH = t.fake_path(), FAKE_OP_DATA = root .. "/data.lua", NO_COLOR = "1" }
    for k, v in pairs(extra or {}) do e[k] = v end
    return t.moat(args, { env = e })
  end

  -- Returns the records of the latest run: types, records by type, the raw text.
  local function last_run()
    local lfs = require("lfs")
    local ids = {}
    for n in lfs.dir(home .. "/moat/runs") do if n:sub(1, 1) ~= "." then ids[#ids + 1] = n end end
    table.sort(ids)
    local text = t.slurp(home .. "/moat/runs/" .. ids[#ids] .. "/audit.jsonl")
    local types, recs = {}, t.records(text)
    for _, r in ipairs(recs) do types[#types + 1] = r.type end
    return types, recs, text
  end

  local function no_values(...)
    for _, s in ipairs({ ... }) do
      for _, v in ipairs(VALUES) do assert.is_nil(s:find(v, 1, true), "a value leaked: " .. v) end
    end
  end

  local OPTIONAL = [[
secrets:
  DB: op://v/app/db
  OPT: {ref: op://v/missing-item/x, optional: true}
  DEF: {ref: op://v/app/nofield, default: "default-value-xyz"}
  HOSTOPT: {ref: env://MOAT_SPEC_UNSET_VAR, optional: true}
]]

  it("skips a not-found optional secret and uses a not-found secret's default; check shows them", function()
    t.write(ws .. "/moat.yaml", OPTIONAL)
    local code, out, err = moat({ "secrets", "check", "--resolve", ws })
    assert.equal(0, code, err)
    assert.matches("ok%s+DB%s+op", out)
    assert.matches("skipped%s+OPT%s+op", out)
    assert.matches("default%s+DEF%s+op", out)
    assert.matches("skipped%s+HOSTOPT%s+env", out)
    no_values(out, err)
    local types, _, text = last_run()
    assert.same({ "run.started", "secret.resolved", "secret.skipped", "secret.defaulted", "secret.skipped",
      "run.finished" }, types)
    no_values(text)
    code, out = moat({ "secrets", "check", "--resolve", "--json", ws })
    assert.equal(0, code)
    local list = json.decode(out)
    assert.same({ "ok", "skipped", "defaulted", "skipped" },
      { list[1].outcome, list[2].outcome, list[3].outcome, list[4].outcome })
    assert.equal("not_found", list[2].kind)
  end)

  it("leaves a skipped variable unset and masks a default like any value", function()
    t.write(ws .. "/moat.yaml", OPTIONAL)
    local code, out, err = moat({ "run", "--runtime", "host", "--mask", ws, "--", "sh", "-c",
      'printf "%s|%s|%s|" "${OPT-unset}" "${HOSTOPT-unset}" "$DEF"; printf "%s" "$DEF" > out' })
    assert.equal(0, code, err)
    assert.equal("unset|unset|", out:sub(1, #"unset|unset|"))
    no_values(out, err)
    assert.equal(DEFAULT, t.slurp(ws .. "/out"))
    local types, recs = last_run()
    assert.equal("secret.defaulted", types[4])
    assert.same({ "DEF", "op", "op://v/app/nofield", "defaulted", "not_found" },
      { recs[4].data.name, recs[4].data.backend, recs[4].data.reference, recs[4].data.outcome, recs[4].data.kind })
  end)

  it("fails closed: a signed-out op still fails an optional secret and a defaulted one", function()
    t.write(ws .. "/moat.yaml", "secrets:\n  OPT: {ref: op://v/app/db, optional: true}\n"
      .. "  DEF: {ref: op://v/app/x, default: fallback}\n")
    local code, out, err = moat({ "run", "--runtime", "host", ws, "--", "true" }, { FAKE_OP_SIGNED_OUT = "1" })
    assert.equal(69, code)
    assert.equal("", out)
    assert.matches("OPT (op://v/app/db, backend op): op is not signed in", err, 1, true)
    assert.matches("[auth]", err, 1, true)
    local types, recs = last_run()
    assert.same({ "run.started", "secret.failed", "secret.failed", "run.finished" }, types)
    assert.equal("auth", recs[2].data.kind)
  end)

  it("fails an env:// secret that is not set unless it is optional", function()
    t.write(ws .. "/moat.yaml", "secrets:\n  NEED: env://MOAT_SPEC_UNSET_VAR\n")
    local code, _, err = moat({ "run", "--runtime", "host", ws, "--", "true" })
    assert.equal(69, code)
    assert.matches("NEED (env://MOAT_SPEC_UNSET_VAR, backend env): the host variable", err, 1, true)
  end)

  local PROFILES = [[
name: app
secrets:
  DB: op://v/app/db
  DEV_ONLY: env://MOAT_SPEC_DEV
profiles:
  prod:
    secrets:
      DB: op://prod/app/db
      DEV_ONLY: null
]]

  it("merges --profile (or MOAT_PROFILE) over the base and records it in run.started", function()
    t.write(ws .. "/moat.yaml", PROFILES)
    local script = 'printf "%s|%s" "$DB" "${DEV_ONLY-unset}" > out'
    for _, how in ipairs({ { args = { "--profile", "prod" } }, { env = { MOAT_PROFILE = "prod" } } }) do
      local argv = { "run", "--runtime", "host", ws }
      for _, a in ipairs(how.args or {}) do argv[#argv + 1] = a end
      for _, a in ipairs({ "--", "sh", "-c", script }) do argv[#argv + 1] = a end
      local code, out, err = moat(argv, how.env)
      assert.equal(0, code, err)
      no_values(out, err)
      assert.equal(PROD .. "|unset", t.slurp(ws .. "/out"))
      local _, recs = last_run()
      assert.equal("prod", recs[1].data.profile)
    end
    local code = moat({ "run", "--runtime", "host", ws, "--", "sh", "-c", script }, { MOAT_SPEC_DEV = "d" })
    assert.equal(0, code)
    assert.equal(DB .. "|d", t.slurp(ws .. "/out"))
    local _, recs = last_run()
    assert.is_nil(recs[1].data.profile)
  end)

  it("refuses an unknown profile with exit 78, listing the profiles, before anything runs", function()
    t.write(ws .. "/moat.yaml", PROFILES)
    for _, argv in ipairs({ { "run", "--runtime", "host", "--profile", "staging", ws, "--", "true" },
      { "secrets", "check", "--profile", "staging", ws }, { "config", "--profile", "staging", ws } }) do
      local code, out, err = moat(argv)
      assert.equal(78, code, err)
      assert.equal("", out)
      assert.matches("no profile 'staging'; the profiles are: prod", err, 1, true)
    end
    assert.is_nil(require("lfs").attributes(home .. "/moat/runs"))
  end)

  it("shows where each entry came from with moat config --profile, text and JSON, never a value", function()
    t.write(ws .. "/moat.yaml", PROFILES .. "    runtime: host\n  dev: {}\n")
    local code, out, err = moat({ "config", "--profile", "prod", ws })
    assert.equal(0, code, err)
    assert.matches("profile: prod\n", out, 1, true)
    assert.matches("DB: op://prod/app/db  # profile prod\n", out, 1, true)
    assert.matches("runtime: host  # profile prod\n", out, 1, true)
    assert.is_nil(out:find("DEV_ONLY", 1, true))
    code, out = moat({ "config", "--json", ws }, { MOAT_PROFILE = "prod" })
    assert.equal(0, code)
    local v = json.decode(out)
    assert.same({ "prod", { "prod", "dev" } }, { v.profile, v.profiles })
    assert.equal("profile prod", v.origins.secrets.DB)
    assert.equal("profile prod", v.origins.runtime)
  end)

  it("reads --env-file on run and secrets check; -e NAME passes the host's NAME, audited as env://", function()
    t.write(ws .. "/moat.yaml", "secrets:\n  DB: op://v/app/db\n")
    t.write(root .. "/extra.env", "# extra\nFROM_FILE='from file'\nREF=op://prod/app/db\n")
    local code, out, err = moat({ "secrets", "check", ws, "--env-file", root .. "/extra.env" })
    assert.equal(0, code, err)
    assert.matches("FROM_FILE%s+plain%s+%(plain value%)", out)
    assert.matches("REF%s+op%s+op://prod/app/db", out)
    code, out, err = moat({ "run", "--runtime", "host", "--env-file", root .. "/extra.env", "-e", "HOST_PASS",
      "--name", "custom-name", ws, "--", "sh", "-c", 'printf "%s|%s|%s" "$FROM_FILE" "$REF" "$HOST_PASS" > out' },
      { HOST_PASS = "host-pass-value-42" })
    assert.equal(0, code, err)
    no_values(out, err)
    assert.equal("from file|" .. PROD .. "|host-pass-value-42", t.slurp(ws .. "/out"))
    local _, recs, text = last_run()
    assert.equal("custom-name", recs[1].data.name)
    no_values(text)
    local pass
    for _, r in ipairs(recs) do if r.data.name == "HOST_PASS" then pass = r end end
    assert.same({ "secret.resolved", "env", "env://HOST_PASS" }, { pass.type, pass.data.backend, pass.data.reference })
    code, out = moat({ "audit", "custom-name" })
    assert.equal(0, code)
    assert.matches("name=custom-name", out, 1, true)
  end)

  it("refuses a bad --name and a --env-file that is not a regular file", function()
    t.write(ws .. "/moat.yaml", "name: x\n")
    local code, _, err = moat({ "run", "--runtime", "host", "--name", "-bad", ws, "--", "true" })
    assert.equal(64, code)
    assert.matches("--name must be letters", err, 1, true)
    code, _, err = moat({ "run", "--runtime", "host", "--env-file", root, ws, "--", "true" })
    assert.equal(78, code)
    assert.matches("--env-file: env file " .. root .. " is a directory", err, 1, true)
  end)
end)
