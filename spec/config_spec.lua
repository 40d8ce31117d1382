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

  it("refuses unknown keys with a did-you-mean and only warns about unimplemented upstream keys", function()
    -- Old code: unknown keys were warnings ("ignored"), so `secret:` silently dropped every secret.
    local cfg, errs = parse("secret:\n  A: b\nports: [8080]\nimgae: x\nenviroment:\n  A: b\nbogus: 1\n")
    assert.is_nil(cfg)
    assert.equal(4, #errs)
    assert.equal("moat.yaml:1:1: unknown key 'secret'; did you mean 'secrets'?", errs[1])
    assert.equal("moat.yaml:4:1: unknown key 'imgae'; did you mean 'image'?", errs[2])
    assert.equal("moat.yaml:5:1: unknown key 'enviroment'; did you mean 'env'?", errs[3])
    assert.matches("^moat.yaml:7:1: unknown key 'bogus'; the keys are name, dependencies, image", errs[4])
    cfg = assert(parse("ports: [8080]\nservices: {db: x}\nhooks: {}\n"))
    assert.equal(3, #cfg.warnings)
    assert.matches("moat.yaml:1:1: 'ports' is known to the upstream moat but not implemented", cfg.warnings[1], 1, true)
    assert.matches("moat.yaml:2:1: 'services' is known to the upstream moat", cfg.warnings[2], 1, true)
  end)

  it("suggests keys within two edits, counting a swap as one", function()
    assert.equal("secrets", config.suggest("secret"))
    assert.equal("secrets", config.suggest("SECRETS"))
    assert.equal("image", config.suggest("imgae"))
    assert.equal("env", config.suggest("enviroment"))
    assert.equal("env", config.suggest("environment"))
    assert.equal("dependencies", config.suggest("dependecies"))
    assert.equal("command", config.suggest("comand"))
    assert.is_nil(config.suggest("zzzzzz"))
    assert.is_nil(config.suggest("ab"))
    assert.equal("cpus", config.suggest("cpu", { "memory", "cpus" }))
  end)

  it("refuses a secret that looks like a broken reference, with file:line:col and the corrected form", function()
    -- Old code: these loaded as plain values and went into the container as the literal text.
    local cfg, errs = parse([[
secrets:
  A: ssm:/app/db
  B: op:/vault/item/field
  C: op//vault/item/field
  D: env:/HOME
  E: " op://vault/item/field"
  F: postgres:5432
  G: op://vault/item/field
]])
    assert.is_nil(cfg)
    assert.equal(5, #errs)
    assert.equal("moat.yaml:2:6: secret A looks like a broken reference: did you mean ssm:///app/db?"
      .. " (a value that only looks like a reference: export it and write A: env://VAR)", errs[1])
    assert.matches("^moat.yaml:3:6: secret B .* did you mean op://vault/item/field%?", errs[2])
    assert.matches("^moat.yaml:4:6: secret C .* did you mean op://vault/item/field%?", errs[3])
    assert.matches("^moat.yaml:5:6: secret D .* did you mean env://HOME%?", errs[4])
    assert.matches("^moat.yaml:6:6: secret E has whitespace around a reference: did you mean op://vault/item/field%?",
      errs[5])
  end)

  it("spots broken references of the schemes it is given", function()
    local _, errs = config.parse("secrets:\n  A: vault:/kv/app\n  B: op:/v/i/f\n", "moat.yaml", "/w",
      { schemes = { "vault" } })
    assert.equal(1, #errs)
    assert.matches("did you mean vault://kv/app?", errs[1], 1, true)
  end)

  it("puts libyaml's common errors in plain words, keeping file:line:col", function()
    -- Old code: "found character that cannot start any token (while scanning for the next token ...)".
    local cases = {
      { "secrets:\n\tA: b\n", "moat.yaml:2:1: tab used for indentation; YAML indents with spaces" },
      { "secrets:\n  A: b\n\tB: c\n", "moat.yaml:3:1: tab used for indentation; YAML indents with spaces" },
      { "secrets:\n  A: b\n B: c\n", "^moat%.yaml:3:2: bad indentation: .*mapping that starts at 1:1" },
      { 'name: "abc\nimage: y\n', "moat.yaml:1:7: unclosed quote: this quoted value has no closing quote" },
      { "name: 'abc\nimage: y\n", "moat.yaml:1:7: unclosed quote: this quoted value has no closing quote" },
      { "name: x\nimage\n", "moat.yaml:2:1: missing ':' after this key (write key: value)" },
      { "name: x\n  image: y\n", "^moat%.yaml:2:8: unexpected ':' here: this line is indented too far" },
      { "command: [a, b\n",
        "^moat%.yaml:2:1: unclosed list: the list that starts at 1:10 needs a ',' between items or a closing ']'" },
      { "a: &x 1\nb: *x\n", "^moat%.yaml:1:4: .*anchor" },
    }
    for _, c in ipairs(cases) do
      local _, errs = parse(c[1])
      if c[2]:sub(1, 1) == "^" then
        assert.matches(c[2], errs[1])
      else
        assert.equal(c[2], errs[1])
      end
    end
  end)

  it("escapes control characters from the file in every message", function()
    -- Old code: the key went to the terminal raw, ESC [2J clearing the screen.
    local _, errs = parse('"\\e[2J": 1\nsecrets:\n  "A\\e]0;x\\a": op://v/i/f\n  B: "op:/v/\\e[31m/f"\n'
      .. 'mounts: ["\\u009b31m:/x"]\n')
    assert.equal(4, #errs)
    for _, e in ipairs(errs) do
      assert.is_nil(e:find("[%z\1-\31\127]"), e)
      assert.is_nil(e:find("\194[\128-\159]"), e)
    end
    local all = table.concat(errs, "\n")
    assert.matches("unknown key '\\x1b[2J'", all, 1, true)
    assert.matches("secrets name 'A\\x1b]0;x\\x07'", all, 1, true)
    local cfg = assert(config.parse("env:\n  A: b\nports: 1\n", "moat\27[2J.yaml", "/w"))
    assert.matches("^moat\\x1b%[2J%.yaml:3:1:", cfg.warnings[1])
    assert.matches("^moat\\x1b%[2J%.yaml:2:6$", cfg.env[1].where)
    assert.equal("a\\x1bb\\u009bc\\x7f", config._escape("a\27b\194\155c\127"))
  end)

  it("keeps config.lua under 400 lines and every config function under 60", function()
    local files = { MOAT_ROOT .. "/lua/moat/config.lua" }
    for name in require("lfs").dir(MOAT_ROOT .. "/lua/moat/config") do
      if name:match("%.lua$") then files[#files + 1] = MOAT_ROOT .. "/lua/moat/config/" .. name end
    end
    for _, path in ipairs(files) do
      local n, start, name = 0, nil, nil
      for line in io.lines(path) do
        n = n + 1
        local fname = line:match("^local function ([%w_.:]+)") or line:match("^function ([%w_.:]+)")
        if fname then start, name = n, fname end
        if start and line:match("^end") then
          assert.is_true(n - start + 1 <= 60, ("%s: %s is %d lines"):format(path, name, n - start + 1))
          start = nil
        end
      end
      if path:match("config%.lua$") then assert.is_true(n <= 400, ("config.lua is %d lines"):format(n)) end
    end
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
