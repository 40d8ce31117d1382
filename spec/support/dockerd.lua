-- Test support: a private Docker Engine (vfs storage, no iptables, no bridge, its own socket,
-- data and exec roots under a temp dir) with a busybox image imported from busybox-static.
-- Needs root, dockerd and busybox; M.start returns nil, reason when they are missing.
local proc = require("moat.c.proc")
local t = require("support.moat")

local M = {}

M.IMAGE = "moat-test-busybox:latest"
M.APPLETS = { "sh", "echo", "cat", "sleep", "env", "base64", "ls", "printf", "true", "false", "kill", "test",
  "head", "od", "touch", "rm", "mkdir", "id", "dd", "tr", "wc", "seq", "yes", "xargs", "stat", "sed", "grep" }

-- Finds a statically linked busybox (busybox-static) for the image; returns its path | nil.
function M.busybox()
  for _, p in ipairs({ "/bin/busybox", "/usr/bin/busybox" }) do
    local r = t.exec({ "file", "-L", p })
    if r.code == 0 and r.stdout:find("statically linked", 1, true) then return p end
    if r.code ~= 0 and io.open(p, "rb") then return p end
  end
  return nil
end

-- Builds a rootfs tar (busybox and its applet links, /tmp, /workspace) under `dir`; returns its path.
function M.rootfs_tar(dir)
  local bb = assert(M.busybox(), "busybox-static is not installed")
  local root = dir .. "/rootfs"
  assert(t.exec({ "mkdir", "-p", root .. "/bin", root .. "/tmp", root .. "/workspace", root .. "/etc" }).code == 0)
  assert(t.exec({ "cp", bb, root .. "/bin/busybox" }).code == 0)
  for _, a in ipairs(M.APPLETS) do
    assert(t.exec({ "ln", "-s", "busybox", root .. "/bin/" .. a }).code == 0)
  end
  t.write(root .. "/etc/passwd", "root:x:0:0:root:/root:/bin/sh\n")
  t.exec({ "chmod", "1777", root .. "/tmp" })
  local tar = dir .. "/rootfs.tar"
  local r = t.exec({ "tar", "-C", root, "-cf", tar, "." })
  assert(r.code == 0, r.stderr)
  return tar
end

-- Returns a run function for `docker` against this daemon: (args) -> result.
function M.client(d)
  return function(args)
    return t.exec({ "docker", table.unpack(args) }, { env = { DOCKER_HOST = d.host } })
  end
end

-- Starts the daemon. Returns d = { dir, host, sock, env = {DOCKER_HOST=…}, docker = fn(args) } | nil, reason.
function M.start()
  local sys = require("moat.c.system")
  if sys.getuid() ~= 0 then return nil, "dockerd needs root" end
  if not t.which("dockerd") or not t.which("docker") then return nil, "docker.io is not installed" end
  if not M.busybox() then return nil, "busybox-static is not installed" end
  local dir = t.tmpdir()
  local sock = dir .. "/docker.sock"
  local env = t.env()
  local p = assert(proc.spawn({ "dockerd", "--storage-driver", "vfs", "--iptables=false", "--ip6tables=false",
    "--bridge=none", "--data-root", dir .. "/data", "--exec-root", dir .. "/exec", "--pidfile", dir .. "/pid",
    "--host", "unix://" .. sock }, { env = env, stdout = "null", stderr = "null", group = true }))
  local d = { dir = dir, sock = sock, host = "unix://" .. sock, proc = p }
  d.env = { DOCKER_HOST = d.host }
  d.docker = M.client(d)
  local deadline = sys.monotonic_ms() + 60000
  while true do
    if p:done() then
      M.stop(d)
      return nil, "dockerd exited at start"
    end
    local r = d.docker({ "version", "--format", "{{.Server.Version}}" })
    if r.code == 0 then break end
    if sys.monotonic_ms() > deadline then
      M.stop(d)
      return nil, "dockerd did not answer within 60 s"
    end
    proc.wait({ p }, 250)
  end
  local r = d.docker({ "import", M.rootfs_tar(dir), M.IMAGE })
  if r.code ~= 0 then
    M.stop(d)
    return nil, "docker import failed: " .. r.stderr
  end
  return d
end

-- Stops the daemon (TERM, then KILL), its containerd, and removes its directories.
function M.stop(d)
  if not d or d.stopped then return end
  d.stopped = true
  pcall(function()
    local r = d.docker({ "ps", "-aq" })
    for id in (r.stdout or ""):gmatch("%S+") do d.docker({ "rm", "-f", id }) end
  end)
  -- dockerd stops the containerd it started when it gets TERM.
  local r = d.proc:terminate(20000)
  d.result = r
  -- Anything left mounted under the temp dir would make the rmtree fail or leak.
  local f = io.open("/proc/self/mounts", "rb")
  if f then
    local mounts = {}
    for line in f:lines() do
      local mp = line:match("^%S+ (%S+)")
      if mp and mp:sub(1, #d.dir) == d.dir then mounts[#mounts + 1] = mp end
    end
    f:close()
    for i = #mounts, 1, -1 do t.exec({ "umount", "-l", mounts[i] }) end
  end
  t.rmtree(d.dir)
end

return M
