-- SECURITY 22 for the aws backends, through the moat binary: a stand-in aws
-- (spec/fixtures/aws-quoting/aws) prints one value, then fails quoting that value and one moat
-- never saw; neither may reach moat's output, of `secrets check --resolve` or of `run`.
local t = require("support.moat")

local STANDIN = MOAT_ROOT .. "/spec/fixtures/aws-quoting"

describe("aws backend text never carries a value (moat binary)", function()
  local home, ws

  local function env()
    return { HOME = home, MOAT_HOME = home .. "/.moat", XDG_CONFIG_HOME = home .. "/.config",
      MOAT_SITE_DIR = home .. "/site", PATH = STANDIN .. ":" .. os.getenv("PATH"), NO_COLOR = "1",
      AWS_REGION = "us-east-1", AWS_DEFAULT_REGION = false, AWS_PROFILE = false }
  end

  setup(function()
    home = t.tmpdir()
    ws = t.tmpdir()
    t.write(ws .. "/moat.yaml", "secrets:\n  OK: ssm:///leak/ok\n  BAD: ssm://eu-west-1/leak/bad\n"
      .. "  SM: awssm:///leak/sm\n")
  end)
  teardown(function()
    t.rmtree(home)
    t.rmtree(ws)
  end)

  local function clean(text)
    assert.is_nil(text:find("printed-aws-value-31", 1, true), text)
    assert.is_nil(text:find("never-seen-aws-88", 1, true), text)
  end

  it("secrets check --resolve", function()
    local code, out, err = t.moat({ "secrets", "check", ws, "--resolve", "-v", "-v" }, { env = env() })
    assert.equal(69, code)
    assert.matches("ok%s+OK%s+ssm", out)
    assert.matches("aws ssm get-parameters failed (ValidationException, exit 255): An error occurred "
      .. "(ValidationException) when calling the GetParameters operation: value '<elided>' next to "
      .. "\"<elided>\" is invalid", out, 1, true)
    clean(out .. err)
    code, out, err = t.moat({ "secrets", "check", ws, "--resolve", "--json" }, { env = env() })
    assert.equal(69, code)
    clean(out .. err)
  end)

  it("run", function()
    local code, out, err = t.moat({ "run", ws, "--runtime", "host", "-v", "-v", "--", "true" }, { env = env() })
    assert.equal(69, code)
    assert.matches("BAD (ssm://eu-west-1/leak/bad, backend ssm): aws ssm get-parameters failed", err, 1, true)
    clean(out .. err)
  end)
end)
