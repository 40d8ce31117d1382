-- Entry point run by the moat binary: set up module search, harden, hand over to the CLI.
local info, args = ...

-- The loader itself comes from the binary's precompiled chunks when they have it, like every
-- built-in module after it; otherwise from the built-in directory, as text.
local chunk = info.has_chunk and info.has_chunk("moat.loader") and info.load_chunk("moat.loader")
local loader = (chunk or assert(loadfile(info.lua_dir .. "/moat/loader.lua", "t")))()
package.loaded["moat.loader"] = loader
loader.setup({ builtin = info.lua_dir, site = info.site_dir, has_chunk = info.has_chunk,
  load_chunk = info.load_chunk })

local sys = require("moat.c.system")
local ok, err = sys.harden()
if not ok then
  io.stderr:write("moat: cannot harden the process: ", err, "\n")
  return 70
end

return require("moat.cli").main(args, { version = info.version })
