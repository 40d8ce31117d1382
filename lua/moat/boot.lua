-- Entry point run by the moat binary: set up module search, harden, hand over to the CLI.
local info, args = ...

local loader = assert(loadfile(info.lua_dir .. "/moat/loader.lua", "t"))()
package.loaded["moat.loader"] = loader
loader.setup({ builtin = info.lua_dir, site = info.site_dir })

local sys = require("moat.c.system")
local ok, err = sys.harden()
if not ok then
  io.stderr:write("moat: cannot harden the process: ", err, "\n")
  return 70
end

-- moat run's watchdog (see moat.reaper) is moat itself, started with an internal command.
if args[1] == "__reaper" then return require("moat.reaper").main(args) end

return require("moat.cli").main(args, { version = info.version })
