-- `moat untrust [DIR]`: forget the trust recorded for DIR; its .moat/ Lua no longer loads.
local args = require("moat.args")
local cli = require("moat.cli")
local exit = require("moat.exit")

local M = {}

M.SPEC = {}
M.OPTIONS = {}

-- Entry point: returns the exit status.
function M.main(argv, ctx)
  local opts, pos, rest = args.parse(argv, M.SPEC)
  if not opts then cli.usage_error(ctx, pos) end
  if rest or #pos > 1 then cli.usage_error(ctx, "moat untrust takes at most one DIR") end
  local trust = require("moat.trust")
  local real, err = trust.realpath(pos[1] or ".")
  if not real then exit.fail(exit.USAGE, err) end
  local existed, uerr = trust.untrust(real)
  if existed == nil then exit.fail(exit.IOERR, uerr) end
  if existed then
    io.stdout:write(("forgot the trust for %s; its .moat/ Lua will not load\n"):format(real))
  else
    io.stdout:write(("%s was not trusted; nothing to forget\n"):format(real))
  end
  return 0
end

return M
