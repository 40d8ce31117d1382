local config = require("moat.config")
local plan = require("moat.plan")

local function cfg_of(text)
  return assert(config.parse(text, "moat.yaml", "/work/space"))
end

-- Runs plan.build expecting a failure; returns the exit code of its kind and its message.
local function build_fails(cfg, extra)
  local p, msg, kind = plan.build(cfg, extra)
  assert.is_nil(p)
  assert.is_string(msg)
  return require("moat.exit").OF_KIND[kind], msg
end

describe("moat.plan", function()
  it("parses references per backend and keeps plain values out of the plan", function()
    local p, plain = plan.build(cfg_of([[
name: demo
env:
  MODE: fast
secrets:
  DB: op://prod/db/password
  SECTIONED: op://prod/db/admin/password?attribute=otp
  HOSTVAR: env://SOME_VAR
  GREETING: hello world
]]))
    assert.equal("demo", p.name)
    assert.equal("/work/space", p.workspace)
    assert.same({ { name = "MODE", value = "fast", where = "moat.yaml:3:9" } }, p.env)
    local s = p.secrets
    assert.equal(4, #s)
    assert.same({ "op", "op", "env", "plain" }, { s[1].backend, s[2].backend, s[3].backend, s[4].backend })
    assert.same({ vault = "prod", item = "db", field = "password" }, s[1].parsed)
    assert.same({ vault = "prod", item = "db", section = "admin", field = "password", query = "attribute=otp" },
      s[2].parsed)
    assert.same({ var = "SOME_VAR" }, s[3].parsed)
    assert.equal("moat.yaml:5:7", s[1].where)
    assert.is_false(s[1].plain)
    assert.is_true(s[4].plain)
    assert.same({ GREETING = "hello world" }, plain)
    -- the plan is what policies, dry runs and audit see: no plain value in it
    assert.not_equal("hello world", s[4].ref)
    assert.is_nil(require("moat.c.json").encode(s[4]):find("hello world", 1, true))
  end)

  it("adds --secret entries and lets them override the config; -e joins env", function()
    local p = plan.build(cfg_of([[
env:
  MODE: slow
secrets:
  A: op://v/i/a
  B: op://v/i/b
]]), { secrets = { "B=env://OTHER", "C=op://v/i/c" }, env = { "MODE=fast", "EXTRA=a=b" } })
    assert.equal(3, #p.secrets)
    assert.equal("op://v/i/a", p.secrets[1].ref)
    assert.equal("env://OTHER", p.secrets[2].ref)
    assert.equal("env", p.secrets[2].backend)
    assert.equal("--secret", p.secrets[2].where)
    assert.equal("C", p.secrets[3].name)
    assert.same({ { name = "MODE", value = "fast" }, { name = "EXTRA", value = "a=b" } },
      { { name = p.env[1].name, value = p.env[1].value }, { name = p.env[2].name, value = p.env[2].value } })
  end)

  it("refuses an unknown scheme naming it, listing the known backends and suggesting env://", function()
    local code, msg = build_fails(cfg_of([[
secrets:
  DB_URL: postgres://admin:hunter2-pass@db/app
]]))
    assert.equal(78, code)
    assert.matches("unknown scheme 'postgres://'", msg, 1, true)
    assert.matches("moat.yaml:2:11", msg, 1, true)
    assert.matches("known backends: [^)]*env", msg)
    assert.matches("[^)]*op[,)]", msg)
    assert.matches("env://VAR", msg, 1, true)
    assert.is_nil(msg:find("hunter2", 1, true))
  end)

  it("reports every malformed reference at once, each with why", function()
    local code, msg = build_fails(cfg_of([[
secrets:
  A: op://vault/item
  B: "op://vault//field"
  C: env://1BAD
  E: op://v/i/f?attribute
  F: "op://v/i{/f"
  OK: op://v/i/f
]]), { secrets = { "G=op://v/i/f\1x" } })
    assert.equal(78, code)
    assert.matches("6 problems", msg, 1, true)
    assert.matches("secret A: malformed op reference 'op://vault/item': must be op://vault/item/field", msg, 1, true)
    assert.matches("secret B: .*empty", msg)
    assert.matches("secret C: .*not a variable name", msg)
    assert.matches("secret E: .*key=value", msg)
    assert.matches("secret F: .*use the ID", msg)
    assert.matches("secret G: .*control characters", msg)
    assert.matches("\\x01", msg, 1, true)
    assert.is_nil(msg:find("secret OK", 1, true))
  end)

  it("refuses a URL-like value without a valid scheme", function()
    local code, msg = build_fails(cfg_of([[
secrets:
  X: "my pass://word"
]]))
    assert.equal(78, code)
    assert.matches("secret X looks like a URL", msg, 1, true)
    assert.is_nil(msg:find("my pass", 1, true))
  end)

  it("warns about plain values with sensitive names and hints at grants", function()
    local p = plan.build(cfg_of([[
secrets:
  API_KEY: abc
  db_password: abc
  GREETING: hi
  GITHUB_TOKEN: op://v/github/token
  AWS_SECRET_ACCESS_KEY: env://AWS_SECRET_ACCESS_KEY
]]))
    local text = table.concat(p.warnings, "\n")
    assert.matches("secret API_KEY is a plain value", text, 1, true)
    assert.matches("secret db_password is a plain value", text, 1, true)
    assert.is_nil(text:find("GREETING", 1, true))
    assert.matches("GITHUB_TOKEN is a credential for GitHub.*network%-layer injection", text)
    assert.matches("AWS_SECRET_ACCESS_KEY is a credential for AWS", text, 1, true)
    assert.is_nil(text:find("secret GITHUB_TOKEN is a plain", 1, true))
  end)

  it("refuses malformed options and names", function()
    local cfg = cfg_of([[
env:
  MODE: x
secrets:
  A: op://v/i/a
]])
    local code, msg = build_fails(cfg, { secrets = { "NOEQUALS" } })
    assert.equal(64, code)
    assert.matches("--secret 'NOEQUALS' must be NAME=REF", msg, 1, true)
    -- Typed on the command line: usage errors quoting what was typed.
    code, msg = build_fails(cfg, { secrets = { "PATH=op://v/i/f" } })
    assert.equal(64, code)
    assert.matches("--secret PATH=op://v/i/f: 'PATH' is reserved", msg, 1, true)
    code, msg = build_fails(cfg, { secrets = { "X=" } })
    assert.equal(64, code)
    assert.matches("--secret X=: the reference is empty", msg, 1, true)
    code, msg = build_fails(cfg, { env = { "1FOO=bar" } })
    assert.equal(64, code)
    assert.matches("-e 1FOO=bar: '1FOO' is not a valid environment variable name", msg, 1, true)
    assert.is_nil(msg:find("with secrets", 1, true))
    code, msg = build_fails(cfg, { secrets = { "MODE=op://v/i/m" }, env = { "A=1" } })
    assert.equal(78, code)
    assert.matches("MODE is both a plain environment variable and a secret", msg, 1, true)
    assert.matches("A is both a plain environment variable and a secret", msg, 1, true)
  end)

  it("carries the config's warnings and fields into the plan", function()
    local p = plan.build(cfg_of([[
image: alpine
command: [sh]
runtime: host
mounts: [ "/a:/b:ro" ]
ports: [8080]
]]))
    assert.equal("alpine", p.image)
    assert.same({ "sh" }, p.command)
    assert.equal("host", p.runtime)
    assert.equal("/b", p.mounts[1].container)
    assert.matches("'ports' is known to the upstream moat", p.warnings[1], 1, true)
    assert.same({}, p.secrets)
  end)
end)

describe("moat.plan passthrough, optional secrets and defaults", function()
  it("turns -e NAME into the secret NAME: env://NAME, replacing a config entry; -e NAME=VALUE stays env", function()
    local p = plan.build(cfg_of([[
env:
  MODE: slow
  HOST_USER: nobody
secrets:
  TOKEN: op://v/i/t
]]), { env = { "HOST_USER", "TOKEN", "NEW_ONE", "MODE=fast" } })
    assert.same({ { name = "MODE", value = "fast" } }, { { name = p.env[1].name, value = p.env[1].value } })
    assert.equal(1, #p.env)
    local s = {}
    for _, e in ipairs(p.secrets) do s[e.name] = e end
    assert.same({ "env://TOKEN", "env", "-e" }, { s.TOKEN.ref, s.TOKEN.backend, s.TOKEN.where })
    assert.same({ var = "HOST_USER" }, s.HOST_USER.parsed)
    assert.equal("env://NEW_ONE", s.NEW_ONE.ref)
    assert.equal(3, #p.secrets)
  end)

  it("refuses -e with a name moat must not set, as a usage error checked before anything loads", function()
    local code, msg = build_fails(cfg_of(""), { env = { "LD_PRELOAD" } })
    assert.equal(64, code)
    assert.matches("-e LD_PRELOAD: 'LD_PRELOAD' is reserved", msg, 1, true)
    code, msg = build_fails(cfg_of(""), { env = { "9X" } })
    assert.equal(64, code)
    assert.matches("-e 9X: '9X' is not a valid", msg, 1, true)
    assert.matches("'9X' is not a valid", plan.usage({ env = { "9X" } }), 1, true)
    assert.matches("the reference is empty", plan.usage({ secrets = { "A=" } }), 1, true)
    assert.is_nil(plan.usage({ env = { "HOMEY", "A=1" }, secrets = { "B=op://v/i/f" } }))
    -- A typo in a typed reference is never a plain value.
    for bad, fixed in pairs({ ["X=ssm:/prod/db"] = "ssm:///prod/db", ["X=op//v/i/f"] = "op://v/i/f",
      ["X= op://v/i/f"] = "op://v/i/f", ["X=env:/HOME"] = "env://HOME" }) do
      assert.matches("did you mean " .. fixed .. "?", plan.usage({ secrets = { bad } }), 1, true)
    end
    assert.is_nil(plan.usage({ secrets = { "X=postgres:5432" } }))
  end)

  it("marks optional secrets and defaults, keeping a default's value beside the plan", function()
    local p, plain = plan.build(cfg_of([[
secrets:
  A: {ref: op://v/i/a, optional: true}
  B: {ref: env://B_VAR, default: "the-default-value"}
  C: {ref: plain-value, default: "unused"}
]]))
    local s = p.secrets
    assert.is_true(s[1].optional)
    assert.is_nil(s[1].has_default)
    assert.is_true(s[2].has_default)
    assert.is_nil(s[3].has_default)
    assert.same({ B = "the-default-value", C = "plain-value" }, plain)
    local enc = require("moat.c.json").encode(p)
    assert.is_nil(enc:find("the-default-value", 1, true))
    assert.is_nil(enc:find("plain-value", 1, true))
  end)

  it("carries each secret's origin from the config (profile, env file)", function()
    local cfg = assert(config.parse("secrets:\n  A: env://A\nprofiles:\n  p:\n    secrets:\n      B: env://B\n",
      "moat.yaml", "/work/space", { profile = "p" }))
    local p = plan.build(cfg)
    assert.same({ "config", "profile p" }, { p.secrets[1].from, p.secrets[2].from })
  end)
end)
