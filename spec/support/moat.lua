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
  local r = M.exec({ MOAT_BIN, table.unpack(args) }, opts)
  return r.code, r.stdout, r.stderr, r
end

-- Makes a fresh temporary directory and returns its path.
function M.tmpdir()
  local p = os.tmpname()
  os.remove(p)
  assert(require("lfs").mkdir(p))
  return p
end

-- Writes `text` to `path`, creating parent directories.
function M.write(path, text)
  local lfs = require("lfs")
  local dir = ""
  for part in path:match("^(.*)/[^/]*$"):gmatch("[^/]+") do
    dir = dir .. "/" .. part
    lfs.mkdir(dir)
  end
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

-- Removes a directory tree.
function M.rmtree(path)
  M.exec({ "rm", "-rf", "--", path })
end

return M
