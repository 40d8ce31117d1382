local config = require("moat.config")

local function parse(text)
  return config.parse(text, "moat.yaml", "/work/space")
end

describe("moat.config", function()
  it("normalizes a full config", function()
    local cfg, errs = parse([[
name: demo
image: python:3.11-slim
command: [python, -m, app]
env:
  DEBUG: 1
  MODE: "fast mode"
secrets:
  DB_PASS: op://prod/db/password
  API: ssm:///app/api
mounts:
  - data:/data:ro
  - /srv/cache:/cache
runtime: podman
interactive: true
container:
  memory: 512
  cpus: 1.5
]])
    assert.is_nil(errs)
    assert.equal("demo", cfg.name)
    assert.equal("python:3.11-slim", cfg.image)
    assert.same({ "python", "-m", "app" }, cfg.command)
    assert.equal("DEBUG", cfg.env[1].name)
    assert.equal("1", cfg.env[1].value)
    assert.equal("fast mode", cfg.env[2].value)
    assert.equal("op://prod/db/password", cfg.secrets[1].ref)
    assert.equal("moat.yaml:8:12", cfg.secrets[1].where)
    assert.same({ host = "/work/space/data", container = "/data", ro = true, where = "moat.yaml:11:5" },
      cfg.mounts[1])
    assert.is_false(cfg.mounts[2].ro)
    assert.equal("podman", cfg.runtime)
    assert.is_true(cfg.interactive)
    assert.same({ memory = 512, cpus = 1.5 }, cfg.container)
    assert.same({}, cfg.warnings)
  end)

  it("defaults the name to the workspace directory", function()
    local cfg = assert(parse(""))
    assert.equal("space", cfg.name)
    assert.same({}, cfg.secrets)
  end)

  it("reports every problem at once with file:line:col", function()
    local cfg, errs = parse([[
name: [not, a, string]
image: -v/etc:/host
command: npm start
env:
  PATH: /usr/bin
  9LIVES: x
  OK: ~
secrets:
  LD_PRELOAD: op://v/i/f
  http_proxy: env://X
runtime: vm
interactive: maybe
container:
  memory: lots
grants: [github]
]])
    assert.is_nil(cfg)
    local all = table.concat(errs, "\n")
    assert.equal(12, #errs)
    assert.matches("moat.yaml:1:7: name must be a string, not a list", all, 1, true)
    assert.matches("moat.yaml:2:8: image must not start with '-'", all, 1, true)
    assert.matches("moat.yaml:3:10: command must be a list of strings", all, 1, true)
    assert.matches("moat.yaml:5:3: env name 'PATH' is reserved", all, 1, true)
    assert.matches("moat.yaml:6:3: env name '9LIVES' is not a valid", all, 1, true)
    assert.matches("moat.yaml:7:7: env OK has no value", all, 1, true)
    assert.matches("moat.yaml:9:3: secrets name 'LD_PRELOAD' is reserved", all, 1, true)
    assert.matches("moat.yaml:10:3: secrets name 'http_proxy' is reserved", all, 1, true)
    assert.matches("moat.yaml:11:10: runtime 'vm' is not one of", all, 1, true)
    assert.matches("moat.yaml:12:14: interactive must be true or false", all, 1, true)
    assert.matches("moat.yaml:14:11: container.memory must be a whole number", all, 1, true)
    assert.matches("moat.yaml:15:9: grants .- not provided by this moat; list the credentials under secrets:", all)
  end)

  it("refuses a name in both env and secrets", function()
    local _, errs = parse("env:\n  TOKEN: a\nsecrets:\n  TOKEN: env://T\n")
    assert.equal(1, #errs)
    assert.equal("moat.yaml:4:10: TOKEN is in both env (at moat.yaml:2:10) and secrets; keep one", errs[1])
  end)

  it("warns about unknown keys with a did-you-mean and about unimplemented upstream keys", function()
    local cfg = assert(parse("secret:\n  A: b\nports: [8080]\nimgae: x\n"))
    assert.equal("moat.yaml:1:1: unknown key 'secret' ignored (did you mean 'secrets'?)", cfg.warnings[1])
    assert.matches("moat.yaml:3:1: 'ports' is known to the upstream moat but not implemented", cfg.warnings[2], 1, true)
    assert.equal("moat.yaml:4:1: unknown key 'imgae' ignored (did you mean 'image'?)", cfg.warnings[3])
  end)

  it("passes YAML errors through with their position", function()
    local _, errs = parse("a: &x 1\nb: *x\n")
    assert.matches("^moat.yaml:1:4: .*anchor", errs[1])
  end)

  it("validates mounts and dependencies", function()
    local _, errs = parse("mounts: [nocolon, 'a:relative', 'a:/b:rx']\ndependencies: [python3.11, node@20]\n")
    assert.equal(4, #errs)
    assert.matches("must be host:container", errs[1], 1, true)
    assert.matches("container path must be absolute", errs[2], 1, true)
    assert.matches("mode must be ro or rw", errs[3], 1, true)
    assert.matches("must look like lang@version", errs[4], 1, true)
  end)

  it("resolves plain scalars by the YAML 1.2 core schema", function()
    local t = function(v, plain) return config.scalar_type({ kind = "scalar", value = v, plain = plain ~= false }) end
    assert.equal("null", t("~"))
    assert.equal("bool", t("True"))
    assert.equal("int", t("-12"))
    assert.equal("float", t("1.5e3"))
    assert.equal("str", t("yes"))
    assert.equal("str", t("true", false))
  end)

  it("checks names against the reserved list", function()
    assert.is_nil(config.check_name("GITHUB_TOKEN"))
    assert.truthy(config.check_name("DOCKER_HOST"))
    assert.truthy(config.check_name("No_Proxy"))
    assert.truthy(config.check_name("XDG_RUNTIME_DIR"))
    assert.truthy(config.check_name("A-B"))
  end)
end)
