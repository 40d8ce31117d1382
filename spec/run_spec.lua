-- `moat run` end to end on the host runtime (no isolation needed to test the pipeline), and the
-- foreground driver moat.run with launches built by hand.
local t = require("support.moat")
local proc = require("moat.c.proc")
local sys = require("moat.c.system")

local TOKEN = "tok-very-secret-0123456789"

local read, exists = t.read, t.exists

describe("moat run (host runtime)", function()
  local ws, home

  before_each(function()
    ws = t.tmpdir()
    home = t.tmpdir()
    t.write(ws .. "/moat.yaml", "name: unit\nsecrets:\n  TOKEN: env://T_TOKEN\nenv:\n  GREETING: hi there\n")
  end)

  after_each(function()
    t.rmtree(ws)
    t.rmtree(home)
  end)

  local function env(extra)
    local e = { MOAT_HOME = home .. "/moat", T_TOKEN = TOKEN, MOAT_RUNTIME = false, MOAT_NETWORK = false,
      UNRELATED_HOST_VAR = "should-not-pass", MOAT_SITE_DIR = home .. "/site", XDG_CONFIG_HOME = home .. "/xdg",
      MOAT_LUA_PATH = false }
    for k, v in pairs(extra or {}) do e[k] = v end
    return e
  end

  local function moat(args, extra)
    return t.moat(args, { env = env(extra) })
  end

  local function audit_records()
    local lfs = require("lfs")
    local runs = home .. "/moat/runs"
    local ids = {}
    for n in lfs.dir(runs) do if n:sub(1, 1) ~= "." then ids[#ids + 1] = n end end
    table.sort(ids)
    local text = assert(read(runs .. "/" .. ids[#ids] .. "/audit.jsonl"))
    return t.records(text), text
  end

  it("runs the command in the workspace with the secret and env values, options in any order", function()
    local script = 'pwd; printf "%s|%s|%s" "$TOKEN" "$GREETING" "${UNRELATED_HOST_VAR-unset}" > out'
    local code, out, err = moat({ "run", "--no-mask", "--runtime", "host", ws, "--", "sh", "-c", script })
    assert.equal(0, code, err)
    assert.equal(ws, out:gsub("\n$", ""))
    assert.equal(TOKEN .. "|hi there|unset", read(ws .. "/out"))
    os.remove(ws .. "/out")
    code = moat({ "run", ws, "--runtime", "host", "--no-mask", "--", "sh", "-c", script })
    assert.equal(0, code)
    assert.equal(TOKEN .. "|hi there|unset", read(ws .. "/out"))
  end)

  it("takes -e and --secret from the command line", function()
    local code, _, err = moat({ "run", ws, "--runtime", "host", "-e", "EXTRA=x y", "--secret", "MORE=env://T_MORE",
      "--", "sh", "-c", 'printf "%s/%s" "$EXTRA" "$MORE" > out' }, { T_MORE = "more-value" })
    assert.equal(0, code, err)
    assert.equal("x y/more-value", read(ws .. "/out"))
  end)

  it("exits with the command's status unchanged", function()
    for _, c in ipairs({ 0, 1, 3, 42, 125, 126, 255 }) do
      assert.equal(c, (moat({ "run", ws, "--runtime", "host", "--", "sh", "-c", "exit " .. c })))
    end
    local code, _, err = moat({ "run", ws, "--runtime", "host", "--", "no-such-command-xyz" })
    assert.equal(127, code)
    assert.matches("no%-such%-command%-xyz: command not found", err)
    assert.equal(137, (moat({ "run", ws, "--runtime", "host", "--", "sh", "-c", "kill -9 $$" })))
    assert.equal(143, (moat({ "run", ws, "--runtime", "host", "--", "sh", "-c", "kill -TERM $$" })))
  end)

  it("--dry-run prints runtime, argv, names and backends and launches nothing", function()
    local code, out, err = moat({ "run", "--dry-run", ws, "--runtime", "host", "--", "sh", "-c", "touch ran" },
      { T_TOKEN = false })
    assert.equal(0, code, err)
    assert.is_false(exists(ws .. "/ran"))
    assert.matches("runtime: host (--runtime)", out, 1, true)
    assert.matches("argv: ", out, 1, true)
    assert.matches("secret: TOKEN  env  env://T_TOKEN", out, 1, true)
    assert.matches("env: GREETING", out, 1, true)
    assert.is_nil(out:find("hi there", 1, true))
    assert.is_false(exists(home .. "/moat/runs"))
  end)

  it("--dry-run on a remote docker engine shows --env NAME and never a value", function()
    local fake = t.tmpdir()
    t.write(fake .. "/docker", "#!/bin/sh\nexit 0\n")
    t.exec({ "chmod", "+x", fake .. "/docker" })
    local code, out, err = moat({ "run", ws, "--dry-run", "--runtime", "docker", "--image", "img:1", "--",
      "sh" }, { PATH = fake .. ":" .. os.getenv("PATH"), DOCKER_HOST = "tcp://192.0.2.1:2375" })
    t.rmtree(fake)
    assert.equal(0, code, err)
    assert.matches("argv: docker run --rm --name moat-", out, 1, true)
    assert.matches("--env GREETING --env TOKEN", out, 1, true)
    assert.matches(" img:1 sh\n", out, 1, true)
    assert.is_nil(out:find(TOKEN, 1, true))
  end)

  it("rejects bad usage with 64", function()
    assert.equal(64, (moat({ "run", ws, "extra", "--runtime", "host" })))
    assert.equal(64, (moat({ "run", ws, "--mask", "--no-mask", "--runtime", "host" })))
    assert.equal(64, (moat({ "run", ws, "--timeout", "soon", "--runtime", "host" })))
    assert.equal(64, (moat({ "run", ws, "--jobs", "0", "--runtime", "host" })))
    assert.equal(64, (moat({ "run", ws, "--image", "--privileged", "--runtime", "host" })))
    assert.equal(64, (moat({ "run", ws, "--runtime", "nonesuch" })))
    assert.equal(64, (moat({ "run", ws, "--runtime", "host", "--" })))
  end)

  it("takes the runtime from the config and MOAT_RUNTIME, --runtime winning", function()
    local code, out = moat({ "run", ws, "--dry-run" }, { MOAT_RUNTIME = "host" })
    assert.equal(0, code)
    assert.matches("runtime: host (MOAT_RUNTIME)", out, 1, true)
    t.write(ws .. "/moat.yaml", "runtime: host\nsecrets:\n  TOKEN: env://T_TOKEN\n")
    code, out = moat({ "run", ws, "--dry-run" }, { MOAT_RUNTIME = "bwrap" })
    assert.equal(0, code)
    assert.matches("runtime: host (config)", out, 1, true)
  end)

  it("fails with 69 and install hints when no runtime is usable", function()
    local empty = t.tmpdir()
    local code, _, err = moat({ "run", ws, "--", "true" }, { PATH = empty })
    t.rmtree(empty)
    assert.equal(69, code)
    assert.matches("no usable runtime", err, 1, true)
    assert.matches("hint:", err, 1, true)
  end)

  it("launches nothing, audits the failure and exits 69 when a secret fails", function()
    local code, out, err = moat({ "run", ws, "--runtime", "host", "--", "touch", "ran" }, { T_TOKEN = false })
    assert.equal(69, code)
    assert.equal("", out)
    assert.matches("TOKEN", err, 1, true)
    assert.is_false(exists(ws .. "/ran"))
    local recs = audit_records()
    local types = {}
    for _, r in ipairs(recs) do types[#types + 1] = r.type end
    assert.same({ "run.started", "secret.failed", "run.finished" }, types)
  end)

  it("audits the run without any value", function()
    local code = moat({ "run", ws, "--runtime", "host", "--", "sh", "-c", "exit 7" })
    assert.equal(7, code)
    local recs, text = audit_records()
    local types = {}
    for _, r in ipairs(recs) do types[#types + 1] = r.type end
    assert.same({ "run.started", "secret.resolved", "container.started", "container.exited", "run.finished" }, types)
    assert.equal("TOKEN", recs[2].data.name)
    assert.equal(7, recs[4].data.status)
    assert.is_nil(text:find(TOKEN, 1, true))
  end)

  it("exits 77, audits the denial and launches nothing when a policy denies the run", function()
    t.write(home .. "/site/policy.lua", "return function(plan, ctx)\n"
      .. "  for _, s in ipairs(plan.secrets) do ctx.deny(s, 'no env secrets here') end\nend\n")
    local code, _, err = moat({ "run", ws, "--runtime", "host", "--", "touch", "ran" })
    assert.equal(77, code)
    assert.matches("no env secrets here", err, 1, true)
    assert.is_false(exists(ws .. "/ran"))
    local recs = audit_records()
    assert.equal("policy.denied", recs[2].type)
    assert.equal("run.finished", recs[#recs].type)
  end)

  it("exits 74 and launches nothing when the audit log cannot be written", function()
    t.write(home .. "/notadir", "x")
    local code = moat({ "run", ws, "--runtime", "host", "--", "touch", "ran" }, { MOAT_HOME = home .. "/notadir" })
    assert.equal(74, code)
    assert.is_false(exists(ws .. "/ran"))
  end)

  it("masks values when the output is not a terminal, and not with --no-mask", function()
    local script = 'printf "a:%s\\n" "$TOKEN"; printf "%s" "$TOKEN" | base64; printf "e:%s\\n" "$TOKEN" >&2'
    local code, out, err = moat({ "run", ws, "--runtime", "host", "--", "sh", "-c", script })
    assert.equal(0, code, err)
    assert.is_nil(out:find(TOKEN, 1, true))
    assert.is_nil(out:find(sys.base64_encode(TOKEN), 1, true))
    assert.is_nil(err:find(TOKEN, 1, true))
    assert.matches("a:<concealed by moat>\n", out, 1, true)
    assert.matches("e:<concealed by moat>\n", err, 1, true)
    code, out = moat({ "run", ws, "--runtime", "host", "--no-mask", "--", "sh", "-c", 'printf "%s" "$TOKEN"' })
    assert.equal(0, code)
    assert.equal(TOKEN, out)
  end)

  local function start_moat(script)
    local p = assert(proc.spawn({ _G.MOAT_BIN, "run", "--trust", ws, "--runtime", "host", "--", "sh", "-c", script },
      { env = t.env(env()), stdout = "pipe", stderr = "pipe", timeout = 60000 }))
    local deadline = sys.monotonic_ms() + 20000
    while not exists(ws .. "/ready") and not p:done() and sys.monotonic_ms() < deadline do proc.wait({ p }, 50) end
    assert.is_true(exists(ws .. "/ready"))
    return p
  end

  local function finish(p)
    while not p:done() do proc.wait({ p }, 1000) end
    return p:result()
  end

  it("forwards TERM to the command and exits with its status", function()
    local p = start_moat("trap 'echo got-term > got; exit 5' TERM; touch ready; while :; do sleep 0.1; done")
    p:kill("TERM")
    local r = finish(p)
    assert.equal(5, r.code, r.stderr)
    assert.equal("got-term\n", read(ws .. "/got"))
  end)

  it("forwards INT and HUP", function()
    local p = start_moat("trap 'exit 11' INT; touch ready; while :; do sleep 0.1; done")
    p:kill("INT")
    assert.equal(11, finish(p).code)
    os.remove(ws .. "/ready")
    p = start_moat("trap 'exit 12' HUP; touch ready; while :; do sleep 0.1; done")
    p:kill("HUP")
    assert.equal(12, finish(p).code)
  end)

  it("kills the command on a second signal", function()
    local p = start_moat("trap 'echo once >> got' TERM INT; touch ready; while :; do sleep 0.1; done")
    p:kill("TERM")
    local deadline = sys.monotonic_ms() + 10000
    while not exists(ws .. "/got") and sys.monotonic_ms() < deadline do proc.wait({ p }, 50) end
    p:kill("INT")
    local r = finish(p)
    assert.equal(137, r.code)
    assert.equal("once\n", read(ws .. "/got"))
  end)
end)

describe("moat.supervise.run", function()
  local supervise = require("moat.supervise")
  local secret = "abcdef-secret-123456"

  local function collect(launch, opts)
    local out, err = {}, {}
    opts.stdout = function(d) out[#out + 1] = d end
    opts.stderr = function(d) err[#err + 1] = d end
    local r = assert(supervise.run(launch, opts))
    return r, table.concat(out), table.concat(err)
  end

  local function sh(script, extra)
    local env = { "PATH=" .. os.getenv("PATH"), "S=" .. secret }
    for _, e in ipairs(extra or {}) do env[#env + 1] = e end
    return { argv = { "sh", "-c", script }, env = env }
  end

  it("masks a value split across delayed writes on both streams", function()
    local r, out, err = collect(sh('printf "x%s" "${S%??????????}"; sleep 0.3; printf "%sy" "${S#??????????}";'
      .. ' printf "%s" "$S" >&2'), { mask = { secret }, mask_stdout = true, mask_stderr = true })
    assert.equal(0, r.status)
    assert.equal("x<concealed by moat>y", out)
    assert.equal("<concealed by moat>", err)
  end)

  it("relays output unchanged when nothing is secret", function()
    local r, out = collect(sh('printf "plain\\0bytes\\377\\n"'), { mask = { secret }, mask_stdout = true })
    assert.equal(0, r.status)
    assert.equal("plain\0bytes\255\n", out)
  end)

  it("turns a signal death into 128+N", function()
    assert.equal(130, supervise.status({ signal = 2 }))
    assert.equal(3, supervise.status({ code = 3 }))
    local r = assert(supervise.run(sh("kill -USR1 $$"), {}))
    assert.equal(128 + require("moat.c.signal").number("USR1"), r.status)
  end)

  it("escalates to KILL after the grace when TERM is not obeyed, and runs the cleanup", function()
    local marker = os.tmpname()
    os.remove(marker)
    -- The command ignores TERM, then sends one to its parent (this process, the supervisor).
    local launch = sh("trap '' TERM; kill -TERM $PPID; while :; do sleep 0.1; done")
    launch.cleanup = { "touch", marker }
    local r = assert(supervise.run(launch, { grace_ms = 300 }))
    assert.equal(137, r.status)
    assert.is_true(r.forced)
    assert.same({ "TERM" }, r.signals)
    assert.is_true(exists(marker))
    os.remove(marker)
    os.remove(marker .. ".ready")
  end)

  it("returns after a forced stop although an escaped grandchild holds the masked pipes", function()
    -- The command ignores TERM and leaves a process in its own session holding stdout/stderr:
    -- killing the group cannot close those pipes, so the supervisor must stop waiting on them.
    local launch = sh("setsid sleep 30.31 & trap '' TERM; kill -TERM $PPID; while :; do sleep 0.1; done")
    local r = assert(supervise.run(launch, { grace_ms = 300, mask = { "abcdefgh" }, mask_stdout = true,
      mask_stderr = true, stdout = function() end, stderr = function() end }))
    assert.equal(137, r.status)
    assert.is_true(r.forced)
    t.exec({ "pkill", "-f", "^sleep 30.31" })
  end)

  it("reports a client that cannot start", function()
    local r, msg = supervise.run({ argv = { "/nonexistent/client" }, env = {} }, {})
    assert.is_nil(r)
    assert.is_string(msg)
  end)
end)
