-- Specs for moat.auditlog: the chain, group commit, signing, verification, concurrency,
-- crashes and write failures, and the home directory.
local auditlog = require("moat.auditlog")
local json = require("moat.c.json")
local lfs = require("lfs")
local proc = require("moat.c.proc")
local sys = require("moat.c.system")
local t = require("support.moat")
local need = require("support.need")

local WRITER = MOAT_ROOT .. "/spec/fixtures/audit/batch_writer.lua"

local slurp, spit = t.slurp, t.write

local function lines_of(path)
  local out = {}
  for l in slurp(path):gmatch("([^\n]*)\n") do out[#out + 1] = l end
  return out
end

local function perms(path)
  return lfs.attributes(path, "permissions")
end

local function count_lines(path)
  local n = 0
  for _ in slurp(path):gmatch("\n") do n = n + 1 end
  return n
end

-- Returns every regular file under dir.
local function files_under(dir, out)
  out = out or {}
  for name in lfs.dir(dir) do
    if name ~= "." and name ~= ".." then
      local p = dir .. "/" .. name
      local mode = lfs.attributes(p, "mode")
      if mode == "directory" then files_under(p, out) elseif mode == "file" then out[#out + 1] = p end
    end
  end
  return out
end

local function started_fields()
  return { name = "demo", workspace = "/work/demo", runtime = "docker", image = "alpine:3",
    command = { "sh", "-c", "env" }, version = "test" }
end

-- A finished run: 1 run.started, n secret.resolved, 1 run.finished (n + 2 records).
local function finished_run(n)
  local run = assert(auditlog.start(started_fields()))
  for i = 1, n do
    assert(run:record("secret.resolved", { name = "S" .. i, backend = "op", ref = "op://vault/item/f" .. i, ms = i }))
  end
  assert(run:finish({ outcome = "exited", exit = 0 }))
  return run
end

-- Recomputes prev and hash of every record from `from` on (an attacker's rewrite).
local function rechain(lines, from)
  local prev = from == 1 and auditlog.ZERO or json.decode(lines[from - 1]).hash
  for i = from, #lines do
    local r = json.decode(lines[i])
    r.prev = prev
    r.hash = auditlog.hash(r)
    lines[i] = auditlog.serialize(r)
    prev = r.hash
  end
end

local function wait_done(p, ms)
  local deadline = sys.monotonic_ms() + (ms or 120000)
  while not p:done() and sys.monotonic_ms() < deadline do proc.wait({ p }, 500) end
  assert.is_true(p:done(), "child did not finish in time")
  return p:result()
end

local function writer(home, args, env)
  local argv = { "lua5.4", WRITER, MOAT_ROOT, package.cpath, home }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  return assert(proc.spawn(argv, { env = t.env(env), stdout = "pipe", stderr = "pipe" }))
end

describe("moat.auditlog", function()
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

  describe("home", function()
    -- Runs auditlog.home() and start() in a child with `env`; returns its result.
    local function child(env, cwd)
      local code = ("package.path = %q .. '/lua/?.lua;' .. package.path; package.cpath = %q\n"):format(
        MOAT_ROOT, package.cpath) .. [[
        local a = require("moat.auditlog")
        local h, err, kind = a.home()
        print(h or ("nil " .. kind .. " " .. err))
        local run, serr, skind = a.start({ name = "x" })
        print(run and "started" or ("nil " .. skind .. " " .. serr))]]
      return t.exec({ "lua5.4", "-e", code }, { env = env, cwd = cwd })
    end

    it("is $MOAT_HOME when set, else ~/.moat", function()
      local r = child({ MOAT_HOME = tmp .. "/mh", HOME = tmp })
      assert.equal(0, r.code, r.stderr)
      assert.matches("^" .. (tmp .. "/mh"):gsub("%p", "%%%0") .. "\nstarted\n$", r.stdout)
      r = child({ MOAT_HOME = false, HOME = tmp })
      assert.matches("^" .. (tmp .. "/.moat"):gsub("%p", "%%%0") .. "\nstarted\n$", r.stdout)
      assert.equal("directory", lfs.attributes(tmp .. "/.moat/runs", "mode"))
    end)

    it("refuses a relative MOAT_HOME by name and creates nothing", function()
      local r = child({ MOAT_HOME = "rel/moat", HOME = tmp }, tmp)
      assert.equal(0, r.code, r.stderr)
      assert.matches("nil config MOAT_HOME is a relative path %(rel/moat%)", r.stdout)
      assert.is_nil(r.stdout:find("started", 1, true))
      assert.same({}, files_under(tmp))
      assert.is_nil(lfs.attributes(tmp .. "/rel"))
    end)

    it("refuses to guess when neither HOME nor MOAT_HOME is set, and creates nothing at /", function()
      local r = child({ MOAT_HOME = false, HOME = false }, tmp)
      assert.equal(0, r.code, r.stderr)
      assert.matches("nil config neither MOAT_HOME nor HOME is set", r.stdout)
      assert.is_nil(r.stdout:find("started", 1, true))
      assert.is_nil(lfs.attributes("/.moat"))
      r = child({ MOAT_HOME = "", HOME = "" }, tmp)
      assert.matches("nil config neither MOAT_HOME nor HOME is set", r.stdout)
    end)
  end)

  describe("start, record, finish", function()
    it("writes a chained log that verifies as valid", function()
      local run = finished_run(3)
      assert.equal(home .. "/runs/" .. run.id .. "/audit.jsonl", run.path)
      local rep = auditlog.verify(run.dir)
      local pk = sys.from_hex((slurp(home .. "/keys/audit.pub"):gsub("%s+$", "")))
      assert.same({ ok = true, status = "valid", torn = false, records = 5, signed_seq = 5,
        key = "ed25519:" .. sys.sha256(pk) }, rep)
      assert.is_true(auditlog.verify(run.path).ok)
    end)

    it("chains records as documented: hash = SHA-256(prev ‖ canonical JSON without hash)", function()
      local run = finished_run(2)
      local prev = string.rep("0", 64)
      local types = {}
      local lines = lines_of(run.path)
      table.remove(lines) -- the signature line (checked below)
      for i, line in ipairs(lines) do
        local r = json.decode(line)
        types[i] = r.type
        assert.equal(i, r.seq)
        assert.equal(prev, r.prev)
        assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ$", r.ts)
        local body = json.encode({ seq = r.seq, ts = r.ts, type = r.type, data = r.data, prev = r.prev },
          { canonical = true })
        assert.matches('^{"data":', body)
        assert.equal(sys.sha256(prev .. body), r.hash)
        -- the line itself: documented key order, no spaces
        assert.matches('^{"seq":' .. i .. ',"ts":"[^"]+","type":"[%w.]+","data":{.*},"prev":"%x+","hash":"%x+"}$', line)
        prev = r.hash
      end
      assert.same({ "run.started", "secret.resolved", "secret.resolved", "run.finished" }, types)
    end)

    it("ends the log with a signature line over (run id, last seq, last hash), in the same write", function()
      local run = finished_run(1)
      local lines = lines_of(run.path)
      assert.equal(4, #lines)
      local s = json.decode(lines[4])
      assert.same({ "hash", "run", "seq", "sig" }, (function()
        local ks = {}
        for k in pairs(s) do ks[#ks + 1] = k end
        table.sort(ks)
        return ks
      end)())
      assert.equal(json.encode(s, { canonical = true }), lines[4])
      assert.is_nil(lfs.attributes(run.dir .. "/audit.sig"))
      local last = json.decode(lines[3])
      assert.equal(run.id, s.run)
      assert.equal(3, s.seq)
      assert.equal(last.hash, s.hash)
      local pk = sys.from_hex((slurp(home .. "/keys/audit.pub"):gsub("%s+$", "")))
      local msg = "moat-audit-v1\n" .. run.id .. "\n3\n" .. last.hash
      assert.equal(msg, auditlog.signed_message(run.id, 3, last.hash))
      assert.is_true(sys.sign_verify(sys.from_hex(s.sig), msg, pk))
    end)

    it("returns each record and refuses records after finish", function()
      local run = assert(auditlog.start(started_fields()))
      local rec = run:record("secret.resolved", { name = "A", backend = "env", ref = "env://A", ms = 1 })
      assert.equal(2, rec.seq)
      assert.equal("secret.resolved", rec.type)
      assert.equal(64, #rec.hash)
      run:finish({ outcome = "exited", exit = 3 })
      assert.has_error(function() run:record("secret.resolved", { name = "B" }) end)
    end)

    it("creates home, runs and run directories 0700, the log and the secret key 0600 (as moat, umask 077)", function()
      local r = wait_done(writer(home, { "run", "1" }))
      assert.equal(0, r.code, r.stderr)
      local id = auditlog.ids()[1]
      local run = { dir = home .. "/runs/" .. id, path = home .. "/runs/" .. id .. "/audit.jsonl" }
      assert.equal("valid", auditlog.verify(run.dir).status)
      assert.equal("rwx------", perms(home))
      assert.equal("rwx------", perms(home .. "/runs"))
      assert.equal("rwx------", perms(run.dir))
      assert.equal("rw-------", perms(run.path))
      assert.equal("rwx------", perms(home .. "/keys"))
      assert.equal("rw-------", perms(home .. "/keys/audit.key"))
      assert.is_not_nil(perms(home .. "/keys/audit.pub"))
    end)

    it("makes the key pair once and reuses it", function()
      finished_run(0)
      local key = slurp(home .. "/keys/audit.key")
      local run2 = finished_run(0)
      assert.equal(key, slurp(home .. "/keys/audit.key"))
      assert.is_true(auditlog.verify(run2.dir).ok)
    end)

    it("gives run ids that sort by time, are unique and filename-safe", function()
      local ids = {}
      for i = 1, 5 do
        local run = assert(auditlog.start(started_fields()))
        run:close()
        ids[i] = run.id
        assert.matches("^%d%d%d%d%d%d%d%dT%d%d%d%d%d%d%.%d%d%d%d%d%dZ%-%x%x%x%x%x%x%x%x$", run.id)
      end
      for i = 2, 5 do assert.is_true(ids[i - 1] < ids[i] or ids[i - 1]:sub(1, 19) == ids[i]:sub(1, 19)) end
      local listed = auditlog.ids()
      assert.equal(5, #listed)
      for i = 2, 5 do assert.is_true(listed[i - 1] > listed[i]) end
    end)

    it("does not let a child process inherit the log's file descriptor", function()
      local run = assert(auditlog.start(started_fields()))
      local here = false
      for fd in lfs.dir("/proc/self/fd") do
        local target = lfs.symlinkattributes("/proc/self/fd/" .. fd, "target")
        if target == run.path then here = true end
      end
      assert.is_true(here, "the log is open in this process")
      local r = t.exec({ "ls", "-l", "/proc/self/fd/" })
      assert.equal(0, r.code)
      assert.matches("%->", r.stdout)
      assert.is_nil(r.stdout:find("audit.jsonl", 1, true))
      run:close()
    end)

    it("shows a run that never finished as unfinished, not valid", function()
      local run = assert(auditlog.start(started_fields()))
      run:record("secret.resolved", { name = "A", backend = "env", ref = "env://A", ms = 1 })
      assert(run:commit())
      run:close()
      local rep = auditlog.verify(run.dir)
      assert.is_false(rep.ok)
      assert.equal("unfinished", rep.status)
      assert.equal(2, rep.records)
      assert.is_nil(rep.bad_seq)
      assert.matches("no signature", rep.reason)
    end)
  end)

  describe("group commit", function()
    it("keeps records in memory until commit, then writes them after the tail", function()
      local run = assert(auditlog.start(started_fields()))
      assert.equal(0, count_lines(run.path))
      for i = 1, 3 do
        assert(run:record("secret.resolved", { name = "S" .. i, backend = "env", ref = "env://S", ms = i }))
      end
      assert.equal(0, count_lines(run.path))
      assert.is_true(run:commit())
      assert.equal(4, count_lines(run.path))
      assert.is_true(run:commit())
      assert.equal(4, count_lines(run.path))
      assert(run:finish({ outcome = "exited", exit = 0 }))
      assert.is_true(auditlog.verify(run.dir).ok)
    end)

    it("writes a batch with one append when the log takes several lines at once", function()
      local run = assert(auditlog.start(started_fields()))
      local real, calls = run._log, {}
      -- A log whose append_lines (the C primitive this stands in for) takes the whole batch;
      -- lock, tail and unlock go to the real log.
      run._log = {
        lock = function() return real:lock() end,
        unlock = function() return real:unlock() end,
        tail = function() return real:tail() end,
        append = function() error("a batch of several records must not be appended line by line") end,
        append_lines = function(_, text)
          calls[#calls + 1] = text
          for line in text:gmatch("[^\n]*\n") do assert(real:append(line)) end
          return true
        end,
      }
      for i = 1, 3 do
        assert(run:record("secret.resolved", { name = "S" .. i, backend = "env", ref = "env://S", ms = i }))
      end
      assert.is_true(run:commit())
      assert.equal(1, #calls)
      local n = 0
      for _ in calls[1]:gmatch("\n") do n = n + 1 end
      assert.equal(4, n)
      run._log = real
      assert(run:finish({ outcome = "exited", exit = 0 }))
      assert.is_true(auditlog.verify(run.dir).ok)
    end)

    it("chains a batch anew when another writer appended since it was built", function()
      local run = assert(auditlog.start(started_fields()))
      assert(run:commit())
      local other = assert(auditlog.open(run.dir))
      local mine = assert(run:record("secret.resolved", { name = "MINE", backend = "env", ref = "env://A", ms = 1 }))
      assert.equal(2, mine.seq)
      assert(other:record("secret.resolved", { name = "OTHER", backend = "env", ref = "env://B", ms = 2 }))
      assert(other:commit())
      other:close()
      assert(run:commit())
      assert.equal(3, mine.seq)
      local recs = auditlog.read(run.dir)
      assert.same({ "OTHER", "MINE" }, { recs[2].data.name, recs[3].data.name })
      assert(run:finish({ outcome = "exited", exit = 0 }))
      assert.is_true(auditlog.verify(run.dir).ok)
    end)

    it("reports an unwritable home at start, as an I/O failure, with nothing launched", function()
      spit(tmp .. "/file", "x")
      auditlog.set_home(tmp .. "/file")
      local run, err, kind = auditlog.start(started_fields())
      assert.is_nil(run)
      assert.equal("io", kind)
      assert.matches("^audit log: cannot create directory", err)
      auditlog.set_home(home)
      assert(auditlog.ensure_keys())
      assert(lfs.mkdir(home .. "/runs.jsonl.d"))
      os.remove(home .. "/runs.jsonl")
      assert(lfs.mkdir(home .. "/runs.jsonl"))
      run, err, kind = auditlog.start(started_fields())
      assert.is_nil(run)
      assert.equal("io", kind)
      assert.matches("runs.jsonl", err)
      assert.same({}, auditlog.ids())
    end)
  end)

  describe("verify fails naming the seq", function()
    local run, lines, sig
    before_each(function()
      run = finished_run(4) -- seq 1 started, 2..5 secrets, 6 finished, then the signature line
      lines = lines_of(run.path)
      sig = table.remove(lines) .. "\n"
      assert.equal(6, #lines)
    end)

    -- The log is its records' lines, then the signature line (sig: its text, or nil: none).
    local function write_lines(path, ls)
      spit(path, (#ls > 0 and table.concat(ls, "\n") .. "\n" or "") .. (sig or ""))
    end

    local function set_sig(text)
      sig = text
      write_lines(run.path, lines)
    end

    local function check(bad_seq, pattern)
      local rep = auditlog.verify(run.dir)
      assert.is_false(rep.ok)
      assert.equal("invalid", rep.status)
      assert.equal(bad_seq, rep.bad_seq)
      if pattern then assert.matches(pattern, rep.reason) end
      return rep
    end

    it("when a field is edited", function()
      lines[3] = lines[3]:gsub("op://vault/item/f2", "op://vault/item/XX")
      write_lines(run.path, lines)
      check(3, "changed")
    end)

    it("when a record is edited and its own hash recomputed", function()
      local r = json.decode(lines[4])
      r.data.ms = 9999
      r.hash = auditlog.hash(r)
      lines[4] = auditlog.serialize(r)
      write_lines(run.path, lines)
      check(5, "prev does not match")
    end)

    it("when a record is edited and the whole chain rewritten", function()
      lines[2] = lines[2]:gsub('"name":"S1"', '"name":"S9"')
      rechain(lines, 2)
      write_lines(run.path, lines)
      check(6, "signature")
    end)

    it("when a record is deleted", function()
      table.remove(lines, 3)
      write_lines(run.path, lines)
      check(3, "missing")
    end)

    it("when a record is inserted", function()
      table.insert(lines, 3, lines[2])
      write_lines(run.path, lines)
      check(3)
    end)

    it("when a forged record is inserted with seq and chain fixed up", function()
      table.insert(lines, 3, (lines[2]:gsub('"S1"', '"FORGED"')))
      for i = 3, #lines do
        local r = json.decode(lines[i])
        r.seq = i
        lines[i] = auditlog.serialize(r)
      end
      rechain(lines, 3)
      write_lines(run.path, lines)
      check(7, "appended")
    end)

    it("when two records are swapped", function()
      lines[3], lines[4] = lines[4], lines[3]
      write_lines(run.path, lines)
      check(3, "seq")
    end)

    it("when the tail is truncated", function()
      lines[6] = nil
      write_lines(run.path, lines)
      check(6, "truncated")
      lines[5], lines[4] = nil, nil
      write_lines(run.path, lines)
      check(4, "records 4..6 are missing")
    end)

    it("when the log is cut in the middle of a line (torn)", function()
      local text = slurp(run.path)
      spit(run.path, text:sub(1, #text - #sig - 40))
      local rep = check(6, "the tail %(seq 6..6%) and the signature were deleted")
      assert.is_true(rep.torn)
    end)

    it("when the signature line itself is cut (torn)", function()
      local text = slurp(run.path)
      spit(run.path, text:sub(1, #text - 20))
      local rep = check(6, "the signature was deleted")
      assert.is_true(rep.torn)
    end)

    it("when the signature is replaced", function()
      local pk, sk = sys.sign_keypair()
      assert.equal(32, #pk)
      local last = json.decode(lines[6])
      local forged = sys.sign(auditlog.signed_message(run.id, 6, last.hash), sk)
      set_sig(json.encode({ run = run.id, seq = 6, hash = last.hash,
        sig = sys.to_hex(forged) }, { canonical = true }) .. "\n")
      check(6, "signature of seq 6 does not match")
    end)

    it("when the signature is garbled or names another run", function()
      local s = json.decode((sig:gsub("\n$", "")))
      local good = s.sig
      s.sig = good:sub(1, 10) .. (good:sub(11, 11) == "0" and "1" or "0") .. good:sub(12)
      set_sig(json.encode(s, { canonical = true }) .. "\n")
      check(6, "does not match")
      s.sig, s.run = good, "20200101T000000.000Z-00000000"
      set_sig(json.encode(s, { canonical = true }) .. "\n")
      check(6, "for run")
    end)

    it("when the signature names seq 0 or below, even as the log's only line", function()
      local s = json.decode((sig:gsub("\n$", "")))
      s.seq = -3
      set_sig(json.encode(s, { canonical = true }) .. "\n")
      check(1, "signed run starts at seq 1")
      lines = {}
      s.seq = 0
      set_sig(json.encode(s, { canonical = true }) .. "\n")
      check(1, "signed run starts at seq 1")
    end)

    it("when an older moat's audit.sig beside the log is not JSON (one that is verifies)", function()
      local text = sig
      set_sig(nil)
      spit(run.dir .. "/audit.sig", text)
      assert.equal("valid", auditlog.verify(run.dir).status)
      spit(run.dir .. "/audit.sig", "not json")
      check(6, "malformed")
    end)

    it("when a record is appended after the signed head", function()
      local r = json.decode(lines[6])
      r.seq, r.prev, r.type, r.data = 7, r.hash, "secret.resolved", { name = "LATE" }
      r.hash = auditlog.hash(r)
      lines[7] = auditlog.serialize(r)
      write_lines(run.path, lines)
      check(7, "appended")
    end)

    it("when a line is re-serialised with spaces (not canonical)", function()
      lines[2] = lines[2]:gsub('"seq":2,', '"seq": 2,')
      write_lines(run.path, lines)
      check(2, "canonical")
    end)

    it("when a line is not JSON", function()
      lines[4] = "garbage"
      write_lines(run.path, lines)
      check(4, "not a JSON object")
    end)

    it("when the signature alone is removed (runs.jsonl recorded the finish)", function()
      set_sig(nil)
      check(6, "the signature was deleted: runs.jsonl records the run's finish at seq 6")
    end)

    it("when records are added after the signature line", function()
      local r = json.decode(lines[6])
      r.seq, r.prev, r.type, r.data = 7, r.hash, "secret.resolved", { name = "LATE" }
      r.hash = auditlog.hash(r)
      spit(run.path, slurp(run.path) .. auditlog.serialize(r) .. "\n")
      check(7, "added after the run was signed")
    end)
  end)

  describe("the formatter", function()
    local saved
    before_each(function() saved = package.loaded["moat.audit"] end)
    after_each(function() package.loaded["moat.audit"] = saved end)

    it("can be replaced to add fields; the core still chains and signs", function()
      local builtin = require("moat.audit")
      package.loaded["moat.audit"] = {
        format = function(rtype, fields)
          local d = builtin.format(rtype, fields)
          d.site, d.seq, d.hash = "acme", 999, "forged"
          return d
        end,
      }
      local run = finished_run(2)
      local recs = auditlog.read(run.dir)
      for i, r in ipairs(recs) do
        assert.equal(i, r.seq)
        assert.equal("acme", r.data.site)
        assert.are_not.equal("forged", r.hash)
      end
      assert.is_true(auditlog.verify(run.dir).ok)
    end)

    it("that returns no table stops the record with a config failure and appends nothing", function()
      local run = assert(auditlog.start(started_fields()))
      package.loaded["moat.audit"] = { format = function() return "data" end }
      local rec, err, kind = run:record("secret.resolved", { name = "A" })
      assert.is_nil(rec)
      assert.equal("config", kind)
      assert.matches("not a table", err)
      package.loaded["moat.audit"] = { format = function() return { 1, 2 } end }
      rec, err, kind = run:record("secret.resolved", { name = "A" })
      assert.is_nil(rec)
      assert.equal("config", kind)
      assert.matches("not a JSON object", err)
      package.loaded["moat.audit"] = { format = function() error("boom") end }
      rec, err = run:record("secret.resolved", { name = "A" })
      assert.is_nil(rec)
      assert.matches("failed on secret.resolved: .*boom", err)
      assert(run:commit())
      assert.equal(1, count_lines(run.path))
      run:close()
    end)

    it("leaves no value in any file under the moat home", function()
      local VALUE = "hunter2-SECRET-value-7f3a"
      local run = assert(auditlog.start({ name = "demo", workspace = "/w", value = VALUE, env = { X = VALUE } }))
      run:record("policy.denied", { denials = { { script = "p.lua", target = "X", reason = "no", value = VALUE } } })
      run:record("secret.resolved", { name = "A", backend = "env", ref = "env://A", ms = 2, value = VALUE })
      run:record("secret.failed", { name = "B", backend = "op", ref = "op://v/i/f", ms = 3, ok = false,
        kind = "auth", reason = "op said " .. VALUE, fix = VALUE })
      run:record("container.started", { runtime = "docker", image = "alpine", container = "moat-x",
        env = { B = VALUE } })
      run:record("container.exited", { status = 0, ms = 10, stdout = VALUE })
      assert(run:finish({ outcome = "exited", exit = 0, output = VALUE }))
      assert.is_true(auditlog.verify(run.dir).ok)
      local files = files_under(home)
      assert.is_true(#files >= 4)
      for _, f in ipairs(files) do
        assert.is_nil(slurp(f):find(VALUE, 1, true), f .. " holds the value")
      end
    end)
  end)

  describe("list and find", function()
    it("lists runs newest first with name, start, status and verification", function()
      local a = finished_run(1)
      local b = assert(auditlog.start(started_fields()))
      assert(b:commit())
      b:close()
      local c = assert(auditlog.start({ name = "other" }))
      c:record("secret.failed", { name = "X", backend = "op", ref = "op://v/i/f", ms = 1, kind = "not_found" })
      c:finish({ outcome = "failed", exit = 69, kind = "secrets" })
      local list = auditlog.list()
      assert.equal(3, #list)
      assert.same({ c.id, b.id, a.id }, { list[1].id, list[2].id, list[3].id })
      assert.equal("other", list[1].name)
      assert.equal("failed", list[1].status)
      assert.equal(69, list[1].exit)
      assert.is_true(list[1].verifies)
      assert.equal("unfinished", list[2].status)
      assert.is_false(list[2].verifies)
      assert.equal("finished", list[3].status)
      assert.equal(0, list[3].exit)
      assert.equal("demo", list[3].name)
      assert.matches("Z$", list[3].started)
    end)

    it("finds a run by id, unique prefix or the newest", function()
      local a = finished_run(0)
      local b = finished_run(0)
      assert.equal(b.dir, (auditlog.find(nil)))
      assert.equal(a.dir, (auditlog.find(a.id)))
      assert.equal(a.dir, (auditlog.find(a.id:sub(1, #a.id - 3))))
      local none, why = auditlog.find("1999")
      assert.is_nil(none)
      assert.matches("no run matches", why)
      if a.id:sub(1, 8) == b.id:sub(1, 8) then
        local amb, msg = auditlog.find(a.id:sub(1, 8))
        assert.is_nil(amb)
        assert.matches("matches 2 runs", msg)
      end
    end)

    it("returns an empty list when nothing was recorded", function()
      assert.same({}, auditlog.list())
      local none, why = auditlog.find(nil)
      assert.is_nil(none)
      assert.matches("no runs recorded", why)
    end)
  end)

  describe("concurrency", function()
    it("8 writer processes x 1000 records to one file form one valid chain", function()
      auditlog.ensure_home()
      local dir = home .. "/runs/" .. auditlog.new_id()
      assert(lfs.mkdir(home .. "/runs"))
      assert(lfs.mkdir(dir))
      local ps = {}
      -- Odd writers commit every record, even ones in batches of 50 that must be chained anew
      -- whenever another writer got in first.
      for w = 1, 8 do ps[w] = writer(home, { "append", dir, "1000", "W" .. w, w % 2 == 0 and "50" or "1" }) end
      for w = 1, 8 do
        local r = wait_done(ps[w], 300000)
        assert.equal(0, r.code, r.stderr)
      end
      local path = dir .. "/audit.jsonl"
      local lines = lines_of(path)
      assert.equal(8000, #lines)
      local seen = {}
      for i, l in ipairs(lines) do
        local r = json.decode(l)
        assert.is_table(r, "line " .. i .. " does not parse")
        assert.equal(i, r.seq)
        seen[r.data.name] = true
      end
      for w = 1, 8 do
        assert.is_true(seen["W" .. w .. "_1"] and seen["W" .. w .. "_1000"])
      end
      -- Writers that open a run someone else began record no start line in runs.jsonl.
      assert.is_nil(lfs.attributes(home .. "/runs.jsonl"))
      local rep = auditlog.verify(dir)
      assert.equal("unfinished", rep.status)
      assert.is_nil(rep.bad_seq)
      assert.equal(8000, rep.records)
      assert(assert(auditlog.open(dir)):finish({ outcome = "exited", exit = 0 }))
      rep = auditlog.verify(dir)
      assert.equal("valid", rep.status)
      assert.equal(8001, rep.records)
    end)
  end)

  describe("crashes", function()
    it("a writer killed with SIGKILL at random points leaves a log that verifies or is unfinished", function()
      math.randomseed(sys.epoch_ms())
      for _ = 1, 12 do
        local p = writer(home, { "run", tostring(math.random(0, 1) == 0 and 0 or 300) })
        proc.wait({ p }, math.random(0, 120))
        p:kill("KILL")
        wait_done(p, 10000)
      end
      local list = auditlog.list()
      for _, e in ipairs(list) do
        local rep = e.verify
        assert.are_not.equal("invalid", rep.status, e.id .. ": " .. tostring(rep.reason))
        if rep.status == "unfinished" then assert.is_nil(rep.bad_seq) end
      end
      -- and a new run afterwards works as before
      local run = finished_run(1)
      assert.is_true(auditlog.verify(run.dir).ok)
    end)
  end)

  describe("write failures", function()
    local shim
    setup(function()
      shim = os.tmpname()
      local r = t.exec({ "cc", "-shared", "-fPIC", "-o", shim, MOAT_ROOT .. "/spec/fixtures/audit/failshim.c", "-ldl" })
      assert.equal(0, r.code, r.stderr)
    end)
    teardown(function() os.remove(shim) end)

    it("the shim lets a normal run through", function()
      local r = wait_done(writer(home, { "run", "2" }, { LD_PRELOAD = shim }))
      assert.equal(0, r.code, r.stderr)
      assert.equal("launched\n", r.stdout)
    end)

    for _, case in ipairs({ { "write", "No space left" }, { "fsync", "Input/output error" } }) do
      it("a failing " .. case[1] .. " stops the writer with exit 74 before launch", function()
        local r = wait_done(writer(home, { "run", "2" }, { LD_PRELOAD = shim, MOAT_TEST_FAIL = case[1] }))
        assert.equal(74, r.code)
        assert.equal("", r.stdout)
        assert.matches("audit log", r.stderr)
        assert.matches(case[2], r.stderr)
        assert.matches(case[1], r.stderr)
      end)
    end

    it("a full file system stops the writer with exit 74 and the log stays a valid chain", function()
      local mnt = tmp .. "/tiny"
      assert(lfs.mkdir(mnt))
      local m = t.exec({ "mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", mnt })
      if m.code ~= 0 then
        pending(need.missing("a tmpfs mount", m.stderr:gsub("\n", " ") .. " (the LD_PRELOAD cases cover it)"))
        return
      end
      local ok, err = pcall(function()
        auditlog.set_home(mnt .. "/home")
        local run = assert(auditlog.start(started_fields()))
        assert(run:commit()) -- run.started, and the start line in runs.jsonl
        local f = assert(io.open(mnt .. "/filler", "wb"))
        local chunk = string.rep("x", 4096)
        while f:write(chunk) and f:flush() do end
        f:close()
        local failed, kind
        for i = 1, 10000 do
          assert(run:record("secret.resolved",
            { name = "S" .. i, backend = "env", ref = "env://" .. string.rep("R", 200), ms = i }))
          local good, e, k = run:commit()
          if not good then failed, kind = e, k break end
        end
        assert.is_not_nil(failed, "no write failed on a full file system")
        assert.equal("io", kind)
        -- ENOSPC, or a short write (cut back to the old size) reported as EIO
        assert.matches("audit log: cannot append record %d+", failed)
        assert.is_truthy(failed:find("No space left", 1, true) or failed:find("short write", 1, true))
        local rep = auditlog.verify(run.dir)
        assert.equal("unfinished", rep.status)
        assert.is_false(rep.torn)
        assert.is_nil(rep.bad_seq)
        run:close()
      end)
      t.exec({ "umount", mnt })
      assert(ok, err)
    end)
  end)
end)
