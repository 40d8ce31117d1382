-- Driver for the benchmark and the SSM integration suite: loads DIR's config, builds the plan
-- and runs secrets.resolve in this process, then prints JSON
-- { ok, ms, records = [...], values = { NAME = value } (only with --values: test data only) }.
-- Usage: lua5.4 spec/bench/resolve.lua DIR [--jobs N] [--timeout S] [--values]
local root = arg[0]:match("^(.*)/spec/bench/resolve%.lua$") or "."
local build = os.getenv("MOAT_BUILD") or (root .. "/build")
package.path = root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua;" .. package.path
package.cpath = build .. "/lib/?.so;" .. package.cpath

local json = require("moat.c.json")
local sys = require("moat.c.system")
local config = require("moat.config")
local plan_mod = require("moat.plan")
local secrets = require("moat.secrets")

local dir, opts, with_values = nil, {}, false
local i = 1
while arg[i] do
  local a = arg[i]
  if a == "--jobs" then opts.jobs = math.tointeger(tonumber(arg[i + 1])); i = i + 1
  elseif a == "--timeout" then opts.timeout = tonumber(arg[i + 1]); i = i + 1
  elseif a == "--values" then with_values = true
  else dir = a end
  i = i + 1
end

local t0 = sys.monotonic_ms()
if not dir then
  io.stderr:write("usage: lua5.4 spec/bench/resolve.lua DIR [--jobs N] [--timeout S] [--values]\n")
  os.exit(64)
end
local cfg = config.load(dir)
local plan = plan_mod.build(cfg, {})
local res = secrets.resolve(plan, opts)
local ms = sys.monotonic_ms() - t0

local records = {}
for k, r in ipairs(res.records) do
  records[k] = { name = r.name, ref = r.ref, backend = r.backend, ok = r.ok, ms = r.ms,
    kind = r.kind or json.null, reason = r.reason or json.null, fix = r.fix or json.null }
end
local out = { ok = res.ok, ms = ms, records = json.array(records) }
if with_values then out.values = res.values end
io.stdout:write(assert(json.encode(out)), "\n")
os.exit(res.ok and 0 or 69)
