-- config.load reading dotenv files: env_files (relative to the config file), a profile's
-- env_files, --env-file; each entry joins secrets with file:line:col; duplicates and broken
-- references are errors naming both places; a workspace config reads only files inside it.
local config = require("moat.config")
local exit = require("moat.exit")
local t = require("support.moat")

-- Calls config.load expecting a config failure (exit 78); returns its message.
local function load_fails(...)
  local cfg, msg, kind = config.load(...)
  assert.is_nil(cfg)
  assert.equal(exit.CONFIG, exit.OF_KIND[kind])
  return msg
end

local function by_name(list)
  local out = {}
  for _, e in ipairs(list) do out[e.name] = e end
  return out
end

describe("config env files", function()
  local root, ws

  before_each(function()
    root = t.tmpdir()
    ws = root .. "/ws"
  end)
  after_each(function() t.rmtree(root) end)

  it("adds each entry to secrets with its file:line:col, references and plain values alike", function()
    t.write(ws .. "/moat.yaml", "secrets:\n  A: env://A\nenv_files: [conf/app.env]\n")
    t.write(ws .. "/conf/app.env", "# app\nDB=op://v/db/password\nexport GREETING='hello there'\n")
    local cfg = config.load(ws).effective
    local s = by_name(cfg.secrets)
    assert.same({ name = "DB", ref = "op://v/db/password", where = "conf/app.env:2:4", from = "env file" }, s.DB)
    assert.equal("hello there", s.GREETING.ref)
    assert.equal("conf/app.env:3:17", s.GREETING.where)
    assert.equal(1, #cfg.env_files_used)
    assert.same({ "conf/app.env", "config", 2 },
      { cfg.env_files_used[1].path, cfg.env_files_used[1].from, cfg.env_files_used[1].count })
    -- the file's own secrets, for trust, hold only the config's
    assert.equal(1, #cfg.base.secrets)
    assert.equal(1, #config.load(ws).secrets)
  end)

  it("reads paths relative to the config file's directory, and --env-file ones as given", function()
    t.write(root .. "/cfgdir/my.yaml", "env_files: [side.env]\n")
    t.write(root .. "/cfgdir/side.env", "SIDE=1\n")
    t.write(root .. "/cli.env", "CLI=op://v/i/f\n")
    t.write(ws .. "/README", "x\n")
    local cfg = config.load(ws, root .. "/cfgdir/my.yaml", { env_files = { root .. "/cli.env" } }).effective
    local s = by_name(cfg.secrets)
    assert.equal("1", s.SIDE.ref)
    assert.equal("--env-file", s.CLI.from)
    assert.equal(root .. "/cli.env:1:5", s.CLI.where)
  end)

  it("reads --env-file without any config file", function()
    t.write(ws .. "/README", "x\n")
    t.write(root .. "/only.env", "ONLY=env://HOSTVAR\n")
    local cfg = config.load(ws, nil, { env_files = { root .. "/only.env" } }).effective
    assert.equal("env://HOSTVAR", cfg.secrets[1].ref)
  end)

  it("reads the active profile's env_files after the base's", function()
    t.write(ws .. "/moat.yaml", "env_files: [base.env]\nprofiles:\n  prod:\n    env_files: [prod.env]\n")
    t.write(ws .. "/base.env", "B=1\n")
    t.write(ws .. "/prod.env", "P=2\n")
    assert.is_nil(by_name(config.load(ws).effective.secrets).P)
    local cfg = config.load(ws, nil, { profile = "prod" }).effective
    assert.same({ "B", "P" }, { cfg.secrets[1].name, cfg.secrets[2].name })
    assert.equal("profile prod", cfg.env_files_used[2].from)
  end)

  it("refuses a name set twice, across files or in a file and the config, naming both places", function()
    t.write(ws .. "/moat.yaml", "env:\n  MODE: x\nsecrets:\n  A: env://A\nenv_files: [one.env, two.env]\n")
    t.write(ws .. "/one.env", "A=1\nB=2\n")
    t.write(ws .. "/two.env", "\nB=3\nMODE=4\n")
    local msg = load_fails(ws)
    assert.matches("3 problems in env files", msg, 1, true)
    assert.matches("one.env:1:1: A is also set at " .. ws .. "/moat.yaml:4:6; keep one", msg, 1, true)
    assert.matches("two.env:2:1: B is also set at one.env:2:1; keep one", msg, 1, true)
    assert.matches("two.env:3:1: MODE is also set at " .. ws .. "/moat.yaml:2:9; keep one", msg, 1, true)
  end)

  it("checks names and broken references like the config, and reports parse errors", function()
    t.write(ws .. "/moat.yaml", "env_files: [bad.env, unparsable.env]\n")
    t.write(ws .. "/bad.env", "PATH=/x\nTOKEN=op:/v/i/f\nOK=1\n")
    t.write(ws .. "/unparsable.env", "OK2=1\nbroken line\n")
    local msg = load_fails(ws)
    assert.matches("bad.env:1:1: PATH is reserved", msg, 1, true)
    assert.matches("bad.env:2:7: TOKEN looks like a broken reference: did you mean op://v/i/f?", msg, 1, true)
    assert.matches("unparsable.env:2:7: expected = after broken", msg, 1, true)
  end)

  it("refuses a missing file, a directory, a FIFO, and a file outside the workspace", function()
    t.write(ws .. "/moat.yaml", "env_files: [missing.env, dir, fifo, ../outside.env, link.env]\n")
    require("lfs").mkdir(ws .. "/dir")
    t.write(root .. "/outside.env", "SECRET=stolen-value\n")
    assert.equal(0, t.exec({ "mkfifo", ws .. "/fifo" }).code)
    assert.equal(0, t.exec({ "ln", "-s", root .. "/outside.env", ws .. "/link.env" }).code)
    local msg = load_fails(ws)
    assert.matches("moat.yaml:1:13: env file missing.env does not exist", msg, 1, true)
    assert.matches("env file dir is a directory", msg, 1, true)
    assert.matches("env file fifo is a FIFO", msg, 1, true)
    assert.matches("env file ../outside.env is outside the workspace", msg, 1, true)
    assert.matches("env file link.env is a symlink to a file outside the workspace", msg, 1, true)
    assert.is_nil(msg:find("stolen", 1, true))
    -- the user's own --config may name a file anywhere
    t.write(root .. "/mine.yaml", "env_files: [outside.env]\n")
    assert.equal("stolen-value", by_name(config.load(ws, root .. "/mine.yaml").effective.secrets).SECRET.ref)
  end)
end)
