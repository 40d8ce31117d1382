-- Loaded by busted before every spec: puts the repo's Lua and built C modules on the path.
local root = (debug.getinfo(1, "S").source:match("^@(.*)/spec/helper%.lua$")) or "."
if root:sub(1, 1) ~= "/" then
  local pwd = os.getenv("PWD") or "."
  root = root == "." and pwd or pwd .. "/" .. root
end
local build = os.getenv("MOAT_BUILD") or (root .. "/build")

package.path = table.concat({
  root .. "/lua/?.lua", root .. "/lua/?/init.lua", root .. "/spec/?.lua", package.path,
}, ";")
package.cpath = build .. "/lib/?.so;" .. package.cpath

_G.MOAT_ROOT = root
_G.MOAT_BIN = build .. "/moat"
