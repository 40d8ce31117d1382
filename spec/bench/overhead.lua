-- moat's own costs, printed as tables: the launch overhead (`moat run --runtime host --no-mask
-- -- true` against `true`, in a trusted workspace whose moat.yaml is `name: perf`), `moat run` on
-- podman against the same `podman run` without moat, moat's peak RSS, and the output masker's
-- throughput with 1, 10 and 100 secrets against the unmasked relay.
-- Usage: lua5.4 spec/bench/overhead.lua [--runs N] [--podman-runs N] [--no-podman] [--mask-mib N]
-- Environment: MOAT_BENCH_QUICK=1 (few runs: what spec/bench_spec.lua uses).
-- Figures are medians of alternated runs (the machine is shared, so single runs are noise).
-- Exits 0 when everything ran; "targets: ..." says which targets were met.
local root = arg[0]:match("^(.*)/spec/bench/overhead%.lua$") or "."
if root:sub(1, 1) ~= "/" then root = (os.getenv("PWD") or ".") .. "/" .. root end
local build = os.getenv("MOAT_BUILD") or (root .. "/build")
package.path = root .. "/lua/?.lua;" .. root .. "/spec/?.lua;" .. package.path
package.cpath = build .. "/lib/?.so;" .. package.cpath
_G.MOAT_ROOT = root
_G.MOAT_BIN = build .. "/moat"
local MOAT = _G.MOAT_BIN

local proc = require("moat.c.proc")
local sys = require("moat.c.system")
local t = require("support.moat")

local QUICK = os.getenv("MOAT_BENCH_QUICK") == "1"
local opts = { runs = QUICK and 5 or 60, podman_runs = QUICK and 2 or 15, podman = true,
  mask_mib = QUICK and 4 or 64, mask_runs = QUICK and 1 or 5 }
do
  local i = 1
  local num = { ["--runs"] = "runs", ["--podman-runs"] = "podman_runs", ["--mask-mib"] = "mask_mib" }
  while arg[i] do
    if num[arg[i]] and math.tointeger(tonumber(arg[i + 1])) then
      opts[num[arg[i]]] = math.tointeger(tonumber(arg[i + 1]))
      i = i + 1
    elseif arg[i] == "--no-podman" then
      opts.podman = false
    else
      io.stderr:write("usage: lua5.4 spec/bench/overhead.lua [--runs N] [--podman-runs N] [--no-podman]"
        .. " [--mask-mib N]\n")
      os.exit(64)
    end
    i = i + 1
  end
end

-- Milliseconds with microsecond resolution (system.monotonic_ms counts whole milliseconds,
-- too coarse for a launch): the wall clock's time of day, good across one short run.
local function clock_ms()
  local h, m, s = sys.now(6):match("T(%d+):(%d+):([%d.]+)Z$")
  return ((tonumber(h) * 60 + tonumber(m)) * 60 + tonumber(s)) * 1000
end

-- Runs argv once, stdout to /dev/null; returns wall ms, result.
local function once(argv, env)
  local t0 = clock_ms()
  local p = assert(proc.spawn(argv, { env = env, stdout = "null", stderr = "pipe", timeout = 300000 }))
  while not p:done() do proc.wait({ p }, 1000) end
  local r = p:result()
  local ms = clock_ms() - t0
  return ms < 0 and ms + 86400000 or ms, r
end

local function check(argv, r)
  if r.code ~= 0 then error(("%s failed (exit %s): %s"):format(argv[1], tostring(r.code), r.stderr), 0) end
end

-- Returns the median and the 90th percentile of the samples.
local function stats(xs)
  local s = table.move(xs, 1, #xs, 1, {})
  table.sort(s)
  local mid = (#s + 1) // 2
  local median = #s % 2 == 1 and s[mid] or (s[mid] + s[mid + 1]) / 2
  return median, s[math.max(1, math.ceil(#s * 0.9))]
end

-- Alternates the argvs in `list` `n` times after one warm-up each; returns { median, p90 } of
-- each, in order. An argv may be a function returning one (a fresh one per run).
local function compare_all(list, env, n)
  local function argv(x) return type(x) == "function" and x() or x end
  for _, a in ipairs(list) do once(argv(a), env) end
  local samples = {}
  for i = 1, #list do samples[i] = {} end
  for k = 1, n do
    for i, a in ipairs(list) do
      local x = argv(a)
      local ms, r = once(x, env)
      check(x, r)
      samples[i][k] = ms
    end
  end
  local out = {}
  for i = 1, #list do out[i] = { stats(samples[i]) } end
  return out
end

-- Alternates a and b `n` times after one warm-up each; returns { median, p90 } of each.
local function compare(a, b, env, n)
  local r = compare_all({ a, b }, env, n)
  return r[1], r[2]
end

-- Peak RSS (KiB) of the largest process argv ran, through /usr/bin/time | nil.
local function peak_rss(argv, env)
  local time = io.open("/usr/bin/time", "rb")
  if not time then return nil end
  time:close()
  local _, r = once({ "/usr/bin/time", "-f", "moat-rss:%M", table.unpack(argv) }, env)
  return tonumber(r.stderr:match("moat%-rss:(%d+)"))
end

local function env_with(...)
  local extra = {}
  for _, m in ipairs({ ... }) do
    for k, v in pairs(m) do extra[k] = v end
  end
  return t.env(extra)
end

local function trust(dir, env)
  local _, r = once({ MOAT, "trust", dir }, env)
  check({ "moat trust" }, r)
end

local targets = {}
local function target(ok, what) targets[#targets + 1] = (ok and "met: " or "MISSED: ") .. what end

local function launch_table(ws, homes)
  print("## Launch overhead (median of " .. opts.runs .. " alternated runs; p90 in brackets)")
  print("")
  print("| audit log on | moat run --runtime host --no-mask -- true | true | added | peak RSS of moat |")
  print("|:--|--:|--:|--:|--:|")
  for _, which in ipairs({ "disk", "tmpfs" }) do
    local home = homes[which]
    if home then
      local env = env_with({ MOAT_HOME = home, MOAT_RUNTIME = false })
      trust(ws, env)
      local moat = { MOAT, "run", "--runtime", "host", "--no-mask", ws, "--", "true" }
      local m, b = compare(moat, { "true" }, env, opts.runs)
      local rss = peak_rss(moat, env)
      print(("| %s | %.1f ms (%.1f) | %.1f ms (%.1f) | **%.1f ms** | %s |"):format(
        which == "disk" and "disk (fsync'd)" or "tmpfs", m[1], m[2], b[1], b[2], m[1] - b[1],
        rss and ("%.1f MiB"):format(rss / 1024) or "not measured (no /usr/bin/time)"))
      if which == "disk" then
        target(m[1] - b[1] <= 4, ("launch overhead %.1f ms <= 4 ms"):format(m[1] - b[1]))
        if rss then target(rss <= 10 * 1024, ("peak RSS %.1f MiB <= 10 MiB"):format(rss / 1024)) end
      end
    end
  end
  print("")
end

-- moat run on podman against the same container started by podman itself (same image,
-- workspace mount and working directory, --rm), podman set up as spec/support/podman.lua does.
local function podman_table(ws, home)
  print("## podman run with and without moat")
  print("")
  if not opts.podman then print("skipped (--no-podman)") print("") return end
  local podman = require("support.podman")
  local p, why = podman.start()
  if not p then print("skipped: " .. tostring(why)) print("") return end
  local ok, err = pcall(function()
    local env = env_with({ MOAT_HOME = home, MOAT_RUNTIME = false }, p.env)
    trust(ws, env)
    local moat = { MOAT, "run", "--runtime", "podman", "--image", podman.IMAGE, "--no-mask", ws, "--", "true" }
    local function direct()
      local name = "bench-" .. sys.random_hex(4)
      return { "podman", "run", "--rm", "--name", name, "--label", "moat.run=" .. name, "-v", ws .. ":/workspace",
        "-w", "/workspace", podman.IMAGE, "true" }
    end
    local m, d = compare(moat, direct, env, opts.podman_runs)
    print("| moat run --runtime podman -- true | podman run --rm … true | added |")
    print("|--:|--:|--:|")
    print(("| %.0f ms (%.0f) | %.0f ms (%.0f) | **%.0f ms** |"):format(m[1], m[2], d[1], d[2], m[1] - d[1]))
    print("")
    print(("median of %d alternated runs each; p90 in brackets"):format(opts.podman_runs))
  end)
  podman.stop(p)
  if not ok then print("skipped: podman could not run here: " .. tostring(err):sub(1, 300)) end
  print("")
end

-- A text file of `mib` MiB: lines of printable words (the masker's common case: no secret).
local function sample_file(path, mib)
  local words = {}
  for i = 1, 4096 do words[i] = sys.random_hex(1 + i % 12) end
  local line = {}
  local f = assert(io.open(path, "wb"))
  local total, want = 0, mib << 20
  local k = 0
  while total < want do
    for j = 1, 12 do line[j] = words[(k + j * 97) % #words + 1] end
    k = k + 13
    local s = table.concat(line, " ") .. "\n"
    f:write(s)
    total = total + #s
  end
  f:close()
  return total
end

-- A trusted workspace with `n` env:// secrets of 24 random characters each.
local function mask_workspace(base, n)
  local dir = base .. "/mask" .. n
  local lines, vals = { "name: mask" .. n, "secrets:" }, {}
  for i = 1, n do
    lines[#lines + 1] = ("  S%03d: env://MOAT_BENCH_S%03d"):format(i, i)
    vals[("MOAT_BENCH_S%03d"):format(i)] = sys.random_hex(12)
  end
  t.write(dir .. "/moat.yaml", table.concat(lines, "\n") .. "\n")
  return dir, vals
end

local function mask_table(base, home)
  local file = base .. "/sample.txt"
  local bytes = sample_file(file, opts.mask_mib)
  print(("## Output masker: `cat` of %d MiB of text through moat run --runtime host"):format(opts.mask_mib))
  print("")
  print("| secrets | --mask | unmasked relay | masked / unmasked relay | --no-mask (no relay) | masked / no relay |")
  print("|--:|--:|--:|--:|--:|--:|")
  for _, n in ipairs({ 1, 10, 100 }) do
    local dir, vals = mask_workspace(base, n)
    local env = env_with({ MOAT_HOME = home, MOAT_RUNTIME = false }, vals)
    trust(dir, env)
    local masked = { MOAT, "run", "--runtime", "host", "--mask", dir, "--", "cat", file }
    -- The same hop through a pipe with nothing masked: cat relaying cat's output.
    local relay = { MOAT, "run", "--runtime", "host", "--no-mask", dir, "--", "sh", "-c", 'cat "$0" | cat', file }
    local plain = { MOAT, "run", "--runtime", "host", "--no-mask", dir, "--", "cat", file }
    local r = compare_all({ masked, relay, plain }, env, opts.mask_runs)
    local function mbs(x) return bytes / 1048576 / (x[1] / 1000) end
    local m, rl, p = mbs(r[1]), mbs(r[2]), mbs(r[3])
    print(("| %d | %.0f MB/s | %.0f MB/s | %.0f %% | %.0f MB/s | %.0f %% |"):format(n, m, rl, 100 * m / rl, p,
      100 * m / p))
    if n == 100 then
      target(m >= 0.6 * rl, ("masked relay %.0f %% of the unmasked relay with 100 secrets (>= 60 %%)")
        :format(100 * m / rl))
    end
  end
  print("")
  print(("MB/s = MiB relayed / wall time of the whole run (launch included); median of %d. "
    .. "moat has no unmasked relay of its own (--no-mask hands the command moat's stdout), so the "
    .. "unmasked relay is the same pipe hop made by cat; --no-mask shows the command's own speed.")
    :format(opts.mask_runs))
  print("")
end

local base = t.tmpdir()
local ws = base .. "/perf"
t.write(ws .. "/moat.yaml", "name: perf\n")
local homes = { disk = t.tmpdir() }
if require("lfs").attributes("/dev/shm", "mode") == "directory" then
  homes.tmpfs = "/dev/shm/moat-bench-" .. sys.random_hex(4)
  require("lfs").mkdir(homes.tmpfs)
end

local ok, err = pcall(function()
  launch_table(ws, homes)
  podman_table(ws, homes.disk)
  mask_table(base, homes.disk)
  print("targets: " .. table.concat(targets, "; "))
end)

t.rmtree(base)
t.rmtree(homes.disk)
if homes.tmpfs then t.rmtree(homes.tmpfs) end
if not ok then
  io.stderr:write("overhead benchmark failed: ", tostring(err), "\n")
  os.exit(1)
end
