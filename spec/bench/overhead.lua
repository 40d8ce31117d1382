-- moat's own overhead: `moat run --runtime host -- true` against `true`, and `moat run` on podman
-- against the same `podman run` without moat; mean added milliseconds and moat's peak RSS.
-- Usage: lua5.4 spec/bench/overhead.lua [--runs N] [--podman-runs N] [--no-podman]
-- Prints one "overhead: …" line per figure; exits 0 (figures are reported, not judged).
local root = arg[0]:match("^(.*)/spec/bench/overhead%.lua$") or "."
if root:sub(1, 1) ~= "/" then root = (os.getenv("PWD") or ".") .. "/" .. root end
local build = os.getenv("MOAT_BUILD") or (root .. "/build")
package.path = root .. "/lua/?.lua;" .. root .. "/spec/?.lua;" .. package.path
package.cpath = build .. "/lib/?.so;" .. package.cpath
_G.MOAT_BIN = build .. "/moat"
local MOAT = _G.MOAT_BIN

local proc = require("moat.c.proc")
local sys = require("moat.c.system")
local t = require("support.moat")

local runs, podman_runs, with_podman = 30, 20, true
local i = 1
while arg[i] do
  if arg[i] == "--runs" then runs = math.tointeger(tonumber(arg[i + 1])); i = i + 1
  elseif arg[i] == "--podman-runs" then podman_runs = math.tointeger(tonumber(arg[i + 1])); i = i + 1
  elseif arg[i] == "--no-podman" then with_podman = false
  else
    io.stderr:write("usage: lua5.4 spec/bench/overhead.lua [--runs N] [--podman-runs N] [--no-podman]\n")
    os.exit(64)
  end
  i = i + 1
end

local function env_list(extra)
  return t.env(extra)
end

-- Runs argv once; returns wall ms, result.
local function once(argv, env)
  local t0 = sys.monotonic_ms()
  local p = assert(proc.spawn(argv, { env = env, stdout = "null", stderr = "pipe", timeout = 120000 }))
  while not p:done() do proc.wait({ p }, 1000) end
  local r = p:result()
  return sys.monotonic_ms() - t0, r
end

-- Returns mean and median of the samples.
local function stats(xs)
  local sum = 0
  for _, x in ipairs(xs) do sum = sum + x end
  local sorted = table.move(xs, 1, #xs, 1, {})
  table.sort(sorted)
  local mid = (#sorted + 1) // 2
  local median = #sorted % 2 == 1 and sorted[mid] or (sorted[mid] + sorted[mid + 1]) / 2
  return sum / #xs, median
end

-- Alternates the two commands `n` times (after one warm-up each); returns {mean, median} of each.
-- `a` and `b` are argv tables or functions returning one (a fresh one per run).
local function compare(a, b, env, n)
  local function argv(x) return type(x) == "function" and x() or x end
  once(argv(a), env)
  once(argv(b), env)
  local sa, sb = {}, {}
  for k = 1, n do
    local xa, xb = argv(a), argv(b)
    local ma, ra = once(xa, env)
    assert(ra.code == 0, ("%s failed: %s"):format(xa[1], ra.stderr))
    local mb, rb = once(xb, env)
    assert(rb.code == 0, ("%s failed: %s"):format(xb[1], rb.stderr))
    sa[k], sb[k] = ma, mb
  end
  return { stats(sa) }, { stats(sb) }
end

-- Peak RSS of argv in KiB through /usr/bin/time, or nil when it is not installed.
local function peak_rss(argv, env)
  local time = io.open("/usr/bin/time", "rb")
  if not time then return nil end
  time:close()
  local cmd = { "/usr/bin/time", "-f", "moat-rss:%M" }
  for _, a in ipairs(argv) do cmd[#cmd + 1] = a end
  local _, r = once(cmd, env)
  return tonumber(r.stderr:match("moat%-rss:(%d+)"))
end

local function line(fmt, ...)
  io.stdout:write("overhead: ", fmt:format(...), "\n")
  io.stdout:flush()
end

local ws = t.tmpdir()
local homes = { disk = t.tmpdir(), tmpfs = nil }
do
  local lfs = require("lfs")
  if lfs.attributes("/dev/shm", "mode") == "directory" then
    homes.tmpfs = "/dev/shm/moat-bench-" .. sys.random_hex(4)
    lfs.mkdir(homes.tmpfs)
  end
end
t.write(ws .. "/moat.yaml", "name: bench\nsecrets:\n  TOKEN: env://MOAT_BENCH_TOKEN\n")

local ok, err = pcall(function()
  local base = { MOAT_BENCH_TOKEN = "bench-token-value", MOAT_RUNTIME = false }
  for _, which in ipairs({ "disk", "tmpfs" }) do
    local home = homes[which]
    if home then
      local extra = { MOAT_HOME = home }
      for k, v in pairs(base) do extra[k] = v end
      local env = env_list(extra)
      local moat = { MOAT, "run", "--runtime", "host", ws, "--", "true" }
      local m, b = compare(moat, { "true" }, env, runs)
      line("moat run --runtime host -- true: mean %.1f ms (median %.1f), true: %.1f ms (%.1f);"
        .. " added %.1f ms mean, %.1f median (audit log on %s, %d runs; target <= 10 ms)",
        m[1], m[2], b[1], b[2], m[1] - b[1], m[2] - b[2], which == "disk" and "disk, fsync'd" or "tmpfs", runs)
      local rss = peak_rss(moat, env)
      if rss then
        line("peak RSS of moat run --runtime host: %.1f MiB (target <= 10 MiB)", rss / 1024)
      else
        line("peak RSS: not measured (/usr/bin/time missing; Debian package time)")
      end
    end
  end

  if not with_podman then return end
  local podman = require("support.podman")
  local p, why = podman.start()
  if not p then
    line("podman: skipped (%s)", why)
    return
  end
  local pok, perr = pcall(function()
    local extra = { MOAT_HOME = homes.disk }
    for k, v in pairs(base) do extra[k] = v end
    for k, v in pairs(p.env) do extra[k] = v end
    local env = env_list(extra)
    local moat = { MOAT, "run", "--runtime", "podman", "--image", podman.IMAGE, ws, "--", "true" }
    -- The same command line moat builds, run directly (names differ per run; --rm removes them).
    local rt = require("moat.runtime.podman")
    local function direct()
      return rt.prepare({
        run_id = "bench-" .. sys.random_hex(4), workspace = ws, image = podman.IMAGE, command = { "true" },
        vars = { { name = "TOKEN", value = "bench-token-value" } }, mounts = {}, container = {},
        environ = sys.environ(),
      }).argv
    end
    local m, d = compare(moat, direct, env, podman_runs)
    line("moat run --runtime podman -- true: mean %.1f ms (median %.1f), the same podman run: %.1f ms (%.1f);"
      .. " added %.1f ms mean, %.1f median (%d runs; target <= 10 ms)",
      m[1], m[2], d[1], d[2], m[1] - d[1], m[2] - d[2], podman_runs)
  end)
  podman.stop(p)
  if not pok then error(perr, 0) end
end)

t.rmtree(ws)
t.rmtree(homes.disk)
if homes.tmpfs then t.rmtree(homes.tmpfs) end
if not ok then
  io.stderr:write("overhead benchmark failed: ", tostring(err), "\n")
  os.exit(1)
end
