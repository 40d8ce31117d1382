-- Specs for the audit trail surviving deletion and key swaps (SECURITY 24): the cross-run
-- chain in runs.jsonl, a deleted tail and signature, a deleted signature, a replaced key
-- pair, key pinning, and portable bundles.
local auditlog = require("moat.auditlog")
local json = require("moat.c.json")
local lfs = require("lfs")
local sys = require("moat.c.system")
local t = require("support.moat")

local function slurp(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

local function spit(path, data)
  local f = assert(io.open(path, "wb"))
  f:write(data)
  f:close()
end

local function lines_of(path)
  local out = {}
  for l in slurp(path):gmatch("([^\n]*)\n") do out[#out + 1] = l end
  return out
end

-- The records' lines of a log (without the signature line that ends a finished one).
local function records_of(path)
  local lines = lines_of(path)
  if json.decode(lines[#lines] or "").sig then table.remove(lines) end
  return lines
end

-- The signature line over the last of `lines` (records), signed with `sk`.
local function sig_line(run, lines, sk)
  local last = json.decode(lines[#lines])
  local sig = sys.sign(auditlog.signed_message(run.id, last.seq, last.hash), sk)
  return json.encode({ run = run.id, seq = last.seq, hash = last.hash, sig = sys.to_hex(sig) }, { canonical = true })
end

local function finished_run(name, n)
  local run = assert(auditlog.start({ name = name, workspace = "/w", runtime = "docker", image = "alpine" }))
  for i = 1, n do
    assert(run:record("secret.resolved", { name = "S" .. i, backend = "op", ref = "op://v/i/f" .. i, ms = i }))
  end
  assert(run:finish({ outcome = "exited", exit = 0 }))
  return run
end

-- Rewrites a run as an attacker with a key pair of their own would: edit, rechain, re-sign.
local function forge(run, home, edit)
  local lines = records_of(run.path)
  lines = edit(lines) or lines
  local prev = auditlog.ZERO
  for i, l in ipairs(lines) do
    local r = json.decode(l)
    r.seq, r.prev = i, prev
    r.hash = auditlog.hash(r)
    lines[i] = auditlog.serialize(r)
    prev = r.hash
  end
  local pk, sk = sys.sign_keypair()
  spit(home .. "/keys/audit.pub", sys.to_hex(pk) .. "\n")
  spit(home .. "/keys/audit.key", sys.to_hex(sk) .. "\n")
  spit(run.path, table.concat(lines, "\n") .. "\n" .. sig_line(run, lines, sk) .. "\n")
  return pk
end

describe("moat.auditlog: deletion and key swaps", function()
  local tmp, home

  before_each(function()
    tmp = t.tmpdir()
    home = tmp .. "/home"
    auditlog.set_home(home)
  end)

  after_each(function()
    auditlog.set_home(nil)
    t.rmtree(tmp)
  end)

  local function chain_report()
    local pk = auditlog.public_key()
    return require("moat.auditlog.chain").verify(home, { current = pk and auditlog.fingerprint(pk) })
  end

  it("writes one chained runs.jsonl line per run start and finish, with head and key", function()
    local a = finished_run("a", 1)
    local b = assert(auditlog.start({ name = "b" }))
    local lines = lines_of(home .. "/runs.jsonl")
    assert.equal(3, #lines)
    local prev = auditlog.ZERO
    local fp = auditlog.fingerprint(assert(auditlog.public_key()))
    for i, l in ipairs(lines) do
      local e = json.decode(l)
      assert.equal(i, e.seq)
      assert.equal(prev, e.prev)
      assert.equal(fp, e.key)
      prev = e.hash
    end
    local s, f, s2 = json.decode(lines[1]), json.decode(lines[2]), json.decode(lines[3])
    assert.same({ "start", a.id, 1 }, { s.event, s.run, s.head_seq })
    assert.same({ "finish", a.id, 3, json.decode(lines_of(a.path)[3]).hash }, { f.event, f.run, f.head_seq, f.head })
    assert.same({ "start", b.id }, { s2.event, s2.run })
    assert.is_true(chain_report().ok)
    b:close()
    assert.equal("rw-------", lfs.attributes(home .. "/runs.jsonl", "permissions"))
  end)

  it("fails a run whose tail and signature were deleted, naming the first missing seq", function()
    local run = finished_run("a", 3) -- seq 1..5
    local lines = lines_of(run.path)
    spit(run.path, table.concat(lines, "\n", 1, 3) .. "\n")
    local rep = auditlog.verify(run.dir)
    assert.equal("invalid", rep.status)
    assert.equal(4, rep.bad_seq)
    assert.matches("the tail %(seq 4..5%) and the signature were deleted", rep.reason)
  end)

  it("fails a run whose signature alone was deleted", function()
    local run = finished_run("a", 1)
    spit(run.path, table.concat(records_of(run.path), "\n") .. "\n")
    local rep = auditlog.verify(run.dir)
    assert.equal("invalid", rep.status)
    assert.equal(3, rep.bad_seq)
    assert.matches("the signature was deleted", rep.reason)
  end)

  it("fails a forged log re-signed with a new key pair, naming the key change", function()
    local run = finished_run("a", 2)
    forge(run, home, function(lines)
      local r = json.decode(lines[3])
      r.data.reference = "op://v/i/other"
      lines[3] = auditlog.serialize(r)
    end)
    local rep = auditlog.verify(run.dir)
    assert.equal("invalid", rep.status)
    assert.matches("the signing key was replaced", rep.reason)
    local c = chain_report()
    assert.is_false(c.ok)
    assert.matches("the key pair was replaced", table.concat(c.problems, "\n"))
  end)

  it("fails a log rewritten and re-signed with the same key (the head differs from runs.jsonl)", function()
    local run = finished_run("a", 2)
    local sk = assert(auditlog.ensure_keys())
    local lines = records_of(run.path)
    table.remove(lines, 3)
    local prev = auditlog.ZERO
    for i, l in ipairs(lines) do
      local r = json.decode(l)
      r.seq, r.prev = i, prev
      r.hash = auditlog.hash(r)
      lines[i], prev = auditlog.serialize(r), r.hash
    end
    spit(run.path, table.concat(lines, "\n") .. "\n" .. sig_line(run, lines, sk) .. "\n")
    local rep = auditlog.verify(run.dir)
    assert.equal("invalid", rep.status)
    assert.matches("does not end at the head runs.jsonl recorded", rep.reason)
  end)

  it("reports a deleted run, and a key change between runs", function()
    local a = finished_run("a", 0)
    finished_run("b", 0)
    t.rmtree(a.dir)
    local c = chain_report()
    assert.is_false(c.ok)
    assert.matches("run " .. a.id:gsub("%p", "%%%0") .. " deleted", c.problems[1])
    t.rmtree(home .. "/keys")
    finished_run("c", 0)
    c = chain_report()
    assert.matches("the signing key changed at runs.jsonl line 5", table.concat(c.problems, "\n"))
  end)

  it("fails a run whose runs.jsonl lines were removed while runs before and after it stay listed", function()
    finished_run("a", 0)
    local b = finished_run("b", 0)
    finished_run("c", 0)
    local lines = lines_of(home .. "/runs.jsonl")
    table.remove(lines, 4)
    table.remove(lines, 3)
    -- chained anew from there on, as someone hiding b would
    local keys = require("moat.auditlog.core").RUN_KEYS
    local prev = json.decode(lines[2]).hash
    for i = 3, #lines do
      local e = json.decode(lines[i])
      e.seq, e.prev = i, prev
      e.hash = auditlog.hash(e, keys)
      lines[i], prev = auditlog.serialize(e, keys), e.hash
    end
    spit(home .. "/runs.jsonl", table.concat(lines, "\n") .. "\n")
    local rep = auditlog.verify(b.dir)
    assert.equal("invalid", rep.status)
    assert.matches("not listed in runs.jsonl although runs before and after it are", rep.reason)
  end)

  it("accepts the newest run unlisted: its start line is durable only with its finish", function()
    finished_run("a", 0)
    local b = assert(auditlog.start({ name = "b" }))
    assert(b:commit())
    b:close()
    -- A machine that stopped before b finished may have lost b's start line.
    local lines = lines_of(home .. "/runs.jsonl")
    spit(home .. "/runs.jsonl", table.concat(lines, "\n", 1, 2) .. "\n")
    local rep = auditlog.verify(b.dir)
    assert.equal("unfinished", rep.status, rep.reason)
  end)

  it("pins the key: a run signed by another key fails against the pinned fingerprint", function()
    local run = finished_run("a", 0)
    local fp = auditlog.fingerprint(assert(auditlog.public_key()))
    assert.is_true(auditlog.verify(run.dir, { key = fp }).ok)
    local rep = auditlog.verify(run.dir, { key = "ed25519:" .. string.rep("ab", 32) })
    assert.equal("invalid", rep.status)
    assert.matches("not by the pinned key", rep.reason)
  end)

  describe("bundles", function()
    local bundle = require("moat.auditlog.bundle")

    local function export(run)
      local b = assert(bundle.build(home, run.dir, run.id))
      local path = tmp .. "/bundle.json"
      assert(bundle.write(path, b))
      return path
    end

    it("hold the exact lines of a run whose data has several keys, and verify away from home", function()
      local run = assert(auditlog.start({ name = "multi", workspace = "/w", runtime = "docker", image = "alpine",
        command = { "sh", "-c", "x" }, version = "1" }))
      assert(run:record("secret.failed", { name = "Z", backend = "op", ref = "op://v/i/f", ms = 5, kind = "auth" }))
      assert(run:finish({ outcome = "failed", exit = 69, kind = "secrets", ms = 9 }))
      local path = export(run)
      assert.equal("rw-------", lfs.attributes(path, "permissions"))
      local b = json.decode(slurp(path))
      assert.same(records_of(run.path), { table.unpack(b.records) })
      assert.equal(lines_of(run.path)[#lines_of(run.path)], b.signature)
      assert.equal(2, #b.runs)
      auditlog.set_home(tmp .. "/elsewhere")
      local rep = assert(bundle.verify(slurp(path)))
      assert.equal("valid", rep.status, rep.reason)
      assert.equal(auditlog.fingerprint(sys.from_hex(b.public_key)), rep.key)
      assert.is_nil(lfs.attributes(tmp .. "/elsewhere"))
    end)

    it("refuse to overwrite an existing file", function()
      local run = finished_run("a", 0)
      local path = tmp .. "/exists.json"
      spit(path, "mine")
      local ok, err = bundle.write(path, assert(bundle.build(home, run.dir, run.id)))
      assert.is_nil(ok)
      assert.matches("already exists", err)
      assert.equal("mine", slurp(path))
    end)

    it("fail when tampered, naming the seq; and against another pinned key", function()
      local run = finished_run("a", 3)
      local b = json.decode(slurp(export(run)))
      local r = json.decode(b.records[3])
      r.data.ms = 999
      b.records[3] = auditlog.serialize(r)
      local rep = assert(bundle.verify(json.encode(b)))
      assert.equal("invalid", rep.status)
      assert.equal(3, rep.bad_seq)
      rep = assert(bundle.verify(slurp(tmp .. "/bundle.json"), { key = "ed25519:" .. string.rep("0", 64) }))
      assert.equal("invalid", rep.status)
      assert.matches("pinned key", rep.reason)
    end)

    it("fail when re-signed with a swapped key but the runs.jsonl lines are kept", function()
      local run = finished_run("a", 1)
      local path = export(run)
      local b = json.decode(slurp(path))
      local pk, sk = sys.sign_keypair()
      local last = json.decode(b.records[#b.records])
      b.public_key = sys.to_hex(pk)
      b.signature = json.encode({ run = run.id, seq = last.seq, hash = last.hash,
        sig = sys.to_hex(sys.sign(auditlog.signed_message(run.id, last.seq, last.hash), sk)) }, { canonical = true })
      local rep = assert(bundle.verify(json.encode(b)))
      assert.equal("invalid", rep.status)
      assert.matches("the signing key was replaced", rep.reason)
    end)
  end)
end)
