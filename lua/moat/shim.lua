-- Values into a local docker/podman container without putting them in its config: moat-init,
-- the helper installed beside moat, is bind-mounted read-only as the container's entrypoint;
-- it reads NAME=value records from a FIFO that sits in a private 0700 directory, sets them
-- and execs the image's own entrypoint and command. A companion process (moat-init --feed)
-- writes the records into the FIFO once the container opens it, so no value is ever in an
-- argv, a file at rest, `inspect` output or the engine's state.
local M = {}

M.INIT = "/.moat/init"   -- where the shim is mounted inside the container
M.FIFO = "/.moat/env"    -- where the FIFO is mounted inside the container
M.PULL_MS = 600000       -- how long an image pull before the inspection may take

-- Returns the path of moat-init beside the running moat binary | nil when there is none.
function M.path()
  local sys = require("moat.c.system")
  local exe = sys.realpath("/proc/self/exe")
  local dir = exe and exe:match("^(.*)/[^/]+$")
  local p = dir and dir .. "/moat-init"
  if p and require("lfs").attributes(p, "mode") == "file" then return p end
  return nil
end

-- Returns the records for `env` (map NAME -> value) as netstrings "LEN:NAME=VALUE,", sorted by
-- name and ended by "0:," (the shim refuses a stream without that end).
function M.records(env)
  local names = {}
  for k in pairs(env) do names[#names + 1] = k end
  table.sort(names)
  local out = {}
  for _, k in ipairs(names) do
    local rec = k .. "=" .. env[k]
    out[#out + 1] = #rec .. ":" .. rec .. ","
  end
  out[#out + 1] = "0:,"
  return table.concat(out)
end

local function _base(environ)
  local lfs = require("lfs")
  local x = environ and environ.XDG_RUNTIME_DIR
  if x and x:sub(1, 1) == "/" and not x:find("[%z\1-\31\127:,]") and lfs.attributes(x, "mode") == "directory" then
    return x
  end
  return "/tmp"
end

-- Makes a private directory (0700, under $XDG_RUNTIME_DIR or /tmp) with the FIFO in it, made by
-- `init --mkfifo`. run(argv, timeout_ms) -> result. Returns dir, fifo | nil, message.
function M.fifo(init, environ, run)
  local sys = require("moat.c.system")
  local base, dir = _base(environ), nil
  for _ = 1, 8 do
    local d = base .. "/moat-" .. sys.random_hex(8)
    if sys.mkdir(d, tonumber("700", 8)) then dir = d break end
  end
  if not dir then return nil, "cannot make a private directory under " .. base end
  local fifo = dir .. "/env"
  local r = run({ init, "--mkfifo", fifo }, 10000)
  if not r or r.code ~= 0 then
    os.remove(dir)
    return nil, ("cannot make the FIFO for the values in %s: %s"):format(dir, r and r.stderr or "moat-init did not run")
  end
  return dir, fifo
end

-- Removes the FIFO and its directory.
function M.remove(dir, fifo)
  os.remove(fifo)
  os.remove(dir)
end

local function _strings(v)
  if type(v) ~= "table" then return {} end
  local out = {}
  for i, s in ipairs(v) do
    if type(s) ~= "string" then return nil end
    out[i] = s
  end
  return out
end

local function _inspect(client, image, run)
  local r = run({ client, "image", "inspect", "--format",
    '{"e":{{json .Config.Entrypoint}},"c":{{json .Config.Cmd}}}', image }, 30000)
  if not r then return nil, client .. " is not installed" end
  if r.code ~= 0 then return nil, (r.stderr:match("[^\n]+") or "inspect failed") end
  return r.stdout
end

-- Returns the image's entrypoint and command (arrays of strings, maybe empty), pulling the
-- image first when the engine does not have it | nil, message. run(argv, timeout_ms) -> result.
function M.image_command(client, image, run)
  local out, err = _inspect(client, image, run)
  if not out then
    require("moat.ui").progress(("pulling image %s (its entrypoint and command are needed first)")
      :format(require("moat.text").show(image)))
    local p = run({ client, "pull", "--quiet", image }, M.PULL_MS)
    if p and p.code == 0 then out, err = _inspect(client, image, run) end
  end
  if not out then
    return nil, ("cannot read the entrypoint and command of image '%s' (%s image inspect: %s)")
      :format(image, client, require("moat.text").show(err))
  end
  local ok, t = pcall(require("moat.c.json").decode, out)
  local entry, cmd = ok and type(t) == "table" and _strings(t.e), ok and type(t) == "table" and _strings(t.c)
  if not (entry and cmd) then
    return nil, ("%s image inspect gave no readable entrypoint and command for '%s'"):format(client, image)
  end
  return entry, cmd
end

-- Returns what the shim execs: the image's entrypoint, then the user's command or else the
-- image's own; `sh` when both are empty.
function M.command(entry, cmd, user)
  local out = {}
  for _, a in ipairs(entry) do out[#out + 1] = a end
  for _, a in ipairs(user or cmd) do out[#out + 1] = a end
  if #out == 0 then out[1] = "sh" end
  return out
end

return M
