-- Specs for moat.audit: the overridable record formatter carries names, backends,
-- references, durations, outcomes and error kinds, never a value or a backend's message.
local audit = require("moat.audit")
local json = require("moat.c.json")

local VALUE = "s3cr3t-VALUE-do-not-log"

local function keys(t)
  local out = {}
  for k in pairs(t) do out[#out + 1] = k end
  table.sort(out)
  return out
end

-- Every field a caller might (wrongly) pass along, including values and message text.
local function noisy(extra)
  local f = { value = VALUE, values = { A = VALUE }, env = { A = VALUE }, reason = "backend said " .. VALUE,
    fix = VALUE, stdout = VALUE, stderr = VALUE, secret = VALUE, default = VALUE }
  for k, v in pairs(extra) do f[k] = v end
  return f
end

describe("moat.audit.format", function()
  it("run.started carries name, workspace, runtime, image, command and version", function()
    local d = audit.format("run.started", noisy({ name = "demo", workspace = "/w", runtime = "docker",
      image = "alpine", command = { "sh", "-c", "x" }, version = "0.1.0" }))
    assert.same({ "command", "image", "name", "runtime", "version", "workspace" }, keys(d))
    assert.same({ "sh", "-c", "x" }, { table.unpack(d.command) })
    assert.equal(json.array_mt, getmetatable(d.command))
  end)

  it("secret.resolved carries name, backend, reference, ms and outcome", function()
    local d = audit.format("secret.resolved", noisy({ name = "A", backend = "op", ref = "op://v/i/f", ms = 12.4,
      ok = true }))
    assert.same({ "backend", "ms", "name", "outcome", "reference" }, keys(d))
    assert.same({ name = "A", backend = "op", reference = "op://v/i/f", ms = 12, outcome = "ok" }, d)
    assert.equal("integer", math.type(d.ms))
  end)

  it("secret.failed takes a secrets.resolve record and keeps only the error kind", function()
    local d = audit.format("secret.failed", noisy({ name = "B", ref = "ssm:///p", backend = "ssm", ms = 3,
      ok = false, kind = "not_found" }))
    assert.same({ name = "B", backend = "ssm", reference = "ssm:///p", ms = 3, outcome = "failed",
      kind = "not_found" }, d)
  end)

  it("policy.denied carries script, target and reason of each denial", function()
    local d = audit.format("policy.denied", noisy({ denials = {
      { script = "/etc/moat/policy.lua", target = "AWS_KEY", reason = "not on this host", value = VALUE } } }))
    assert.same({ "denials" }, keys(d))
    assert.same({ script = "/etc/moat/policy.lua", target = "AWS_KEY", reason = "not on this host" }, d.denials[1])
    assert.equal('{"denials":[]}', json.encode(audit.format("policy.denied", {}), { canonical = true }))
  end)

  it("container.started carries runtime, image and container", function()
    local d = audit.format("container.started", noisy({ runtime = "podman", image = "alpine", id = "abc123" }))
    assert.same({ runtime = "podman", image = "alpine", container = "abc123" }, d)
  end)

  it("container.exited carries status, signal and ms", function()
    assert.same({ status = 137, signal = "KILL", ms = 50 },
      audit.format("container.exited", noisy({ status = 137, signal = "KILL", ms = 50 })))
    assert.same({ status = 0, ms = 5 }, audit.format("container.exited", { code = 0, ms = 5 }))
  end)

  it("run.finished carries outcome, exit, kind and ms", function()
    assert.same({ outcome = "exited", exit = 3, ms = 9 },
      audit.format("run.finished", noisy({ outcome = "exited", exit = 3, ms = 9 })))
    assert.same({ outcome = "failed", exit = 69, kind = "secrets" },
      audit.format("run.finished", { exit = 69, kind = "secrets" }))
  end)

  it("never lets a value through, for any type", function()
    for rtype in pairs(audit.types) do
      local enc = json.encode(audit.format(rtype, noisy({ name = "N" })), { canonical = true })
      assert.is_string(enc)
      assert.is_nil(enc:find(VALUE, 1, true), rtype)
      assert.is_nil(enc:find("backend said", 1, true), rtype)
    end
  end)

  it("run.started records the profile when there is one", function()
    assert.equal("prod", audit.format("run.started", { name = "demo", profile = "prod" }).profile)
    assert.is_nil(audit.format("run.started", { name = "demo" }).profile)
  end)

  it("secret.skipped and secret.defaulted carry name, backend, reference, ms, outcome, not_found", function()
    for rtype, outcome in pairs({ ["secret.skipped"] = "skipped", ["secret.defaulted"] = "defaulted" }) do
      local d = audit.format(rtype, noisy({ name = "A", backend = "op", ref = "op://v/i/f", ms = 3, ok = true,
        outcome = outcome, kind = "not_found" }))
      assert.same({ name = "A", backend = "op", reference = "op://v/i/f", ms = 3, outcome = outcome,
        kind = "not_found" }, d)
    end
  end)

  it("knows the nine documented types and raises on others", function()
    assert.same({ "container.exited", "container.started", "policy.denied", "run.finished", "run.started",
      "secret.defaulted", "secret.failed", "secret.resolved", "secret.skipped" }, keys(audit.types))
    assert.has_error(function() audit.format("secret.leaked", {}) end,
      "moat.audit: unknown record type 'secret.leaked'")
  end)
end)
