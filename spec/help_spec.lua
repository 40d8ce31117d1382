-- Help, did-you-mean and the "--" hints (DESIGN §8): every command's help comes from its
-- parser's SPEC and a one-line description per option, so nothing the parser accepts is left out.
local t = require("support.moat")

local function env(home)
  return { HOME = home, XDG_CONFIG_HOME = false, MOAT_HOME = home .. "/.moat", MOAT_LUA_PATH = false,
    MOAT_SITE_DIR = home .. "/site" }
end

describe("moat help", function()
  local home
  local cli = require("moat.cli")
  local help = require("moat.cmd.help")

  before_each(function() home = t.tmpdir() end)
  after_each(function() t.rmtree(home) end)

  local function moat(argv, opts)
    opts = opts or {}
    opts.env = opts.env or env(home)
    opts.trust = false
    return t.moat(argv, opts)
  end

  it("describes every option each command's parser accepts, one line each, and two examples", function()
    for _, c in ipairs(cli.commands) do
      local spec, described = help.tables(c)
      local lines = {}
      for _, o in ipairs(described) do
        local names, arg = help.split_left(o[1])
        assert.is_true(#names > 0, c.name .. ": a line without an option: " .. o[1])
        assert.is_string(o[2], c.name .. " " .. o[1])
        assert.is_nil(o[2]:find("\n"), c.name .. " " .. o[1] .. ": one line")
        local long = names[#names]
        assert.is_truthy(spec[long], ("moat %s documents %s, which its SPEC does not accept"):format(c.name, long))
        assert.equal(spec[long] ~= "flag", arg ~= nil,
          ("moat %s %s: a value option names its argument (\"%s ARG\"), a flag does not"):format(c.name, long, long))
        for _, n in ipairs(names) do lines[n] = true end
      end
      for name in pairs(spec) do
        assert.is_true(lines[name] ~= nil, ("moat %s accepts %s but its OPTIONS has no line for it: add "
          .. "{ \"%s ...\", \"what it does\" } to M.OPTIONS in lua/moat/cmd/%s.lua"):format(c.name, name, name, c.name))
      end
      assert.equal(2, #c.examples, c.name)
    end
  end)

  it("prints each command's full help on stdout with -h, --help or help COMMAND, anywhere before --", function()
    for _, c in ipairs(cli.commands) do
      local code, out, err = moat({ c.name, "--help" })
      assert.equal(0, code, c.name .. ": " .. err)
      assert.equal("", err)
      assert.matches("^usage: moat " .. c.name:gsub("%p", "%%%0"), out)
      for _, o in ipairs(help.options(c)) do
        assert.matches(o.left, out, 1, true)
        assert.not_equal(help.UNDESCRIBED, o.text, c.name .. " " .. o.left)
      end
      assert.matches("examples:\n  " .. c.examples[1], out, 1, true)
      local code2, out2 = moat({ "help", c.name })
      assert.equal(0, code2)
      assert.equal(out, out2)
    end
    local code, out = moat({ "run", "--runtime", "host", "-h", "--", "x" })
    assert.equal(0, code)
    assert.matches("--config FILE", out, 1, true)
    assert.matches("-v, --verbose", out, 1, true)
    local _, sout = moat({ "secrets", "check", "-h" })
    assert.matches("--secret NAME=REF", sout, 1, true)
    for _, o in ipairs({ "--verify", "--key FINGERPRINT|FILE", "--export FILE", "--all", "--last", "--json" }) do
      assert.matches(o, (select(2, moat({ "audit", "-h" }))), 1, true)
    end
    assert.matches("--name NAME", (select(2, moat({ "runs", "--help" }))), 1, true)
  end)

  it("-h after -- belongs to the command", function()
    local code, out, err = moat({ "run", "--runtime", "nonesuch", "--", "ls", "-h" })
    assert.equal(64, code)
    assert.equal("", out)
    assert.matches("nonesuch", err, 1, true)
  end)

  it("prints the usage on stderr and exits 64 with no command; on stdout with -h, --help or help", function()
    local code, out, err = moat({})
    assert.equal(64, code)
    assert.equal("", out)
    assert.matches("usage: moat <command>", err, 1, true)
    for _, argv in ipairs({ { "-h" }, { "--help" }, { "help" } }) do
      code, out, err = moat(argv)
      assert.equal(0, code)
      assert.equal("", err)
      assert.matches("^usage: moat <command>", out)
      assert.matches("  completion  ", out, 1, true)
    end
  end)

  it("suggests the command or option meant, and escapes what it echoes", function()
    local function fails(argv)
      local code, out, err = moat(argv)
      assert.equal(64, code, err)
      assert.equal("", out)
      return err
    end
    assert.matches("unknown command 'hlep'; did you mean help?", fails({ "hlep" }), 1, true)
    assert.matches("did you mean run?", fails({ "help", "rnu" }), 1, true)
    assert.matches("unknown option --runtim; did you mean --runtime?", fails({ "run", "--runtim", "host" }), 1, true)
    assert.matches("did you mean --verify?", fails({ "audit", "--verfy" }), 1, true)
    local err = fails({ "x\27[31m\1" })
    assert.matches("unknown command 'x\\x1b[31m\\x01'", err, 1, true)
    assert.is_nil(err:find("\27", 1, true))
    err = fails({ "config", "--bad\27]0;x\7" })
    assert.is_nil(err:find("[\27\7]"))
    assert.matches("unknown option --bad\\x1b]0;x\\x07", err, 1, true)
    assert.matches("unknown subcommand 'chek\\x1b'; did you mean check?", fails({ "secrets", "chek\27" }), 1, true)
  end)
end)

describe("moat run without --", function()
  local home

  before_each(function() home = t.tmpdir() end)
  after_each(function() t.rmtree(home) end)

  local function hint(argv, cwd)
    local code, out, err = t.moat(argv, { env = env(home), cwd = cwd or home, trust = false })
    assert.equal(64, code, err)
    assert.equal("", out)
    return err
  end

  it("puts every positional after -- when the first is not a directory", function()
    local err = hint({ "run", "--runtime", "host", "echo", "hi" })
    assert.matches("put the command after --: moat run --runtime host -- echo hi\n", err, 1, true)
    assert.not_matches("moat run echo -- hi", err, 1, true)
  end)

  it("keeps an existing directory as DIR", function()
    t.write(home .. "/ws/moat.yaml", "name: ws\n")
    local err = hint({ "run", "ws", "echo", "hi", "--runtime=host" })
    assert.matches("put the command after --: moat run --runtime=host ws -- echo hi\n", err, 1, true)
  end)

  it("reads a lone word that is not a directory as the command", function()
    local err = hint({ "run", "--runtime", "host", "make" })
    assert.matches("make is not a directory; put the command after --: moat run --runtime host -- make\n", err, 1, true)
    local code, _, err2 = t.moat({ "run", "nowhere", "--", "true" }, { env = env(home), cwd = home, trust = false })
    assert.not_equal(0, code)
    assert.not_matches("put the command after", err2, 1, true)
  end)

  it("reads an unknown option after a command word as the command's", function()
    local err = hint({ "run", "ls", "-la" })
    assert.matches("unknown option -la; put the command after --: moat run -- ls -la\n", err, 1, true)
    err = hint({ "run", "--runtime", "host", "grep", "-r", "x y", "." })
    assert.matches("moat run --runtime host -- grep -r 'x y' .\n", err, 1, true)
  end)

  it("escapes control characters in the suggested command line", function()
    local err = hint({ "run", "echo", "a\27b", "-x" })
    assert.is_nil(err:find("\27", 1, true))
    assert.matches("-- echo 'a\\x1bb' -x", err, 1, true)
  end)
end)

describe("args", function()
  local args = require("moat.args")
  local spec = { ["--runtime"] = "value", ["--keep"] = "flag", ["-e"] = "--env", ["--env"] = "list" }
  local function no(p) return p == "." end

  it("returns the index of the offending word", function()
    local opts, msg, i = args.parse({ "a", "--keep", "--nope" }, spec)
    assert.is_nil(opts)
    assert.equal("unknown option --nope", msg)
    assert.equal(3, i)
  end)

  it("splits a command line into options, DIR and the command", function()
    local o, d, c = args.split_command({ ".", "-e", "A=1", "ls", "--keep", "-la", "--keep" }, spec, no)
    assert.same({ "-e", "A=1", "--keep" }, o)
    assert.equal(".", d)
    assert.same({ "ls", "-la", "--keep" }, c)
    assert.is_nil(args.forgot_dashdash("moat run", { "--nope", "x" }, spec, no))
    assert.is_nil(args.forgot_dashdash("moat run", { ".", "--keep" }, spec, no))
  end)
end)
