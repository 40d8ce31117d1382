-- Test support: podman configured for this kind of machine (runc, cgroupfs, vfs, ulimits, no
-- network) entirely through files under a temp dir named by CONTAINERS_CONF and
-- CONTAINERS_STORAGE_CONF, with the busybox test image imported.
local t = require("support.moat")
local dockerd = require("support.dockerd")

local M = {}

M.IMAGE = "localhost/moat-test-busybox:latest"

-- Sets podman up; returns p = { dir, env = {CONTAINERS_CONF=…, …}, podman = fn(args) } | nil, reason.
function M.start()
  local sys = require("moat.c.system")
  if sys.getuid() ~= 0 then return nil, "the podman setup here needs root" end
  if not t.which("podman") or not t.which("runc") then
    return nil, "podman or runc is not installed"
  end
  if not dockerd.busybox() then return nil, "busybox-static is not installed" end
  local dir = t.tmpdir()
  t.write(dir .. "/containers.conf", table.concat({
    "[containers]",
    'default_ulimits = ["nofile=1024:1024", "nproc=1000:1000"]',
    'netns = "none"',
    "[engine]",
    'runtime = "runc"',
    'cgroup_manager = "cgroupfs"',
    'events_logger = "file"',
    ('events_logfile_path = "%s/events.log"'):format(dir),
    ('tmp_dir = "%s/tmp"'):format(dir),
    ('volume_path = "%s/volumes"'):format(dir),
    "",
  }, "\n"))
  t.write(dir .. "/storage.conf", table.concat({
    "[storage]",
    'driver = "vfs"',
    ('graphroot = "%s/graph"'):format(dir),
    ('runroot = "%s/run"'):format(dir),
    "",
  }, "\n"))
  local p = { dir = dir }
  p.env = { CONTAINERS_CONF = dir .. "/containers.conf", CONTAINERS_STORAGE_CONF = dir .. "/storage.conf" }
  p.podman = function(args)
    return t.exec({ "podman", table.unpack(args) }, { env = p.env })
  end
  local r = p.podman({ "import", dockerd.rootfs_tar(dir), M.IMAGE })
  if r.code ~= 0 then
    M.stop(p)
    return nil, "podman import failed: " .. r.stderr
  end
  return p
end

-- Removes every container and the storage; unmounts whatever is left under the temp dir.
function M.stop(p)
  if not p or p.stopped then return end
  p.stopped = true
  p.podman({ "rm", "-af" })
  p.podman({ "rmi", "-af" })
  local f = io.open("/proc/self/mounts", "rb")
  if f then
    local mounts = {}
    for line in f:lines() do
      local mp = line:match("^%S+ (%S+)")
      if mp and mp:sub(1, #p.dir) == p.dir then mounts[#mounts + 1] = mp end
    end
    f:close()
    for i = #mounts, 1, -1 do t.exec({ "umount", "-l", mounts[i] }) end
  end
  t.rmtree(p.dir)
end

return M
