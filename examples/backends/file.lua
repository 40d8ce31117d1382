-- Files on the host: file:///absolute/path — the whole file, byte for byte.
-- Install: copy to ~/.config/moat/lua/moat/backends/file.lua.
-- A secret file must be private: moat refuses a file (or a symlink to a file) that its group or
-- others may read or write, as ssh does for private keys. Fix with `chmod 600 FILE`.
local lfs = require("lfs")

local M = { scheme = "file", description = "a private file on the host (file:///path, mode 0600 or 0400)" }

M.MAX = 128 * 1024   -- moat refuses larger values anyway; do not read more than that

-- Parses a reference; returns { path } | nil, why.
function M.parse(ref)
  local path = ref:match("^file://(.*)$")
  if not path then return nil, "a file reference looks like file:///absolute/path" end
  if path:sub(1, 1) ~= "/" then return nil, "the path must be absolute: file:///absolute/path" end
  if path:find("%z") then return nil, "the path contains a NUL byte" end
  return { path = path }
end

-- Returns nil when `path` may be read, else a failure { kind, reason, fix }.
local function _refuse(path)
  local link = lfs.symlinkattributes(path)
  if not link then
    return { kind = "not_found", reason = path .. " does not exist", fix = "check the path" }
  end
  local attr = lfs.attributes(path)   -- follows a symlink to what it points at
  if not attr then
    return { kind = "not_found", reason = path .. " is a symlink to nothing", fix = "check the link's target" }
  end
  if attr.mode ~= "file" then
    return { kind = "invalid", reason = path .. " is not a regular file", fix = "point file:// at a file" }
  end
  -- permissions is "rwxrwxrwx": positions 4-9 are group and others.
  if attr.permissions:sub(4, 9):find("[rw]") then
    local what = link.mode == "link" and (path .. " points at a file that") or path
    return { kind = "invalid",
      reason = ("%s is readable or writable by group or others (%s)"):format(what, attr.permissions),
      fix = ("make it private: chmod 600 %s"):format(path) }
  end
  if attr.size > M.MAX then
    return { kind = "invalid", reason = ("%s is %d bytes, over %d KiB"):format(path, attr.size, M.MAX // 1024),
      fix = "mount large files into the container instead" }
  end
  return nil
end

-- Resolves each request by reading its file; no process is started.
function M.resolve(requests, ctx)
  for _, req in ipairs(requests) do
    local path = req.parsed.path
    local bad = _refuse(path)
    if bad then
      ctx.fail(req, bad)
    else
      local f, err = io.open(path, "rb")
      if not f then
        ctx.fail(req, { kind = "auth", reason = ("cannot open %s: %s"):format(path, tostring(err)),
          fix = "check the file's owner and permissions" })
      else
        local data = f:read(M.MAX + 1) or ""
        f:close()
        ctx.ok(req, data)
      end
    end
  end
end

return M
