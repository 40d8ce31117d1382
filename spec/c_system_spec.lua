-- Specs for moat.c.system: hashing, clocks, hardening, the audit log's append, atomic writes, Ed25519.
local system = require("moat.c.system")
local t = require("support.moat")

local function sh(cmd)
  local p = assert(io.popen(cmd, "r"))
  local out = p:read("a")
  p:close()
  return out
end

local tmpdir, slurp, spit = t.tmpdir, t.slurp, t.write

local function mode_of(path)
  return (sh("stat -c %a '" .. path .. "'"):gsub("%s+$", ""))
end

-- Lua source that makes a child lua5.4 find the same built modules as this process.
local PRELUDE = string.format("package.cpath = %q; local system = require('moat.c.system');", package.cpath)

-- Runs a Lua chunk in a child lua5.4 (through a file, so no quoting games) and returns its stdout.
local function child(code, shell_prefix)
  local path = os.tmpname()
  spit(path, PRELUDE .. "\n" .. code)
  local out = sh((shell_prefix or "") .. "lua5.4 " .. path .. " 2>&1")
  os.remove(path)
  return out
end

describe("moat.c.system", function()
  local dir
  before_each(function() dir = tmpdir() end)
  after_each(function() os.execute("rm -rf '" .. dir .. "'") end)

  describe("sha256", function()
    it("matches the FIPS 180-2 vectors", function()
      assert.equal("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", system.sha256(""))
      assert.equal("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", system.sha256("abc"))
      assert.equal("248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
        system.sha256("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"))
    end)
    it("hashes bytes including NUL", function()
      assert.are_not.equal(system.sha256("a\0b"), system.sha256("a\0c"))
      assert.matches("^%x+$", system.sha256("a\0b"))
    end)
    it("raises on a non-string", function()
      assert.has_error(function() system.sha256({}) end)
    end)
  end)

  describe("random_hex", function()
    it("gives 2n lowercase hex digits, never the same twice", function()
      local seen = {}
      for _ = 1, 200 do
        local h = system.random_hex(16)
        assert.equal(32, #h)
        assert.matches("^[0-9a-f]+$", h)
        assert.is_nil(seen[h])
        seen[h] = true
      end
      assert.equal("", system.random_hex(0))
    end)
    it("raises on a count out of range", function()
      assert.has_error(function() system.random_hex(-1) end)
      assert.has_error(function() system.random_hex(1 << 20) end)
    end)
  end)

  describe("clocks", function()
    it("now(6) has microseconds, and refuses other precisions", function()
      assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%d%d%d%dZ$", system.now(6))
      assert.has_error(function() system.now(4) end)
    end)

    it("now() is UTC ISO 8601 with milliseconds", function()
      local now = system.now()
      assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ$", now)
      assert.equal(os.date("!%Y-%m-%d", system.epoch_ms() // 1000), now:sub(1, 10))
    end)
    it("epoch_ms agrees with os.time", function()
      local ms = system.epoch_ms()
      assert.is_true(math.type(ms) == "integer")
      assert.is_true(math.abs(ms // 1000 - os.time()) <= 5)
    end)
    it("monotonic_ms never goes back", function()
      local a = system.monotonic_ms()
      local b = system.monotonic_ms()
      assert.is_true(math.type(a) == "integer" and b >= a)
    end)
  end)

  describe("process facts", function()
    it("isatty is false for a redirected fd and raises on a bad one", function()
      assert.equal("false\n", child("print(system.isatty(0))", "true | "))
      assert.has_error(function() system.isatty(-1) end)
    end)
    it("getpid is this process and getuid is id -u", function()
      local stat = slurp("/proc/self/stat")
      assert.equal(tonumber(stat:match("^(%d+)")), system.getpid())
      assert.equal(tonumber(sh("id -u")), system.getuid())
    end)
    it("kill signals a process or a group by number or name; refuses 0 and -1", function()
      local proc = require("moat.c.proc")
      local p = assert(proc.spawn({ "sleep", "100" }))
      local pid = p:pid()
      assert.is_true(system.kill(pid, 0))
      assert.is_true(system.kill(-pid, "TERM"))
      while not p:done() do proc.wait({ p }, 1000) end
      assert.equal(15, p:result().signal)
      p:close()
      local ok, msg, errno = system.kill(pid, "KILL")
      assert.is_nil(ok)
      assert.matches("kill", msg)
      assert.equal(3, errno) -- ESRCH
      assert.has_error(function() system.kill(0, "KILL") end)
      assert.has_error(function() system.kill(-1, "KILL") end)
      assert.has_error(function() system.kill(pid, "NOSUCH") end)
    end)
    it("subreaper makes this process the reaper of orphaned descendants, and stops", function()
      -- The orphan's parent is the child Lua process while it is a subreaper, init otherwise.
      local code = [[
local on = ...
print(system.subreaper(on))
local f = io.popen("setsid sleep 30 & echo $!")
local pid = tonumber(f:read("l"))
f:close()
local s = io.open("/proc/" .. pid .. "/stat"):read("a")
print(tonumber(s:match("%) %S+ (%d+)")) == system.getpid())
system.kill(pid, "KILL")
]]
      assert.equal("true\ntrue\n", child("local function go(...) " .. code .. " end go(true)"))
      assert.equal("true\nfalse\n", child("local function go(...) " .. code .. " end go(false)"))
    end)
    it("environ lists the environment", function()
      local env = system.environ()
      assert.equal(os.getenv("PATH"), env.PATH)
      assert.equal("a=b c", child("print(system.environ().MOAT_SPEC_X)", "MOAT_SPEC_X='a=b c' "):gsub("\n$", ""))
    end)
    it("realpath resolves symlinks and fails with an errno", function()
      os.execute("mkdir '" .. dir .. "/real' && ln -s real '" .. dir .. "/link'")
      local real = system.realpath(dir .. "/real")
      assert.equal(real, system.realpath(dir .. "/link/../real"))
      assert.equal(real, system.realpath(dir .. "/link"))
      local ok, msg, err = system.realpath(dir .. "/missing")
      assert.is_nil(ok)
      assert.matches("missing", msg)
      assert.is_true(err > 0)
    end)
  end)

  describe("harden", function()
    -- Linux gives /proc/<pid> of a process that is not dumpable to root; so the child runs as
    -- someone else than root (nobody, when the suite runs as root) and watches the owner of
    -- its own /proc/self/status change.
    it("makes the process undumpable, without core files, with umask 077", function()
      local path = dir .. "/harden.lua"
      spit(path, PRELUDE .. [[
        local lfs = require("lfs")
        print("owner before", lfs.attributes("/proc/self/status", "uid"))
        assert(system.harden())
        print("owner after", lfs.attributes("/proc/self/status", "uid"))
        local f = io.open("/proc/self/status"); local st = f:read("a"); f:close()
        print("umask", st:match("Umask:%s*(%d+)"))
        f = io.open("/proc/self/limits"); local lim = f:read("a"); f:close()
        print("core", lim:match("Max core file size%s+(%S+)%s+(%S+)"))
      ]])
      os.execute("chmod 755 '" .. dir .. "' && chmod 644 '" .. path .. "'")
      local uid, as = system.getuid(), ""
      if uid == 0 then uid, as = 65534, "setpriv --reuid=65534 --regid=65534 --clear-groups " end
      local out = sh(as .. "lua5.4 " .. path .. " 2>&1")
      assert.matches("owner before\t" .. uid .. "\nowner after\t0\n", out)
      assert.matches("umask\t0077\n", out)
      assert.matches("core\t0\t", out)
    end)

    it("sets the soft core limit to 0 and keeps the hard one, so a child can get it back", function()
      local out = child([[
        print("before", system.getrlimit("core"))
        assert(system.harden())
        print("after", system.getrlimit("core"))
      ]], "ulimit -S -c 1024; ulimit -H -c 4096; ")
      -- The shell counts the core size in 512-byte blocks.
      assert.equal("before\t524288\t2097152\nafter\t0\t2097152\n", out)
    end)
  end)

  describe("getrlimit", function()
    it("gives the soft and hard limits, -1 for unlimited, and raises on an unknown name", function()
      assert.equal("256\t512\n", child("print(system.getrlimit('nofile'))", "ulimit -S -n 256; ulimit -H -n 512; "))
      assert.equal("-1\n", child("print((system.getrlimit('core')))", "ulimit -S -c unlimited; "))
      assert.has_error(function() system.getrlimit("files") end)
    end)
  end)

  describe("read_file", function()
    it("reads a whole regular file, binary and empty ones too", function()
      local data = "\0bin\r\n" .. ("x"):rep(200000)
      spit(dir .. "/f", data)
      assert.equal(data, system.read_file(dir .. "/f"))
      spit(dir .. "/empty", "")
      assert.equal("", system.read_file(dir .. "/empty"))
      assert.matches("^Name:", system.read_file("/proc/self/status"))
    end)

    it("refuses a FIFO at once, a device, a directory and a socket, naming the path", function()
      os.execute("mkfifo '" .. dir .. "/fifo'")
      local t0 = system.monotonic_ms()
      local data, msg, err = system.read_file(dir .. "/fifo")
      assert.is_true(system.monotonic_ms() - t0 < 2000)
      assert.is_nil(data)
      assert.equal(dir .. "/fifo is a FIFO, not a regular file", msg)
      assert.is_nil(err)
      assert.equal("/dev/null is a device, not a regular file", select(2, system.read_file("/dev/null")))
      assert.equal(dir .. " is a directory, not a regular file", select(2, system.read_file(dir)))
      local sock = dir .. "/sock"
      local bind = "import socket,sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])"
      if os.execute("command -v python3 >/dev/null") and os.execute("python3 -c '" .. bind .. "' '" .. sock .. "'") then
        assert.equal(sock .. " is a socket, not a regular file", select(2, system.read_file(sock)))
      end
    end)

    it("refuses a file over the limit, naming it; a missing file gives an errno", function()
      spit(dir .. "/big", ("y"):rep(101))
      assert.equal(("y"):rep(101), system.read_file(dir .. "/big", 101))
      assert.same({ nil, dir .. "/big is over the 100-byte limit" }, { system.read_file(dir .. "/big", 100) })
      spit(dir .. "/huge", ("z"):rep((1 << 20) + 1))
      assert.same({ nil, dir .. "/huge is over the 1048576-byte limit" }, { system.read_file(dir .. "/huge") })
      local data, msg, err = system.read_file(dir .. "/missing")
      assert.is_nil(data)
      assert.matches("missing", msg)
      assert.equal(2, err)
      assert.has_error(function() system.read_file(dir .. "/big", -1) end)
    end)
  end)

  describe("sha256_file", function()
    it("hashes a file in chunks like sha256 of its contents", function()
      local data = ("0123456789abcdef"):rep(20000) .. "tail"
      spit(dir .. "/f", data)
      assert.equal(system.sha256(data), system.sha256_file(dir .. "/f", #data))
      spit(dir .. "/empty", "")
      assert.equal(system.sha256(""), system.sha256_file(dir .. "/empty", 0))
    end)

    it("refuses a file over the limit, a FIFO, a device and a directory", function()
      spit(dir .. "/f", ("a"):rep(70000))
      assert.same({ nil, dir .. "/f is over the 69999-byte limit" }, { system.sha256_file(dir .. "/f", 69999) })
      os.execute("mkfifo '" .. dir .. "/fifo'")
      assert.equal(dir .. "/fifo is a FIFO, not a regular file", select(2, system.sha256_file(dir .. "/fifo", 10)))
      assert.equal("/dev/zero is a device, not a regular file", select(2, system.sha256_file("/dev/zero", 10)))
      assert.equal(dir .. " is a directory, not a regular file", select(2, system.sha256_file(dir, 10)))
      assert.has_error(function() system.sha256_file(dir .. "/f") end)
    end)
  end)

  describe("open_log", function()
    it("creates the file 0600 even under a umask that would drop bits", function()
      local path = dir .. "/audit.jsonl"
      local out = child(string.format("local l = assert(system.open_log(%q)); l:close(); print('ok')", path),
        "umask 0277; ")
      assert.equal("ok\n", out)
      assert.equal("600", mode_of(path))
    end)
    it("does not change the mode of an existing file", function()
      local path = dir .. "/old"
      spit(path, "x\n")
      os.execute("chmod 640 '" .. path .. "'")
      assert(system.open_log(path)):close()
      assert.equal("640", mode_of(path))
    end)
    it("fails with nil, message, errno in a missing directory", function()
      local log, msg, err = system.open_log(dir .. "/no/such/file")
      assert.is_nil(log)
      assert.matches("no/such/file", msg)
      assert.is_true(err > 0)
    end)
    it("tails, appends and reports torn files", function()
      local path = dir .. "/a.log"
      local log <close> = assert(system.open_log(path))
      local line, torn = log:tail()
      assert.is_nil(line)
      assert.is_false(torn)
      assert.is_true(log:lock())
      assert.is_true(log:append("first\n"))
      assert.same({ "first", false }, { log:tail() })
      assert.is_true(log:append("second line\n"))
      assert.same({ "second line", false }, { log:tail() })
      assert.is_true(log:unlock())
      assert.equal("first\nsecond line\n", slurp(path))
      local f = assert(io.open(path, "ab"))
      f:write("torn rec")
      f:close()
      assert.same({ "second line", true }, { log:tail() })
    end)
    it("tail on a file with only a torn line gives nil, true", function()
      local path = dir .. "/t.log"
      spit(path, "no newline")
      local log <close> = assert(system.open_log(path))
      assert.same({ nil, true }, { log:tail() })
    end)
    it("tail reads lines longer than its chunk and an empty last line", function()
      local path = dir .. "/long.log"
      local long = string.rep("0123456789", 1500)
      spit(path, "a\n" .. long .. "\n")
      local log <close> = assert(system.open_log(path))
      assert.equal(long, (log:tail()))
      assert.is_true(log:append("\n"))
      assert.same({ "", false }, { log:tail() })
      spit(path, long .. "\n" .. long .. "x")
      assert.same({ long, true }, { log:tail() })
    end)
    it("append_lines writes several whole lines at once", function()
      local path = dir .. "/g.log"
      local log <close> = assert(system.open_log(path))
      assert.is_true(log:append_lines("one\n"))
      assert.is_true(log:append_lines("two\nthree\n\n"))
      assert.equal("one\ntwo\nthree\n\n", slurp(path))
      assert.same({ "", false }, { log:tail() })
      assert.has_error(function() log:append_lines("") end)
      assert.has_error(function() log:append_lines("a\nb") end)
      assert.equal("one\ntwo\nthree\n\n", slurp(path))
    end)
    it("append_lines reports a failed write with nil, message, errno and leaves the file whole", function()
      local path = dir .. "/full.log"
      local out = child(string.format([[
        local log = assert(system.open_log(%q))
        assert(log:append_lines("kept\n"))
        print(log:append_lines(("x"):rep(5000) .. "\n"))
      ]], path), "trap '' XFSZ; ulimit -f 4; ")
      -- The write stops at the 2048-byte file size limit: a short write, cut back.
      assert.matches("^nil\tappend: short write: [^\n]*\t%d+\n$", out)
      assert.equal("kept\n", slurp(path))
    end)
    it("append raises on a line without its newline or with another one", function()
      local log <close> = assert(system.open_log(dir .. "/b.log"))
      assert.has_error(function() log:append("no newline") end)
      assert.has_error(function() log:append("two\nlines\n") end)
      assert.has_error(function() log:append("") end)
      assert.equal("", slurp(dir .. "/b.log"))
    end)
    it("close is idempotent and a closed log raises", function()
      local log = assert(system.open_log(dir .. "/c.log"))
      log:close()
      log:close()
      assert.has_error(function() log:append("x\n") end, "log is closed")
      assert.has_error(function() log:tail() end)
      assert.matches("closed", tostring(log))
    end)
    it("closing releases the lock", function()
      local path = dir .. "/l.log"
      local a = assert(system.open_log(path))
      assert.is_true(a:lock())
      a:close()
      -- a child would block forever on a held lock; it must get it and finish
      local out = child(string.format("local l = assert(system.open_log(%q)); l:lock(); print('locked')", path),
        "timeout 10 ")
      assert.equal("locked\n", out)
    end)
  end)

  describe("concurrent appenders", function()
    it("8 processes x 500 chained records under lock give one consistent chain", function()
      local path = dir .. "/chain.log"
      local script = dir .. "/writer.lua"
      spit(script, PRELUDE .. [[
        local log = assert(system.open_log(arg[1]))
        for _ = 1, 500 do
          assert(log:lock())
          local last, torn = log:tail()
          assert(not torn, "torn log")
          local seq = last and tonumber(last:match("^(%d+) ")) + 1 or 1
          assert(log:append(string.format("%d %s %d\n", seq, system.sha256(last or ""), system.getpid())))
          assert(log:unlock())
        end
        log:close()
      ]])
      local cmd = "for i in 1 2 3 4 5 6 7 8; do lua5.4 '" .. script .. "' '" .. path .. "' & done; "
        .. "fail=0; for j in 1 2 3 4 5 6 7 8; do wait -n || fail=1; done; exit $fail"
      assert.is_true(os.execute("bash -c \"" .. cmd .. "\""))
      local data = slurp(path)
      assert.equal("\n", data:sub(-1))
      local n, prev, pids = 0, "", {}
      for line in data:gmatch("([^\n]*)\n") do
        n = n + 1
        local seq, hash, pid = line:match("^(%d+) (%x+) (%d+)$")
        assert.equal(n, tonumber(seq))
        assert.equal(system.sha256(prev), hash)
        pids[pid] = (pids[pid] or 0) + 1
        prev = line
      end
      assert.equal(4000, n)
      local writers = 0
      for _, count in pairs(pids) do
        writers = writers + 1
        assert.equal(500, count)
      end
      assert.equal(8, writers)
    end)
  end)

  describe("mkdir", function()
    it("makes a directory with exactly the mode asked for, whatever the umask", function()
      local made = os.tmpname()
      os.remove(made)
      assert.is_true(system.mkdir(made, 448))
      local perm = require("lfs").attributes(made, "permissions")
      assert.equal("rwx------", perm)
      local ok, msg, err = system.mkdir(made, 448)
      assert.is_nil(ok)
      assert.matches("^mkdir .*: File exists$", msg)
      assert.equal(17, err)
      os.remove(made)
    end)
  end)

  describe("write_file and fsync_dir", function()
    it("replaces a file atomically with the given mode and leaves no temp file", function()
      local path = dir .. "/keys"
      spit(path, "old contents")
      assert.is_true(system.write_file(path, "new\0contents", tonumber("600", 8)))
      assert.equal("new\0contents", slurp(path))
      assert.equal("600", mode_of(path))
      assert.is_true(system.write_file(path, "again", tonumber("640", 8)))
      assert.equal("again", slurp(path))
      assert.equal("640", mode_of(path))
      assert.equal("keys\n", sh("ls -A '" .. dir .. "'"))
    end)
    it("defaults to 0600 whatever the umask", function()
      local path = dir .. "/d"
      assert.equal("ok\n", child(string.format("assert(system.write_file(%q, 'x')); print('ok')", path),
        "umask 0277; "))
      assert.equal("600", mode_of(path))
    end)
    it("fails with nil, message, errno and leaves the old file untouched", function()
      local ok, msg, err = system.write_file(dir .. "/none/f", "x")
      assert.is_nil(ok)
      assert.matches("none/f", msg)
      assert.is_true(err > 0)
      os.execute("mkdir '" .. dir .. "/ro' && echo keep > '" .. dir .. "/ro/f' && chmod 500 '" .. dir .. "/ro'")
      if system.getuid() ~= 0 then -- root ignores directory permissions
        assert.is_nil(system.write_file(dir .. "/ro/f", "x"))
        assert.equal("keep\n", slurp(dir .. "/ro/f"))
      end
      os.execute("chmod 700 '" .. dir .. "/ro'")
    end)
    it("fsync_dir syncs a directory and fails on a missing one", function()
      assert.is_true(system.fsync_dir(dir))
      local ok, msg, err = system.fsync_dir(dir .. "/missing")
      assert.is_nil(ok)
      assert.is_string(msg)
      assert.is_true(err > 0)
    end)
  end)

  describe("Ed25519", function()
    it("signs and verifies, and rejects a flipped bit anywhere", function()
      local pk, sk = system.sign_keypair()
      assert.equal(32, #pk)
      assert.equal(64, #sk)
      local msg = "run 42 finished\n"
      local sig = system.sign(msg, sk)
      assert.equal(64, #sig)
      assert.is_true(system.sign_verify(sig, msg, pk))
      local function flip(s, i) return s:sub(1, i - 1) .. string.char(s:byte(i) ~ 1) .. s:sub(i + 1) end
      assert.is_false(system.sign_verify(flip(sig, 10), msg, pk))
      assert.is_false(system.sign_verify(sig, flip(msg, 3), pk))
      assert.is_false(system.sign_verify(sig, msg, flip(pk, 1)))
      assert.is_false(system.sign_verify(sig:sub(1, 63), msg, pk))
      local pk2 = system.sign_keypair()
      assert.is_false(system.sign_verify(sig, msg, pk2))
    end)
    it("raises on keys of the wrong size", function()
      assert.has_error(function() system.sign("m", "short") end)
      assert.has_error(function() system.sign_verify(string.rep("\0", 64), "m", "short") end)
    end)
  end)

  describe("hex and base64", function()
    it("round-trips hex over all byte values", function()
      local all = {}
      for i = 0, 255 do all[#all + 1] = string.char(i) end
      all = table.concat(all)
      local hex = system.to_hex(all)
      assert.equal(512, #hex)
      assert.matches("^[0-9a-f]+$", hex)
      assert.equal(all, system.from_hex(hex))
      assert.equal(all, system.from_hex(hex:upper()))
      assert.equal("", system.from_hex(""))
    end)
    it("from_hex fails on odd length or a non-hex digit", function()
      assert.same({ nil, "from_hex: odd number of digits" }, { system.from_hex("abc") })
      local ok, msg = system.from_hex("zz")
      assert.is_nil(ok)
      assert.matches("hex digit", msg)
    end)
    it("base64 encodes and decodes RFC 4648 vectors, standard and URL-safe, padded or not", function()
      local vectors = { [""] = "", f = "Zg==", fo = "Zm8=", foo = "Zm9v", foob = "Zm9vYg==",
        fooba = "Zm9vYmE=", foobar = "Zm9vYmFy", ["\255\254\253"] = "//79", ["\251\255"] = "+/8=" }
      for raw, enc in pairs(vectors) do
        local url = enc:gsub("[+/]", { ["+"] = "-", ["/"] = "_" })
        assert.equal(enc, system.base64_encode(raw))
        assert.equal(enc, system.base64_encode(raw, "original"))
        assert.equal(url, system.base64_encode(raw, "urlsafe"))
        assert.equal((enc:gsub("=", "")), system.base64_encode(raw, "original_nopad"))
        assert.equal((url:gsub("=", "")), system.base64_encode(raw, "urlsafe_nopad"))
        assert.equal(raw, system.base64_decode(enc))
        assert.equal(raw, system.base64_decode(url, "urlsafe"))
        assert.equal(raw, system.base64_decode((enc:gsub("=", "")), "original_nopad"))
      end
    end)
    it("base64 round-trips all byte values", function()
      local all = {}
      for i = 0, 255 do all[#all + 1] = string.char(i) end
      all = table.concat(all)
      for _, v in ipairs({ "original", "original_nopad", "urlsafe", "urlsafe_nopad" }) do
        for cut = 0, 3 do
          local s = all:sub(1, #all - cut)
          assert.equal(s, system.base64_decode(system.base64_encode(s, v), v))
        end
      end
    end)
    it("base64_decode fails, without quoting its input, on anything but one whole base64 text", function()
      for _, bad in ipairs({ "Zg", "Zg=", "Zg==x", "Z m9v", "Zm9v\n", "Zm9v!", "-_8=" }) do
        assert.same({ nil, "base64_decode: not valid base64" }, { system.base64_decode(bad) })
      end
      assert.is_nil(system.base64_decode("+/8=", "urlsafe"))
      assert.is_nil(system.base64_decode("Zg==", "original_nopad"))
    end)
    it("raises on an unknown base64 variant", function()
      assert.has_error(function() system.base64_encode("x", "url") end)
      assert.has_error(function() system.base64_decode("eA==", "std") end)
    end)
  end)
end)
