-- Finding and reading a config file without trusting what the workspace put there: a symlink
-- out of the workspace, a FIFO (whose open would block), a device, a socket or a directory is
-- refused by what it is, before anything opens it.
local lfs = require("lfs")

local M = {}

local WHAT = {
  directory = "a directory", ["named pipe"] = "a FIFO (named pipe)", socket = "a socket",
  ["char device"] = "a character device", ["block device"] = "a block device",
}

-- Returns the first of `names` that exists in `dir` (even as a dangling link), or nil.
function M.find(dir, names)
  for _, name in ipairs(names) do
    local path = (dir == "." and name) or (dir:gsub("/+$", "") .. "/" .. name)
    if lfs.symlinkattributes(path, "mode") then return path end
  end
  return nil
end

-- Checks that `path` is a regular file; `inside` (a realpath) is the workspace it must stay
-- in when it is a symlink (nil for a file the user named). Returns attributes | nil, why.
function M.check(path, inside)
  local link, _, errno = lfs.symlinkattributes(path)
  if not link then
    return nil, errno == 2 and "does not exist" or ("cannot be examined (errno %s)"):format(tostring(errno))
  end
  if link.mode == "link" then
    local real = require("moat.c.system").realpath(path)
    if not real then return nil, "is a symlink to nowhere" end
    local prefix = inside and (inside:gsub("/+$", "") .. "/")
    if prefix and real:sub(1, #prefix) ~= prefix then
      return nil, "is a symlink to a file outside the workspace; moat reads only configs that live in"
        .. " the workspace (use --config FILE for a file of your own)"
    end
  end
  local attr = lfs.attributes(path)
  if not attr then return nil, "cannot be read" end
  if attr.mode ~= "file" then
    return nil, ("is %s; a config must be a regular file"):format(WHAT[attr.mode] or "not a regular file")
  end
  return attr
end

-- Reads `path`, checked by M.check to be `attr`, when it is still a regular file of at most
-- `limit` bytes (judged on the opened file, so a FIFO swapped in cannot block the read);
-- refuses the text when the path was swapped for another file meanwhile. Returns text | nil, why.
function M.read(path, attr, limit)
  local text, err = require("moat.c.system").read_file(path, limit)
  if not text then
    -- Refusals start with the path, which the caller names already.
    if err:sub(1, #path + 1) == path .. " " then return nil, err:sub(#path + 2) end
    return nil, "cannot be read: " .. err
  end
  local after = lfs.attributes(path)
  if not after or after.dev ~= attr.dev or after.ino ~= attr.ino or after.mode ~= "file" then
    return nil, "changed while it was read; run again"
  end
  return text
end

return M
