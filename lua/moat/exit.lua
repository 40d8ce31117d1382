-- moat's own exit codes (sysexits) and the error object that carries one up to the CLI.
local M = {}

M.USAGE = 64        -- usage error
M.UNAVAILABLE = 69  -- a secret could not be resolved, or no runtime is usable
M.SOFTWARE = 70     -- internal error (a bug)
M.IOERR = 74        -- audit log could not be written
M.NOPERM = 77       -- a policy denied the run
M.CONFIG = 78       -- invalid config

local Failure = {}
Failure.__index = Failure
Failure.__tostring = function(f) return f.message end

-- Raises a failure that the CLI prints (message, may be multi-line) and exits with `code`.
function M.fail(code, message)
  error(setmetatable({ code = code, message = message }, Failure), 0)
end

-- Returns true when `e` is a failure raised by M.fail.
function M.is_failure(e)
  return getmetatable(e) == Failure
end

return M
