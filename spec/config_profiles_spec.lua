-- Profiles, map-form secrets (optional, default), env_files and network in config.parse.
local config = require("moat.config")

local function parse(text, profile)
  return config.parse(text, "moat.yaml", "/work/space", { profile = profile })
end

local function by_name(list)
  local out = {}
  for _, e in ipairs(list) do out[e.name] = e end
  return out
end

local BASE = [[
image: base:1
runtime: docker
network: private
env:
  MODE: dev
  DEBUG: "1"
secrets:
  DB: op://dev/db/password
  LOCAL_ONLY: env://LOCAL_TOKEN
  API: {ref: op://dev/api/key, optional: true}
mounts:
  - data:/data
env_files: [.env]
profiles:
  prod:
    image: base:2
    runtime: podman
    network: none
    env:
      MODE: prod
      DEBUG: null
    secrets:
      DB: op://prod/db/password
      LOCAL_ONLY: null
      EXTRA: {ref: ssm:///prod/extra, default: "fallback"}
    mounts:
      - /srv/prod:/data:ro
      - cache:/cache
    env_files: [prod.env]
  ci:
    secrets:
      CI_TOKEN: env://CI_TOKEN
]]

describe("config profiles", function()
  it("keeps every profile raw and leaves the base alone without --profile", function()
    local cfg = assert(parse(BASE))
    assert.is_nil(cfg.profile)
    assert.same({ "prod", "ci" }, cfg.profile_names)
    assert.equal("base:1", cfg.image)
    assert.equal("docker", cfg.runtime)
    assert.equal(3, #cfg.secrets)
    local prod = cfg.profiles.prod
    assert.equal("moat.yaml:16:5", prod.where)
    assert.equal("base:2", prod.image)
    assert.equal("none", prod.network)
    assert.same({ name = "LOCAL_ONLY", remove = true, where = "moat.yaml:24:19" }, by_name(prod.secrets).LOCAL_ONLY)
    assert.same({ name = "DEBUG", remove = true, where = "moat.yaml:21:14" }, by_name(prod.env).DEBUG)
    assert.same({ { path = "prod.env", file = "/work/space/prod.env", where = "moat.yaml:29:17" } }, prod.env_files)
    assert.same({ { path = ".env", file = "/work/space/.env", where = "moat.yaml:13:13" } }, cfg.env_files)
  end)

  it("merges the profile over the base name by name, null removing, and says where each came from", function()
    local raw = assert(parse(BASE, "prod"))
    -- the top level stays the file's own words, for trust
    assert.equal("docker", raw.runtime)
    assert.equal(3, #raw.secrets)
    assert.is_nil(raw.profile)
    local cfg = raw.effective
    assert.equal("prod", cfg.profile)
    assert.equal("base:2", cfg.image)
    assert.equal("podman", cfg.runtime)
    assert.equal("none", cfg.network)
    assert.same({ image = "profile prod", runtime = "profile prod", network = "profile prod" }, cfg.from)
    local s = by_name(cfg.secrets)
    assert.equal("op://prod/db/password", s.DB.ref)
    assert.equal("profile prod", s.DB.from)
    assert.is_nil(s.LOCAL_ONLY)
    assert.equal("config", s.API.from)
    assert.is_true(s.API.optional)
    assert.equal("fallback", s.EXTRA.default)
    -- a replaced entry keeps its place; new ones follow
    assert.same({ "DB", "API", "EXTRA" }, { cfg.secrets[1].name, cfg.secrets[2].name, cfg.secrets[3].name })
    local e = by_name(cfg.env)
    assert.equal("prod", e.MODE.value)
    assert.is_nil(e.DEBUG)
    assert.equal(2, #cfg.mounts)
    assert.same({ "/srv/prod", "/data", true, "profile prod" },
      { cfg.mounts[1].host, cfg.mounts[1].container, cfg.mounts[1].ro, cfg.mounts[1].from })
    assert.equal("/work/space/cache", cfg.mounts[2].host)
    -- the file's own guarded part stays as written, for trust
    assert.equal(3, #cfg.base.secrets)
    assert.equal("docker", cfg.base.runtime)
    assert.equal(1, #cfg.env_files)
  end)

  it("refuses an unknown profile, listing the profiles and the closest one", function()
    local cfg, errs = parse(BASE, "prd")
    assert.is_nil(cfg)
    assert.equal("moat.yaml: no profile 'prd' (did you mean 'prod'?); the profiles are: prod, ci", errs[1])
    cfg, errs = parse("name: x\n", "prod")
    assert.is_nil(cfg)
    assert.matches("no profile 'prod'; this config defines no profiles", errs[1], 1, true)
  end)

  it("checks profiles like the base: keys, values, names", function()
    local cfg, errs = parse([[
profiles:
  bad:
    imgae: x
    command: [sh]
    runtime: vm
    secrets:
      PATH: op://a/b/c
      X: op:/v/i/f
  "-x": {}
  list: [1, 2]
]])
    assert.is_nil(cfg)
    local all = table.concat(errs, "\n")
    assert.matches("moat.yaml:3:5: profile bad: 'imgae' cannot be set in a profile; did you mean 'image'?", all,
      1, true)
    assert.matches("moat.yaml:4:5: profile bad: 'command' cannot be set in a profile", all, 1, true)
    assert.matches("moat.yaml:5:14: runtime 'vm' is not one of", all, 1, true)
    assert.matches("moat.yaml:7:7: secrets name 'PATH' is reserved", all, 1, true)
    assert.matches("moat.yaml:8:10: secret X looks like a broken reference: did you mean op://v/i/f?", all, 1, true)
    assert.matches("moat.yaml:9:3: profile name '-x' must be", all, 1, true)
    assert.matches("moat.yaml:10:9: profile list must be a mapping", all, 1, true)
  end)

  it("refuses null outside a profile and a removal of nothing inside one", function()
    local _, errs = parse("secrets:\n  A: null\n")
    assert.matches("moat.yaml:2:6: secret A has no reference", errs[1], 1, true)
    local cfg
    cfg, errs = parse("secrets:\n  A: env://A\nprofiles:\n  p:\n    secrets:\n      B: ~\n", "p")
    assert.is_nil(cfg)
    assert.matches("moat.yaml:6:10: profile p secrets: null removes a base entry, but the base has no B", errs[1],
      1, true)
  end)

  it("reports a name a profile puts in both env and secrets", function()
    local cfg, errs = parse("env:\n  A: x\nprofiles:\n  p:\n    secrets:\n      A: env://A\n", "p")
    assert.is_nil(cfg)
    assert.matches("moat.yaml:6:10: A is in both env (at moat.yaml:2:6) and secrets; keep one", errs[1], 1, true)
    assert.is_truthy(parse("env:\n  A: x\nprofiles:\n  p:\n    env: {A: null}\n    secrets:\n      A: env://A\n",
      "p"))
  end)
end)

describe("config map-form secrets", function()
  it("reads ref with optional or default", function()
    local cfg = assert(parse([[
secrets:
  A: {ref: op://v/i/a, optional: true}
  B:
    ref: env://B
    default: ""
  C: {ref: op://v/i/c, default: 8080}
  D: {ref: op://v/i/d, optional: false}
]]))
    local s = by_name(cfg.secrets)
    assert.same({ name = "A", ref = "op://v/i/a", where = "moat.yaml:2:12", optional = true }, s.A)
    assert.equal("", s.B.default)
    assert.equal("8080", s.C.default)
    assert.is_nil(s.D.optional)
  end)

  it("refuses a map without ref, unknown keys, both optional and default, and bad values", function()
    local cfg, errs = parse([[
secrets:
  A: {optional: true}
  B: {ref: op://v/i/b, optonal: true}
  C: {ref: op://v/i/c, optional: true, default: x}
  D: {ref: op://v/i/d, optional: yes}
  E: {ref: op://v/i/e, default: [1]}
  F: {ref: "ssm:/x", default: ok}
]])
    assert.is_nil(cfg)
    local all = table.concat(errs, "\n")
    assert.matches("moat.yaml:2:6: secret A: the mapping form needs ref:", all, 1, true)
    assert.matches("moat.yaml:3:24: secret B: unknown key 'optonal'; did you mean 'optional'?", all, 1, true)
    assert.matches("secret C: optional and default contradict", all, 1, true)
    assert.matches("moat.yaml:5:34: secret D: optional must be true or false", all, 1, true)
    assert.matches("moat.yaml:6:33: secret E: default must be a scalar value", all, 1, true)
    assert.matches("secret F looks like a broken reference: did you mean ssm:///x?", all, 1, true)
    assert.equal(6, #errs)
  end)
end)

describe("config env_files and network", function()
  it("resolves env_files against the config file's directory", function()
    local cfg = assert(config.parse("env_files: [a.env, /abs/b.env, ../c.env]\n", "cfg/moat.yaml", "/work/space",
      { base = "/home/u/cfg" }))
    assert.same({ "/home/u/cfg/a.env", "/abs/b.env", "/home/u/cfg/../c.env" },
      { cfg.env_files[1].file, cfg.env_files[2].file, cfg.env_files[3].file })
    assert.equal("a.env", cfg.env_files[1].path)
  end)

  it("refuses env_files that are not a list of paths", function()
    local _, errs = parse("env_files: .env\n")
    assert.matches("moat.yaml:1:12: env_files must be a list of strings", errs[1], 1, true)
    _, errs = parse("env_files: [\"\"]\n")
    assert.matches("env_files entries must be non-empty paths", errs[1], 1, true)
  end)

  it("takes network private, none or host", function()
    assert.equal("none", assert(parse("network: none\n")).network)
    local _, errs = parse("network: bridge\n")
    assert.matches("moat.yaml:1:10: network 'bridge' is not one of private, none, host", errs[1], 1, true)
  end)

  it("picks the profile from --profile, else a non-empty MOAT_PROFILE", function()
    assert.equal("a", config.chosen_profile("a", { MOAT_PROFILE = "b" }))
    assert.equal("b", config.chosen_profile(nil, { MOAT_PROFILE = "b" }))
    assert.is_nil(config.chosen_profile(nil, { MOAT_PROFILE = "" }))
    assert.is_nil(config.chosen_profile(nil, {}))
  end)
end)

describe("config network from the upstream moat", function()
  it("warns about and ignores a network mapping (the upstream policy form)", function()
    local cfg = assert(parse("network:\n  policy: strict\n  allow: [api.github.com]\n"))
    assert.is_nil(cfg.network)
    assert.matches("moat.yaml:2:3: network as a mapping", cfg.warnings[1], 1, true)
  end)
end)
