-- `moat trust [DIR]`: record the SHA-256 of every file under DIR/.moat/ so that its Lua
-- (backends, modules, policy.lua) may load, until any of those files changes.
local args = require("moat.args")
local cli = require("moat.cli")
local exit = require("moat.exit")
local ui = require("moat.ui")

local M = {}

-- Entry point: returns the exit status.
function M.main(argv, ctx)
  local opts, pos, rest = args.parse(argv, {})
  if not opts then cli.usage_error(ctx, pos) end
  if rest or #pos > 1 then cli.usage_error(ctx, "moat trust takes at most one DIR") end
  local trust = require("moat.trust")
  local dir = pos[1] or "."
  local real, err = trust.realpath(dir)
  if not real then exit.fail(exit.USAGE, err) end
  local lfs = require("lfs")
  if lfs.attributes(real .. "/.moat", "mode") ~= "directory" then
    exit.fail(exit.USAGE, ("%s has no .moat/ directory: there is nothing to trust"):format(real))
  end
  local before = trust.status(real)
  local rec, terr = trust.trust(real)
  if not rec then exit.fail(exit.IOERR, terr) end
  local names = {}
  for rel in pairs(rec.files) do names[#names + 1] = rel end
  table.sort(names)
  for _, rel in ipairs(names) do
    local mark = ""
    if before and before.record then
      if before.record.files[rel] == nil then mark = "  (new)"
      elseif before.record.files[rel] ~= rec.files[rel] then mark = "  (changed)" end
    end
    io.stdout:write(("%s  .moat/%s%s\n"):format(rec.files[rel]:sub(1, 12), rel, mark))
  end
  io.stdout:write(("trusted %d file%s under %s/.moat/\n"):format(rec.count, rec.count == 1 and "" or "s", real))
  if not trust.has_lua(rec.files) then
    ui.hint("there is no Lua under .moat/ yet; adding any file later needs `moat trust` again")
  end
  return 0
end

return M
