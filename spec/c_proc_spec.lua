local proc = require("moat.c.proc")

-- Waits (boundedly) until p is done; returns its result.
local function finish(p)
  local give_up = os.time() + 60
  while not p:done() and os.time() < give_up do proc.wait({ p }, 1000) end
  assert.is_true(p:done())
  return p:result()
end

local function run(argv, opts)
  local p = assert(proc.spawn(argv, opts))
  local r = finish(p)
  local pid = p:pid()
  p:close()
  return r, pid
end

local read_file = require("support.moat").read

local function write_file(path, data, mode)
  local f = assert(io.open(path, "wb"))
  f:write(data)
  f:close()
  if mode then assert(run({ "chmod", mode, path }).code == 0) end
end

-- The fields of /proc/<pid>/stat after the command name: state, ppid, pgrp, ...
local function stat(pid)
  local s = read_file("/proc/" .. pid .. "/stat")
  if not s then return nil end
  local fields = {}
  for f in s:match("%) (.*)$"):gmatch("%S+") do fields[#fields + 1] = f end
  return { pid = tonumber(s:match("^(%d+)")), state = fields[1], pgrp = tonumber(fields[3]) }
end

-- A zombie waiting for some other parent counts as dead.
local function alive(pid)
  local st = stat(pid)
  return st ~= nil and st.state ~= "Z" and st.state ~= "X"
end

-- Polls (boundedly) until pid is gone: a killed process may take a moment to be reaped.
local function gone(pid)
  for _ = 1, 200 do
    if not alive(pid) then return true end
    run({ "sleep", "0.05" })
  end
  return false
end

local tmp
setup(function()
  tmp = run({ "mktemp", "-d" }).stdout:gsub("\n$", "")
end)
teardown(function()
  run({ "rm", "-rf", tmp })
end)

describe("moat.c.proc", function()
  it("reports exit codes", function()
    local r = run({ "sh", "-c", "exit 7" })
    assert.equal(7, r.code)
    assert.is_nil(r.signal)
    assert.is_false(r.timed_out)
    assert.is_false(r.truncated)
    assert.equal("integer", math.type(r.ms))
    assert.equal(0, run({ "true" }).code)
  end)

  it("never finds a program through a relative PATH entry (the current directory)", function()
    local dir = os.tmpname()
    os.remove(dir)
    assert(require("lfs").mkdir(dir))
    local f = assert(io.open(dir .. "/moat-rel-prog", "w"))
    f:write("#!/bin/sh\necho found\n")
    f:close()
    os.execute("chmod +x " .. dir .. "/moat-rel-prog")
    -- A relative entry that does lead to the program from here (".." at / stays /).
    local rel = ("../"):rep(30) .. dir:sub(2)
    assert.equal(0, os.execute("test -x " .. rel .. "/moat-rel-prog") and 0 or 1)
    local p, msg, err = proc.spawn({ "moat-rel-prog" }, { env = { "PATH=" .. rel .. ":/usr/bin:/bin" } })
    assert.is_nil(p)
    assert.equal(2, err, msg)
    os.remove(dir .. "/moat-rel-prog")
    os.remove(dir)
  end)

  it("takes a timeout of math.maxinteger as no limit, without overflow", function()
    local r = run({ "true" }, { timeout = math.maxinteger, grace = math.maxinteger })
    assert.equal(0, r.code)
    assert.is_false(r.timed_out)
  end)

  it("reports death by a signal with code nil", function()
    local r = run({ "sh", "-c", "kill -KILL $$" })
    assert.is_nil(r.code)
    assert.equal(9, r.signal)
  end)

  it("captures stdout and stderr byte-exact, NUL included", function()
    local r = run({ "sh", "-c", "printf 'a\\000b\\r\\n'; printf 'e\\000rr' >&2" })
    assert.equal("a\0b\r\n", r.stdout)
    assert.equal("e\0rr", r.stderr)
  end)

  it("passes several MiB through stdin to both output streams", function()
    local parts = {}
    for i = 1, 300000 do parts[i] = string.char(i % 256, (i * 7) % 256) .. "line\n" end
    local data = table.concat(parts)
    assert.is_true(#data > 2 * 1024 * 1024)
    local r = run({ "sh", "-c", "tee /dev/stderr" }, { stdin = data })
    assert.equal(0, r.code)
    assert.equal(#data, #r.stdout)
    assert.is_true(r.stdout == data)
    assert.is_true(r.stderr == data)
  end)

  it("writes 1 MiB of stdin through cat without deadlock", function()
    local data = string.rep("0123456789abcdef", 65536)
    local r = run({ "cat" }, { stdin = data })
    assert.is_true(r.stdout == data)
  end)

  it("gives /dev/null as stdin by default and honours empty input", function()
    assert.equal("", run({ "cat" }).stdout)
    assert.equal("", run({ "cat" }, { stdin = "" }).stdout)
    assert.equal("/dev/null\n", run({ "readlink", "/proc/self/fd/0" }).stdout)
  end)

  it("discards or inherits output streams when asked", function()
    local r = run({ "sh", "-c", "echo out; echo err >&2" }, { stdout = "null", stderr = "null" })
    assert.equal("", r.stdout)
    assert.equal("", r.stderr)
    assert.equal(0, r.code)
  end)

  it("gives the child exactly the given environment", function()
    local r = run({ "env" }, { env = { "A=1", "B=two words", "C=x=y" } })
    assert.equal("A=1\nB=two words\nC=x=y\n", r.stdout)
  end)

  it("searches the program in the PATH of the given environment", function()
    local p, msg, errno = proc.spawn({ "env" }, { env = { "PATH=" .. tmp } })
    assert.is_nil(p)
    assert.equal("env: No such file or directory", msg)
    assert.equal(2, errno)
    write_file(tmp .. "/hello", "#!/bin/sh\necho hello from PATH\n", "755")
    assert.equal("hello from PATH\n", run({ "hello" }, { env = { "PATH=/nonexistent:" .. tmp } }).stdout)
  end)

  it("runs in the given working directory", function()
    assert.equal("/\n", run({ "pwd" }, { cwd = "/" }).stdout)
    local p, msg, errno = proc.spawn({ "pwd" }, { cwd = tmp .. "/missing" })
    assert.is_nil(p)
    assert.matches("missing: No such file or directory$", msg)
    assert.equal(2, errno)
  end)

  it("returns nil, msg, ENOENT for a missing program", function()
    local p, msg, errno = proc.spawn({ "moat-no-such-program", "x" })
    assert.is_nil(p)
    assert.equal("moat-no-such-program: No such file or directory", msg)
    assert.equal(2, errno)
    p, msg, errno = proc.spawn({ tmp .. "/absent" })
    assert.is_nil(p)
    assert.matches("absent: No such file or directory$", msg)
    assert.equal(2, errno)
  end)

  it("returns EACCES for a file that is not executable", function()
    write_file(tmp .. "/noexec", "#!/bin/sh\necho no\n", "644")
    local p, msg, errno = proc.spawn({ tmp .. "/noexec" })
    assert.is_nil(p)
    assert.matches("Permission denied$", msg)
    assert.equal(13, errno)
    p, msg, errno = proc.spawn({ "noexec" }, { env = { "PATH=" .. tmp } })
    assert.is_nil(p)
    assert.equal("noexec: Permission denied", msg)
    assert.equal(13, errno)
  end)

  it("reports an exec failure from the child, not an exit status", function()
    write_file(tmp .. "/garbage", "\127\1\2\3 not a program", "755")
    local p, msg, errno = proc.spawn({ tmp .. "/garbage" })
    assert.is_nil(p)
    assert.matches("Exec format error$", msg)
    assert.equal(8, errno)
  end)

  it("raises on misuse", function()
    assert.has_error(function() proc.spawn({ "true" }, { stdni = "x" }) end)
    assert.has_error(function() proc.spawn({}) end)
    assert.has_error(function() proc.spawn({ "true", 1 }) end)
    assert.has_error(function() proc.spawn({ "true" }, { stdout = "file" }) end)
    assert.has_error(function() proc.spawn({ "true" }, { timeout = "1" }) end)
    assert.has_error(function() proc.spawn({ "true" }, { env = { "NOEQUALS" } }) end)
    assert.has_error(function() proc.spawn({ "true" }, { stdin = false }) end)
    assert.has_error(function() proc.spawn({ "true" }, { cwd = 1 }) end)
    assert.has_error(function() proc.wait({ "not a process" }) end)
  end)

  it("kills the whole group at the timeout, TERM first", function()
    local f = tmp .. "/grandchild.pid"
    local r, pid = run({ "sh", "-c", "sleep 100 & echo $! > " .. f .. "; sleep 100" }, { timeout = 300 })
    assert.is_true(r.timed_out)
    assert.is_nil(r.code)
    assert.equal(15, r.signal)
    local gpid = assert(tonumber(read_file(f)))
    assert.is_true(gone(gpid))
    assert.is_nil(stat(pid))
  end)

  it("follows TERM with KILL after the grace period", function()
    local f = tmp .. "/stubborn.pid"
    local r = run({ "sh", "-c", "trap '' TERM; sleep 100 & echo $! > " .. f .. "; wait" },
      { timeout = 200, grace = 200 })
    assert.is_true(r.timed_out)
    assert.equal(9, r.signal)
    assert.is_true(gone(assert(tonumber(read_file(f)))))
  end)

  it("does not hang when a grandchild holds stdout after the child exits", function()
    local f = tmp .. "/holder.pid"
    local p = assert(proc.spawn({ "sh", "-c", "sleep 100 & echo $! > " .. f .. "; echo bye" }))
    local done = {}
    for _ = 1, 30 do
      done = proc.wait({ p }, 1000)
      if #done > 0 then break end
    end
    assert.equal(1, #done)
    local r = p:result()
    assert.equal("bye\n", r.stdout)
    assert.equal(0, r.code)
    assert.is_false(r.timed_out)
    assert.is_true(gone(assert(tonumber(read_file(f)))))
    p:close()
  end)

  -- A shell fragment that starts `sleep 100` in a session of its own, holding the pipes, and
  -- returns once it is there (its pid in file f), so the group kill cannot catch it early.
  local function escape(f)
    return ("setsid sh -c 'echo $$ > %s.tmp; mv %s.tmp %s; exec sleep 100' & while [ ! -s %s ]; do sleep 0.02; done")
      :format(f, f, f, f)
  end

  it("with linger, ends a run linger ms after the child when a setsid grandchild holds stdout", function()
    local f = tmp .. "/setsid.pid"
    local sys = require("moat.c.system")
    local p = assert(proc.spawn({ "sh", "-c", escape(f) .. "; echo bye" }, { timeout = 30000, linger = 100 }))
    local r = finish(p)
    p:close()
    local held = assert(tonumber(read_file(f)))
    assert.is_true(sys.kill(held, "KILL"))
    assert.equal("bye\n", r.stdout)
    assert.equal(0, r.code)
    assert.is_true(r.held)
    assert.is_false(r.timed_out)
    assert.is_true(r.ms < 15000, "the pipes were read until the timeout")
  end)

  it("exited is true once the child is reaped, while a setsid grandchild holds the pipes", function()
    local f = tmp .. "/exited.pid"
    local p = assert(proc.spawn({ "sh", "-c", escape(f) .. "; sleep 1" }))
    assert.is_false(p:exited() and true or false)
    local give_up = os.time() + 30
    while not p:exited() and os.time() < give_up do proc.wait({ p }, 100) end
    assert.is_true(p:exited())
    assert.is_false(p:done())
    p:close()
    require("moat.c.system").kill(assert(tonumber(read_file(f))), "KILL")
  end)

  it("tracks its children and reaps only those no handle tracks", function()
    local sys = require("moat.c.system")
    local p = assert(proc.spawn({ "sleep", "100" }))
    local pid = p:pid()
    assert.is_true(proc.tracks(pid))
    assert.is_true(proc.has_children())
    assert.has_error(function() proc.reap(pid) end)
    p:close()
    assert.is_false(proc.tracks(pid))
    -- An orphan re-parented to this process, its subreaper, is nobody's handle.
    local f = tmp .. "/orphan.pid"
    assert.is_true(sys.subreaper(true))
    run({ "sh", "-c", escape(f) }, { stdout = "null", stderr = "null" })
    assert.is_true(sys.subreaper(false))
    local orphan = assert(tonumber(read_file(f)))
    assert.equal(sys.getpid(), require("moat.proc").stat(orphan)[2] + 0)
    assert.is_false(proc.reap(orphan))
    assert.is_true(sys.kill(orphan, "KILL"))
    local reaped = false
    for _ = 1, 100 do
      reaped = proc.reap(orphan)
      if reaped then break end
      proc.wait({}, 20)
    end
    assert.is_true(reaped)
    local ok, _, errno = proc.reap(orphan)
    assert.is_nil(ok)
    assert.equal(10, errno) -- ECHILD
  end)

  it("kills a flooding child at the cap and keeps only cap bytes", function()
    local r = run({ "yes" }, { cap = 100000 })
    assert.is_true(r.truncated)
    assert.equal(9, r.signal)
    assert.equal(100000, #r.stdout)
    assert.equal(string.rep("y\n", 50000), r.stdout)
  end)

  it("keeps memory bounded under a flood", function()
    local function rss()
      return tonumber(read_file("/proc/self/status"):match("VmRSS:%s+(%d+)"))
    end
    local before = rss()
    for _ = 1, 3 do
      local r = run({ "sh", "-c", "cat /dev/zero >&2" }, { cap = 4 * 1024 * 1024 })
      assert.is_true(r.truncated)
      assert.equal(4 * 1024 * 1024, #r.stderr)
    end
    collectgarbage()
    assert.is_true(rss() - before < 64 * 1024, "RSS grew by more than 64 MiB")
  end)

  it("lets the child see only fds 0, 1 and 2", function()
    -- io.open does not set close-on-exec: moat's own stray fds must not leak either.
    local stray = assert(io.open(tmp .. "/stray", "w"))
    local r = run({ "ls", "/proc/self/fd" })
    stray:close()
    local fds = {}
    for fd in r.stdout:gmatch("%d+") do fds[#fds + 1] = tonumber(fd) end
    -- ls itself holds one more: the directory it is listing.
    assert.same({ 0, 1, 2, 3 }, fds)
  end)

  it("puts the child in its own process group unless told otherwise", function()
    local p = assert(proc.spawn({ "sleep", "100" }))
    assert.equal(p:pid(), stat(p:pid()).pgrp)
    p:close()
    local q = assert(proc.spawn({ "sleep", "100" }, { group = false }))
    assert.equal(stat("self").pgrp, stat(q:pid()).pgrp)
    q:close()
  end)

  it("resets signal dispositions in the child", function()
    -- moat ignores SIGPIPE; a child must die of it again.
    local r = run({ "sh", "-c", "kill -PIPE $$; echo survived" })
    assert.equal(13, r.signal)
    local ignored = run({ "sh", "-c", "grep SigIgn /proc/self/status | cut -f2" }).stdout
    -- Signals 32 and 33 belong to glibc (thread cancel, setxid); nobody can change them, so
    -- whatever the test runner inherited there stays.
    local mask = tonumber(ignored, 16) & ~0x180000000
    assert.equal(0, mask)
  end)

  it("returns from wait as each of several processes finishes", function()
    local flag = tmp .. "/go"
    local fast = assert(proc.spawn({ "sh", "-c", "echo fast" }))
    local slow = assert(proc.spawn({ "sh", "-c", "while [ ! -e " .. flag .. " ]; do sleep 0.02; done; echo slow" }))
    local done = proc.wait({ fast, slow }, 30000)
    assert.same({ fast }, done)
    assert.is_false(slow:done())
    assert.is_nil(slow:result())
    write_file(flag, "")
    done = proc.wait({ slow }, 30000)
    assert.same({ slow }, done)
    assert.equal("fast\n", fast:result().stdout)
    assert.equal("slow\n", slow:result().stdout)
    fast:close()
    slow:close()
  end)

  it("does not return at once for a process an earlier wait returned as done, nor starve the others", function()
    local sys = require("moat.c.system")
    local fast = assert(proc.spawn({ "true" }))
    assert.same({ fast }, proc.wait({ fast }, 30000))
    -- More than a pipe holds, then a pause: it ends only if wait keeps reading its output.
    local big = assert(proc.spawn({ "sh", "-c", "head -c 300000 /dev/zero; sleep 0.3; echo end >&2" }))
    local t0 = sys.monotonic_ms()
    local done = proc.wait({ fast, big }, 30000)
    assert.is_true(big:done())
    assert.same({ fast, big }, done)
    assert.is_true(sys.monotonic_ms() - t0 >= 250)
    assert.equal(300000, #big:result().stdout)
    assert.equal("end\n", big:result().stderr)
    -- With every process of the list done, there is nothing to wait for.
    t0 = sys.monotonic_ms()
    assert.same({ fast, big }, proc.wait({ fast, big }, 30000))
    assert.is_true(sys.monotonic_ms() - t0 < 1000)
    fast:close()
    big:close()
  end)

  it("returns after the timeout when nothing is done", function()
    local p = assert(proc.spawn({ "sleep", "100" }))
    local done, streaming = proc.wait({ p }, 50)
    assert.same({}, done)
    assert.same({}, streaming)
    p:close()
  end)

  it("wakes a streaming waiter on new output and drains it", function()
    local flag = tmp .. "/more"
    local p = assert(proc.spawn({ "sh", "-c",
      "echo one; echo uno >&2; while [ ! -e " .. flag .. " ]; do sleep 0.02; done; echo two" },
      { stream = true }))
    local out, err = "", ""
    while not (out:find("one\n", 1, true) and err:find("uno\n", 1, true)) do
      local done, streaming = proc.wait({ p }, 30000)
      assert.same({}, done)
      assert.same({ p }, streaming)
      local o, e = p:drain()
      out, err = out .. o, err .. e
    end
    assert.equal("one\n", out)
    assert.equal("uno\n", err)
    write_file(flag, "")
    local r = finish(p)
    local o, e = p:drain()
    assert.equal("two\n", o)
    assert.equal("", e)
    assert.equal("", p:result().stdout)
    assert.equal(0, r.code)
    p:close()
  end)

  it("returns from wait when a signal caught through moat.c.signal arrives", function()
    local signal = require("moat.c.signal")
    assert.is_true(signal.catch({ "USR2" }))
    local me = stat("self").pid
    local p = assert(proc.spawn({ "sh", "-c", "sleep 0.2; kill -USR2 " .. me .. "; sleep 100" }))
    local t0 = os.time()
    -- One wait with a long limit: only the signal can end it early.
    assert.same({}, proc.wait({ p }, 60000))
    assert.is_true(os.time() - t0 < 30)
    assert.same({ signal.number("USR2") }, signal.pending())
    -- Collected signals do not wake the next wait.
    assert.same({}, proc.wait({ p }, 100))
    assert.is_true(signal.restore())
    p:close()
  end)

  it("takes signal names and numbers in kill", function()
    local p = assert(proc.spawn({ "sleep", "100" }))
    assert.is_true(p:kill("SIGUSR1"))
    assert.equal(10, finish(p).signal)
    p:close()
    p = assert(proc.spawn({ "sleep", "100" }))
    assert.is_true(p:kill(3))
    assert.equal(3, finish(p).signal)
    assert.has_error(function() p:kill(1000) end)
    p:close()
  end)

  it("signals the group with kill and terminates with TERM then KILL", function()
    local p = assert(proc.spawn({ "sleep", "100" }))
    assert.is_true(p:kill("INT"))
    assert.equal(2, finish(p).signal)
    assert.is_false(p:kill())
    assert.has_error(function() p:kill("NOPE") end)
    p:close()

    local q = assert(proc.spawn({ "sh", "-c", "trap '' TERM; echo ready; sleep 100" }, { stream = true }))
    proc.wait({ q }, 30000)
    local r = q:terminate(100)
    assert.equal(9, r.signal)
    assert.equal("ready\n", r.stdout)
    assert.is_true(q:done())
    q:close()

    local t = assert(proc.spawn({ "sleep", "100" }))
    assert.equal(15, t:terminate().signal)
    t:close()
  end)

  it("kills and reaps a running child on __close and raises on later use", function()
    local pid, handle
    do
      local p <close> = assert(proc.spawn({ "sleep", "100" }))
      pid, handle = p:pid(), p
      assert.is_true(alive(pid))
    end
    -- Reaped by us, so not even a zombie remains.
    assert.is_nil(stat(pid))
    assert.has_error(function() handle:result() end, "process handle is closed")
    handle:close()
  end)

  it("kills a running child when the handle is collected", function()
    local pid = assert(proc.spawn({ "sleep", "100" })):pid()
    collectgarbage()
    collectgarbage()
    assert.is_nil(stat(pid))
  end)

  it("leaves no zombie and no fd behind", function()
    -- Counted in-process: a child listing our fds could catch a spawn half done (its report
    -- pipe and child ends still open). Handles earlier tests dropped hold pipes until the
    -- collector finalizes them, which could happen mid-test, so collect first.
    local function fd_count()
      collectgarbage()
      collectgarbage()
      local n = 0
      for _ in require("lfs").dir("/proc/self/fd") do n = n + 1 end
      return n
    end
    local before = fd_count()
    local pids = {}
    for i = 1, 20 do
      local r, pid = run({ "sh", "-c", "echo " .. i .. "; exit " .. i })
      assert.equal(i, r.code)
      pids[i] = pid
    end
    assert.is_true(proc.spawn({ "moat-no-such-program" }) == nil)
    assert.equal(before, fd_count())
    for _, pid in ipairs(pids) do assert.is_nil(stat(pid)) end
  end)

  describe("which", function()
    it("finds a program on the absolute entries of PATH or a given path, the way spawn does", function()
      assert.matches("^/.*/sh$", proc.which("sh"))
      write_file(tmp .. "/moat-which-x", "#!/bin/sh\n", "755")
      write_file(tmp .. "/moat-which-n", "not executable\n", "644")
      assert.equal(tmp .. "/moat-which-x", proc.which("moat-which-x", "/nonexistent:" .. tmp))
      assert.is_nil(proc.which("moat-which-n", tmp))
      assert.is_nil(proc.which("moat-which-x"))
      -- Relative entries (the current directory, the workspace) never count.
      assert.is_nil(proc.which("moat-which-x", ".:" .. tmp:sub(2)))
      assert.is_nil(proc.which("", tmp))
    end)
    it("takes a name with a slash as it is when the file exists", function()
      assert.equal(tmp .. "/moat-which-x", proc.which(tmp .. "/moat-which-x"))
      assert.is_nil(proc.which(tmp .. "/missing"))
    end)
  end)

  describe("child setup", function()
    -- Lua source that makes a child lua5.4 find the same built modules as this process.
    local PRELUDE = ("package.cpath = %q; local proc = require('moat.c.proc'); "
      .. "local system = require('moat.c.system');\n"):format(package.cpath)

    local function lua_child(code, shell_prefix)
      local path = tmp .. "/child.lua"
      write_file(path, PRELUDE .. code)
      local r = run({ "sh", "-c", (shell_prefix or "") .. 'exec lua5.4 "$0"', path })
      return r.stdout .. r.stderr
    end

    it("gives a restore_limits child the core limit and umask moat had before harden", function()
      local out = lua_child([[
        assert(system.harden())
        local function show(opts)
          local p = assert(proc.spawn({ "sh", "-c", "ulimit -S -c; umask" }, opts))
          while not p:done() do proc.wait({ p }, 1000) end
          io.write(p:result().stdout)
        end
        show({ restore_limits = true })
        show({})
      ]], "ulimit -S -c 1024; umask 022; ")
      assert.equal("1024\n0022\n0\n0077\n", out)
    end)

    it("kills a pdeathsig child when moat dies, and only that one", function()
      for i, opt in ipairs({ "true", "'KILL'", "nil" }) do
        local file = tmp .. "/pid-" .. i
        local path = tmp .. "/holder-" .. i .. ".lua"
        write_file(path, PRELUDE .. ([[
          local p = assert(proc.spawn({ "sleep", "299.%d" }, { pdeathsig = %s, group = false }))
          local f = assert(io.open(%q, "w")); f:write(p:pid()); f:close()
          proc.wait({ p }, 60000)
        ]]):format(i, opt, file))
        -- Not a group of its own, so that killing the holder spares the sleep.
        local holder = assert(proc.spawn({ "lua5.4", path }, { group = false }))
        local pid
        for _ = 1, 200 do
          pid = tonumber(read_file(file) or "")
          if pid then break end
          proc.wait({ holder }, 50)
        end
        assert.is_number(pid)
        holder:kill("KILL")
        finish(holder)
        holder:close()
        if opt == "nil" then
          assert.is_true(alive(pid), "the control died without a parent-death signal")
          run({ "kill", "-KILL", tostring(pid) })
        else
          assert.is_true(gone(pid), "the pdeathsig child outlived its parent")
        end
      end
      assert.has_error(function() proc.spawn({ "true" }, { pdeathsig = "NOPE" }) end)
      assert.has_error(function() proc.spawn({ "true" }, { pdeathsig = {} }) end)
    end)

    it("fails with nil, message, errno EMFILE when moat is out of file descriptors", function()
      local out = lua_child([[
        local hold = {}
        while true do
          local f = io.open("/dev/null")
          if not f then break end
          hold[#hold + 1] = f
        end
        print(proc.spawn({ "true" }))
      ]], "ulimit -n 64; ")
      assert.equal("nil\tcannot start true: Too many open files\t24\n", out)
    end)
  end)
end)
