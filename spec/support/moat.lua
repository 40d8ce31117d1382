-- Test support: run the moat binary (or any program) and capture its result.
local proc = require("moat.c.proc")

local M = {}

-- Returns moat's environment for tests as an array of NAME=value, with `extra` applied
-- (a map; false removes a variable).
function M.env(extra)
  local sys = require("moat.c.system")
  local env = sys.environ()
  for k, v in pairs(extra or {}) do
    if v == false then env[k] = nil else env[k] = v end
  end
  local out = {}
  for k, v in pairs(env) do out[#out + 1] = k .. "=" .. v end
  table.sort(out)
  return out
end

-- Runs argv; opts: env (map of overrides), cwd, stdin, timeout (ms). Returns the result table.
function M.exec(argv, opts)
  opts = opts or {}
  local p = assert(proc.spawn(argv, {
    env = M.env(opts.env), cwd = opts.cwd, stdin = opts.stdin, timeout = opts.timeout or 120000,
  }))
  while not p:done() do proc.wait({ p }, 1000) end
  return p:result()
end

-- Runs build/moat with `args`; returns code, stdout, stderr, result.
function M.moat(args, opts)
  if not (opts and opts.trust == false) then args = M.trusting(args) end
  local r = M.exec({ MOAT_BIN, table.unpack(args) }, opts)
  return r.code, r.stdout, r.stderr, r
end

-- Returns moat's `args` with --trust added to `run` and `secrets check`: a spec's workspace
-- is the spec's own words. Specs of trust itself pass { trust = false } to M.moat instead.
function M.trusting(args)
  local out = {}
  for i, a in ipairs(args) do
    out[#out + 1] = a
    if (i == 1 and a == "run") or (i == 2 and a == "check" and args[1] == "secrets") then
      out[#out + 1] = "--trust"
    end
  end
  return out
end

-- Makes a fresh temporary directory and returns its path.
function M.tmpdir()
  local p = os.tmpname()
  os.remove(p)
  assert(require("lfs").mkdir(p))
  return p
end

-- Writes `text` to `path` (absolute), creating parent directories.
function M.write(path, text)
  local lfs = require("lfs")
  local dir = ""
  for part in (path:match("^(.*)/[^/]*$") or ""):gmatch("[^/]+") do
    dir = dir .. "/" .. part
    lfs.mkdir(dir)
  end
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

-- Returns the whole of file `path`, or nil and why when it cannot be read.
function M.read(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local s = f:read("a")
  f:close()
  return s
end

-- Returns the whole of file `path`; raises when it cannot be read.
function M.slurp(path)
  return assert(M.read(path))
end

-- True when something (file, directory, anything but a dangling link) exists at `path`.
function M.exists(path)
  return require("lfs").attributes(path, "mode") ~= nil
end

-- Returns the path of program `name` on PATH (an executable file), or nil.
function M.which(name)
  local lfs = require("lfs")
  for dir in (os.getenv("PATH") or ""):gmatch("[^:]+") do
    local p = dir .. "/" .. name
    local attr = lfs.attributes(p)
    if attr and attr.mode == "file" and attr.permissions:find("x", 1, true) then return p end
  end
  return nil
end

-- True when bubblewrap is installed and can create a sandbox here (it needs user namespaces).
function M.bwrap_works()
  return M.which("bwrap") ~= nil
    and M.exec({ "bwrap", "--ro-bind", "/", "/", "--unshare-all", "--", "true" }).code == 0
end

-- The fake CLIs (op, vault, gcloud, az, pass) that specs put first on PATH (found from this
-- file, so that the benchmarks, which set no MOAT_ROOT, can load this module too).
M.FAKE_BIN = (debug.getinfo(1, "S").source:match("^@(.*)/support/moat%.lua$") or "spec") .. "/fixtures/bin"
if M.FAKE_BIN:sub(1, 1) ~= "/" then M.FAKE_BIN = (os.getenv("PWD") or ".") .. "/" .. M.FAKE_BIN end

-- Returns PATH with the fake CLIs first.
function M.fake_path()
  return M.FAKE_BIN .. ":" .. (os.getenv("PATH") or "/usr/bin:/bin")
end

-- Takes the text of a run's audit.jsonl; returns its records, decoded, in order: every line
-- but the signature line that ends a finished run's log.
function M.records(text)
  local json = require("moat.c.json")
  local recs = {}
  for line in text:gmatch("[^\n]+") do
    local r = assert(json.decode(line))
    if not (r.sig and r.type == nil) then recs[#recs + 1] = r end
  end
  return recs
end

-- Removes a directory tree.
function M.rmtree(path)
  M.exec({ "rm", "-rf", "--", path })
end

return M
