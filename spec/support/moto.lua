-- Test support: a moto SSM server on a free loopback port, the real aws CLI (v1, which honours
-- AWS_ENDPOINT_URL) behind a counting wrapper first on PATH, and an environment that keeps the
-- user's own AWS config out.
local proc = require("moat.c.proc")
local json = require("moat.c.json")
local t = require("support.moat")

local M = {}

M.WRAPPER_DIR = MOAT_ROOT .. "/spec/fixtures/aws-counting"
M.STANDIN_DIR = MOAT_ROOT .. "/spec/fixtures/aws-standin"

-- Runs the server in-process with request logging off (an unread stderr pipe would stall it),
-- prints the port it got, and exits when its parent goes away.
local SERVER_PY = [[
import os, sys, time
from moto.server import ThreadedMotoServer
parent = os.getppid()
s = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
s.start()
print(s.get_host_and_port()[1], flush=True)
while os.getppid() == parent:
    time.sleep(0.5)
s.stop()
]]

-- Puts parameters given as JSON on stdin; one process for all of them keeps seeding fast.
local SEED_PY = [[
import json, os, sys
import botocore.session
data = json.load(sys.stdin)
session = botocore.session.get_session()
clients = {}
for p in data:
    region = p.get("region") or os.environ.get("AWS_DEFAULT_REGION", "us-east-1")
    c = clients.get(region)
    if c is None:
        c = clients[region] = session.create_client("ssm", region_name=region,
                                                    endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    c.put_parameter(Name=p["name"], Value=p["value"], Type=p.get("type", "String"), Overwrite=True)
    for label in p.get("labels", []):
        c.label_parameter_version(Name=p["name"], Labels=[label])
]]

local function _run(argv, opts)
  local r = t.exec(argv, opts)
  return r
end

local _available
-- Returns true when `python3 -m moto.server` can run here, else false and why.
function M.available()
  if _available == nil then
    local p = proc.spawn({ "python3", "-c", "import moto.server" }, { stdout = "null", stderr = "null" })
    if not p then
      _available = { false, "python3 is not installed" }
    else
      while not p:done() do proc.wait({ p }, 1000) end
      local r = p:result()
      _available = r.code == 0 and { true }
        or { false, "the Python module moto is not installed (pip install 'moto[server]')" }
    end
  end
  return table.unpack(_available)
end

local function _is_exec(path)
  local attr = require("lfs").attributes(path)
  return attr and attr.mode == "file" and (attr.permissions or ""):find("x") ~= nil
end

-- A pyenv shim runs `pyenv exec` on every call, which serialises concurrent calls; the program
-- it stands for is the same CLI without that overhead.
local function _unshim(path)
  local f = io.open(path, "rb")
  local head = f and f:read(2048) or ""
  if f then f:close() end
  local pyenv = head:match('exec "([^"]*pyenv)" exec')
  if not pyenv then return path end
  local r = _run({ pyenv, "which", "aws" }, { timeout = 60000 })
  local real = r.code == 0 and (r.stdout or ""):match("^(/[^\n]+)\n?$")
  return real and _is_exec(real) and real or path
end

-- Returns the first `aws` on PATH (outside `exclude` dirs) that is CLI v1 (pyenv shims resolved
-- to the program they run), or nil and why.
function M.find_aws(exclude)
  local skip = {}
  for _, d in ipairs(exclude or {}) do skip[d] = true end
  local seen = {}
  for dir in (os.getenv("PATH") or ""):gmatch("[^:]+") do
    local path = dir .. "/aws"
    if not skip[dir] and _is_exec(path) then
      local r = _run({ path, "--version" }, { timeout = 60000 })
      local out = (r.stdout or "") .. (r.stderr or "")
      seen[#seen + 1] = path .. " (" .. (out:match("^%S+") or "no version") .. ")"
      if r.code == 0 and out:match("^aws%-cli/1%.") then return _unshim(path) end
    end
  end
  return nil, "no aws CLI v1 on PATH (it honours AWS_ENDPOINT_URL; v2 before 2.13 does not)"
    .. (#seen > 0 and (": found " .. table.concat(seen, ", ")) or "")
end

local Server = {}
Server.__index = Server

-- Starts moto; returns a server { port, url, dir, log, real_aws, env = map for t.exec } or nil, why.
function M.start()
  local ok, why = M.available()
  if not ok then return nil, why end
  local real, err = M.find_aws({ M.WRAPPER_DIR, M.STANDIN_DIR })
  if not real then return nil, err end
  local p = assert(proc.spawn({ "python3", "-c", SERVER_PY }, { stdout = "pipe", stderr = "null", stream = true }))
  local buf, deadline = "", os.time() + 30
  while not buf:find("\n") and not p:done() and os.time() < deadline do
    proc.wait({ p }, 500)
    buf = buf .. (p:drain() or "")
  end
  local port = tonumber(buf:match("^(%d+)\n"))
  if not port then
    p:terminate(1000)
    return nil, "moto did not start"
  end
  local dir = t.tmpdir()
  t.write(dir .. "/config", "")
  t.write(dir .. "/credentials", "")
  local s = setmetatable({ proc = p, port = port, url = "http://127.0.0.1:" .. port, dir = dir,
    log = dir .. "/aws.log", real_aws = real }, Server)
  s.env = s:env_for({})
  return s
end

-- Returns the aws environment (a map for t.exec/t.moat: false removes) with `extra` applied:
-- endpoint, dummy keys, region us-east-1, empty config files, counting wrapper first on PATH.
function Server:env_for(extra)
  local env = {
    AWS_ENDPOINT_URL = self.url,
    AWS_ACCESS_KEY_ID = "testing",
    AWS_SECRET_ACCESS_KEY = "testing",
    AWS_DEFAULT_REGION = "us-east-1",
    AWS_CONFIG_FILE = self.dir .. "/config",
    AWS_SHARED_CREDENTIALS_FILE = self.dir .. "/credentials",
    AWS_EC2_METADATA_DISABLED = "true",
    AWS_PAGER = "",
    AWS_COUNT_LOG = self.log,
    AWS_COUNT_REAL = self.real_aws,
    PATH = M.WRAPPER_DIR .. ":" .. (os.getenv("PATH") or "/usr/bin:/bin"),
    AWS_REGION = false, AWS_PROFILE = false, AWS_DEFAULT_PROFILE = false, AWS_SESSION_TOKEN = false,
    AWS_SECURITY_TOKEN = false, AWS_ROLE_ARN = false, AWS_WEB_IDENTITY_TOKEN_FILE = false,
    AWS_CONTAINER_CREDENTIALS_RELATIVE_URI = false, AWS_CONTAINER_CREDENTIALS_FULL_URI = false,
  }
  for k, v in pairs(extra or {}) do env[k] = v end
  return env
end

-- Seeds parameters: array of { name, value, type = "String"|"SecureString", region, labels = {…} }.
function Server:seed(params)
  local list = {}
  for i, p in ipairs(params) do
    list[i] = { name = p.name, value = p.value, type = p.type or "String", region = p.region,
      labels = json.array(p.labels or {}) }
  end
  local env = self:env_for({ PATH = os.getenv("PATH") })
  local r = _run({ "python3", "-c", SEED_PY }, { env = env, stdin = assert(json.encode(json.array(list))),
    timeout = 300000 })
  assert(r.code == 0, "seeding moto failed: " .. (r.stderr or ""):sub(-2000))
end

-- Runs the real aws CLI (no counting wrapper) with the server's environment; returns the
-- decoded JSON it printed (or true when it printed nothing); raises when it fails.
function Server:admin(argv)
  local r = _run({ self.real_aws, table.unpack(argv) }, { env = self:env_for({ PATH = os.getenv("PATH") }),
    timeout = 120000 })
  assert(r.code == 0, "aws " .. table.concat(argv, " ") .. " failed: " .. (r.stderr or ""):sub(-2000))
  if (r.stdout or ""):match("^%s*$") then return true end
  return assert(json.decode(r.stdout))
end

-- Creates IAM user `name` (do it before enforce_iam, with the admin's dummy keys) with an inline
-- policy allowing `actions` (array, none: no policy at all) on every resource, and an access key;
-- returns the environment overrides that act as that user.
function Server:iam_user(name, actions)
  self:admin({ "iam", "create-user", "--user-name", name })
  if actions and #actions > 0 then
    local doc = { Version = "2012-10-17", Statement = json.array({
      { Effect = "Allow", Action = json.array(actions), Resource = "*" } }) }
    self:admin({ "iam", "put-user-policy", "--user-name", name, "--policy-name", name .. "-policy",
      "--policy-document", assert(json.encode(doc)) })
  end
  local key = self:admin({ "iam", "create-access-key", "--user-name", name }).AccessKey
  return { AWS_ACCESS_KEY_ID = key.AccessKeyId, AWS_SECRET_ACCESS_KEY = key.SecretAccessKey }
end

-- Turns IAM enforcement on for this server: from now on moto checks every request's signature
-- against its IAM users and their policies (moto's /moto-api/reset-auth sets the number of
-- requests to let through unchecked, INITIAL_NO_AUTH_ACTION_COUNT, to 0).
function Server:enforce_iam()
  local py = "import sys, urllib.request as u\n"
    .. "r = u.Request(sys.argv[1] + '/moto-api/reset-auth', data=b'0', method='POST',"
    .. " headers={'Content-Type': 'text/plain'})\n"
    .. "print(u.urlopen(r, timeout=30).read().decode())\n"
  local r = _run({ "python3", "-c", py, self.url }, { timeout = 60000 })
  assert(r.code == 0 and (r.stdout or ""):find('"status": "ok"', 1, true),
    "moto did not turn IAM enforcement on: " .. (r.stdout or "") .. (r.stderr or ""))
end

-- Returns the aws invocations logged so far: array of { id, argv, start, stop, code }.
function Server:calls()
  return M.read_log(self.log)
end

-- Forgets the logged invocations.
function Server:reset_log()
  os.remove(self.log)
end

-- Stops moto and removes the temporary files.
function Server:stop()
  if self.proc then
    self.proc:terminate(2000)
    while not self.proc:done() do proc.wait({ self.proc }, 1000) end
    self.proc = nil
  end
  t.rmtree(self.dir)
end

-- Parses a counting log ("start ID MS ARGV…" / "end ID MS CODE" lines, as the fake op writes).
function M.read_log(path)
  local calls, by_id = {}, {}
  local f = io.open(path)
  if not f then return calls end
  for line in f:lines() do
    local kind, id, ms, rest = line:match("^(%a+) (%S+) (%d+) ?(.*)$")
    if kind == "start" then
      local c = { id = id, start = tonumber(ms), argv = rest }
      calls[#calls + 1] = c
      by_id[id] = c
    elseif kind == "end" and by_id[id] then
      by_id[id].stop = tonumber(ms)
      by_id[id].code = tonumber(rest)
    end
  end
  f:close()
  return calls
end

-- True when some two of `calls` ran at the same time (by the log, not by a timing threshold).
function M.overlapped(calls)
  for i = 1, #calls do
    for j = i + 1, #calls do
      local a, b = calls[i], calls[j]
      if a.stop and b.stop and a.start < b.stop and b.start < a.stop then return true end
    end
  end
  return false
end

return M
