-- The guarded part of a workspace config takes effect only once trusted (DESIGN §3, SECURITY 15),
-- and a workspace may never be where moat keeps its own state (SECURITY 17).
local t = require("support.moat")

describe("trusted workspace config", function()
  local dir, ws, env
  before_each(function()
    dir = t.tmpdir()
    ws = dir .. "/ws"
    t.write(ws .. "/moat.yaml", "name: agent\nsecrets:\n  GREETING: env://MOAT_T_GREETING\n")
    env = { HOME = dir .. "/home", MOAT_HOME = dir .. "/home/.moat", XDG_CONFIG_HOME = dir .. "/home/.config",
      MOAT_SITE_DIR = dir .. "/site", MOAT_LUA_PATH = false, MOAT_T_GREETING = "hello-greeting",
      MOAT_T_HOSTKEY = "host-secret-value-123" }
    require("lfs").mkdir(dir .. "/home")
  end)
  after_each(function() t.rmtree(dir) end)

  local function run(extra)
    os.remove(dir .. "/out")
    local args = { "run", "--no-mask", "--runtime", "host", ws }
    for _, a in ipairs(extra or {}) do args[#args + 1] = a end
    for _, a in ipairs({ "--", "sh", "-c", 'printf "%s|%s" "$GREETING" "$AWS" > ' .. dir .. "/out" }) do
      args[#args + 1] = a
    end
    return t.moat(args, { env = env, trust = false })
  end

  it("refuses a first run with 77, listing what trust would allow, until moat trust", function()
    local code, _, err = run()
    assert.equal(77, code, err)
    assert.matches("+ secret GREETING: env://MOAT_T_GREETING", err, 1, true)
    assert.is_false(t.exists(dir .. "/out"), "the command ran")
    code, err = t.moat({ "trust", ws }, { env = env, trust = false })
    assert.equal(0, code, err)
    code, _, err = run()
    assert.equal(0, code, err)
    assert.equal("hello-greeting|", t.read(dir .. "/out"))
  end)

  it("refuses each edit an agent could make to choose secrets or reach the host, naming it", function()
    assert.equal(0, (t.moat({ "trust", ws }, { env = env, trust = false })))
    local edits = {
      { "  BANK: op://Private/Bank/password\n", "+ secret BANK: op://Private/Bank/password" },
      { "  AWS: env://MOAT_T_HOSTKEY\n", "+ secret AWS: env://MOAT_T_HOSTKEY" },
      { "  PLAIN: some-plain-thing\n", "+ secret PLAIN: (plain value)" },
    }
    for _, e in ipairs(edits) do
      t.write(ws .. "/moat.yaml", "name: agent\nsecrets:\n  GREETING: env://MOAT_T_GREETING\n" .. e[1])
      local code, _, err = run()
      assert.equal(77, code, err)
      assert.matches(e[2], err, 1, true)
      assert.is_nil(err:find("host-secret-value-123", 1, true))
      assert.is_nil(err:find("some-plain-thing", 1, true))
      assert.is_false(t.exists(dir .. "/out"), "the command ran")
    end
    t.write(ws .. "/moat.yaml", "name: agent\nruntime: host\nmounts: [ \"" .. dir .. "/home:/h:ro\" ]\n"
      .. "secrets:\n  GREETING: env://MOAT_T_GREETING\n")
    local code, _, err = run()
    assert.equal(77, code, err)
    assert.matches("+ runtime: host", err, 1, true)
    assert.matches("+ mount: " .. dir .. "/home:/h:ro", err, 1, true)
    -- A changed reference is a change, and a removed secret is named too.
    t.write(ws .. "/moat.yaml", "name: agent\nsecrets:\n  OTHER: env://MOAT_T_GREETING\n")
    code, _, err = run()
    assert.equal(77, code, err)
    assert.matches("+ secret OTHER", err, 1, true)
    assert.matches("- secret GREETING", err, 1, true)
  end)

  it("refuses a trusted mount whose host path the agent turned into a symlink", function()
    local lfs = require("lfs")
    assert(lfs.mkdir(ws .. "/data"))
    assert(lfs.mkdir(dir .. "/elsewhere"))
    t.write(ws .. "/moat.yaml", "name: agent\nmounts: [ \"./data:/data\" ]\n"
      .. "secrets:\n  GREETING: env://MOAT_T_GREETING\n")
    assert.equal(0, (t.moat({ "trust", ws }, { env = env, trust = false })))
    local code, _, err = run()
    assert.equal(0, code, err)
    -- The config's words stay the same; where ./data leads does not.
    assert(lfs.rmdir(ws .. "/data"))
    assert.equal(0, t.exec({ "ln", "-s", dir .. "/elsewhere", ws .. "/data" }).code)
    code, _, err = run()
    assert.equal(77, code, err)
    assert.matches("~ mount: " .. ws .. "/./data:/data (" .. dir .. "/elsewhere)", err, 1, true)
    assert.is_false(t.exists(dir .. "/out"), "the command ran")
  end)

  it("takes --trust from a person who has just read the listing", function()
    t.write(ws .. "/moat.yaml",
      "name: agent\nsecrets:\n  GREETING: env://MOAT_T_GREETING\n  AWS: env://MOAT_T_HOSTKEY\n")
    local code, _, err = run({ "--trust" })
    assert.equal(0, code, err)
    assert.equal("hello-greeting|host-secret-value-123", t.read(dir .. "/out"))
    code, _, err = run()
    assert.equal(0, code, err)
  end)

  it("needs no trust for a config outside the workspace, nor for command-line options", function()
    t.write(dir .. "/mine.yaml", "secrets:\n  AWS: env://MOAT_T_HOSTKEY\n")
    t.write(ws .. "/moat.yaml", "name: agent\n")
    local code, _, err = run({ "--config", dir .. "/mine.yaml", "--secret", "GREETING=env://MOAT_T_GREETING" })
    assert.equal(0, code, err)
    assert.equal("hello-greeting|host-secret-value-123", t.read(dir .. "/out"))
  end)

  it("lets commands that fetch nothing see an untrusted config, with a warning", function()
    local code, out, err = t.moat({ "run", "--dry-run", "--runtime", "host", ws }, { env = env, trust = false })
    assert.equal(0, code, err)
    assert.matches("secret: GREETING", out, 1, true)
    assert.matches("not trusted", err, 1, true)
  end)

  it("hashes .moat/ as capped streams: a 3 GiB sparse file is refused by name, nothing skipped", function()
    t.write(ws .. "/.moat/lua/moat/x.lua", "return 1\n")
    t.exec({ "truncate", "-s", "3G", ws .. "/.moat/big.bin" })
    local code, _, err = run({ "--trust" })
    assert.equal(77, code, err)
    assert.matches("big.bin is over the 1048576-byte limit", err, 1, true)
    code, _, err = t.moat({ "trust", ws }, { env = env, trust = false })
    assert.not_equal(0, code)
    assert.matches("big.bin", err, 1, true)
  end)

  it("refuses a workspace that is HOME, contains MOAT_HOME, or sits inside MOAT_HOME", function()
    t.write(dir .. "/home/moat.yaml", "name: home\n")
    local code, _, err = t.moat({ "run", "--runtime", "host", dir .. "/home", "--", "true" }, { env = env })
    assert.equal(77, code, err)
    assert.matches("which moat reads", err, 1, true)
    t.write(dir .. "/moat.yaml", "name: above\n")
    code, _, err = t.moat({ "run", "--runtime", "host", dir, "--", "true" }, { env = env })
    assert.equal(77, code, err)
    assert.matches("contains", err, 1, true)
    t.write(dir .. "/home/.moat/inner/moat.yaml", "name: inner\n")
    code, _, err = t.moat({ "run", "--runtime", "host", dir .. "/home/.moat/inner", "--", "true" }, { env = env })
    assert.equal(77, code, err)
    assert.matches("is inside", err, 1, true)
  end)
end)
