-- Shell completion and the manual page: both made from the tables the help is made from
-- (moat.cli's commands, each command module's SPEC and OPTIONS), so neither can drift.
local t = require("support.moat")
local need = require("support.need")

local function env(home, extra)
  local e = { HOME = home, XDG_CONFIG_HOME = false, MOAT_HOME = home .. "/.moat", MOAT_LUA_PATH = false,
    MOAT_SITE_DIR = home .. "/site", PATH = MOAT_ROOT .. "/build:" .. os.getenv("PATH") }
  for k, v in pairs(extra or {}) do e[k] = v end
  return e
end

describe("moat completion", function()
  local home
  local completion = require("moat.cmd.completion")

  before_each(function() home = t.tmpdir() end)
  after_each(function() t.rmtree(home) end)

  local function script(shell)
    local code, out, err = t.moat({ "completion", shell }, { env = env(home) })
    assert.equal(0, code, err)
    t.write(home .. "/moat." .. shell, out)
    return out, home .. "/moat." .. shell
  end

  it("names every command and every option each one accepts", function()
    local model = completion.model()
    for _, shell in ipairs(completion.SHELLS) do
      local out = script(shell)
      for _, c in ipairs(model) do
        assert.matches(c.name, out, 1, true)
        for _, o in ipairs(c.options) do
          local long = shell == "fish" and o.long:gsub("^%-%-", "-l ") or o.long
          assert.matches(long, out, 1, true, shell .. ": " .. c.name .. " " .. o.long)
        end
      end
    end
  end)

  it("loads in bash and completes commands, options, runtimes and DIR", function()
    local _, path = script("bash")
    local r = t.exec({ "bash", "-c", [[
      source "$1" || exit 1
      complete -p moat
      c() { COMP_WORDS=("$@"); COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); COMPREPLY=(); _moat; echo "${COMPREPLY[*]}"; }
      c moat hel; c moat run --runt; c moat run --runtime ""; c moat secrets ""; c moat completion ""
      c moat audit --verif; c moat run -- ech
    ]], "bash", path }, { env = env(home) })
    assert.equal(0, r.code, r.stderr)
    local lines = {}
    for l in r.stdout:gmatch("[^\n]*") do lines[#lines + 1] = l end
    assert.matches("complete .*%-F _moat moat", lines[1])
    assert.equal("help", lines[2])
    assert.equal("--runtime", lines[3])
    assert.equal("docker podman bwrap host", lines[4])
    assert.equal("check", lines[5])
    assert.equal("bash zsh fish", lines[6])
    assert.equal("--verify", lines[7])
    assert.matches("echo", lines[8], 1, true)
  end)

  it("loads in zsh through compinit", function()
    if not t.which("zsh") then return pending(need.missing("zsh", "apt-get install zsh")) end
    local _, path = script("zsh")
    local r = t.exec({ "zsh", "-f", "-c", 'autoload -U compinit; compinit -u -d "$2"; source "$1" || exit 1; '
      .. 'print -r -- $_comps[moat]', "zsh", path, home .. "/zcompdump" }, { env = env(home) })
    assert.equal(0, r.code, r.stderr)
    assert.equal("", r.stderr)
    assert.equal("_moat\n", r.stdout)
  end)

  it("passes fish -n and completes options and runtimes in fish", function()
    if not t.which("fish") then return pending(need.missing("fish", "apt-get install fish")) end
    local _, path = script("fish")
    local r = t.exec({ "fish", "-n", path }, { env = env(home) })
    assert.equal(0, r.code, r.stderr)
    r = t.exec({ "fish", "--no-config", "-c", 'source $argv[1]; complete -C "moat run --runt"; '
      .. 'complete -C "moat run --runtime "', path }, { env = env(home) })
    assert.equal(0, r.code, r.stderr)
    assert.matches("^%-%-runtime\t", r.stdout)
    assert.matches("\npodman\t", r.stdout)
  end)

  it("lists recorded runs and the config's profiles for the scripts", function()
    t.write(home .. "/ws/moat.yaml", "name: listed\nprofiles:\n  prod:\n    image: x\n  dev:\n    image: y\n")
    local code, _, err = t.moat({ "run", "--runtime", "host", home .. "/ws", "--", "true" }, { env = env(home) })
    assert.equal(0, code, err)
    local out
    code, out, err = t.moat({ "completion", "--list", "runs" }, { env = env(home) })
    assert.equal(0, code, err)
    assert.matches("^%d+T%d+%.%d+Z%-%x+\nlisted\n$", out)
    code, out = t.moat({ "completion", "--list", "profiles" }, { env = env(home), cwd = home .. "/ws" })
    assert.equal(0, code)
    assert.equal("prod\ndev\n", out)
    code, out = t.moat({ "completion", "--list", "profiles" }, { env = env(home), cwd = home })
    assert.equal(0, code)
    assert.equal("", out)
  end)

  it("refuses a missing or unknown shell with exit 64", function()
    local code, _, err = t.moat({ "completion", "bsh" }, { env = env(home) })
    assert.equal(64, code)
    assert.matches("did you mean bash?", err, 1, true)
    assert.equal(64, (t.moat({ "completion" }, { env = env(home) })))
    assert.equal(64, (t.moat({ "completion", "--list", "nope" }, { env = env(home) })))
  end)
end)

describe("the manual page", function()
  it("docs/moat.1 is what moat help --man prints", function()
    local code, out, err = t.moat({ "help", "--man" },
      { env = { MOAT_LUA_PATH = false, XDG_CONFIG_HOME = "/nonexistent" } })
    assert.equal(0, code, err)
    assert.equal(out, t.slurp(MOAT_ROOT .. "/docs/moat.1"),
      "docs/moat.1 is out of date: run  build/moat help --man > docs/moat.1")
  end)

  it("renders with man -l, every command and option in it, without warnings", function()
    if not t.which("man") then return pending(need.missing("man", "apt-get install man-db")) end
    local r = t.exec({ "man", "-l", MOAT_ROOT .. "/docs/moat.1" }, { env = { MANWIDTH = "80", MANPAGER = "cat",
      PAGER = "cat", MAN_KEEP_FORMATTING = false } })
    assert.equal(0, r.code, r.stderr)
    assert.equal("", r.stderr)
    local page = r.stdout:gsub(".\8", "")
    assert.matches("^MOAT%(1%)", page)
    for _, c in ipairs(require("moat.cmd.completion").model()) do
      assert.matches("\n   " .. c.name .. "\n", page, 1, true)
      for _, o in ipairs(c.options) do
        if not o.global then assert.matches(o.long, page, 1, true) end
      end
    end
    assert.matches("EXIT STATUS", page, 1, true)
  end)
end)
