-- `moat untrust [DIR]`: forget the trust recorded for DIR; its .moat/ Lua no longer loads and
-- its config's secrets, env files, runtime, mounts and network need trust again.
local cli = require("moat.cli")
local exit = require("moat.exit")

local M = {}

M.SPEC = {}
M.OPTIONS = {}

-- Entry point: returns the exit status.
function M.main(argv, ctx)
  local _, real = cli.one_dir(ctx, argv, M.SPEC)
  local trust = require("moat.trust")
  local existed, uerr = trust.untrust(real)
  if existed == nil then exit.fail(exit.IOERR, uerr) end
  if existed then
    io.stdout:write(("forgot the trust for %s; its .moat/ Lua and the guarded part of its config need"
      .. " trust again\n"):format(real))
  else
    io.stdout:write(("%s was not trusted; nothing to forget\n"):format(real))
  end
  return 0
end

return M
