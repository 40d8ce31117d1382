-- moat's own exit codes (sysexits) and the error object that carries one up to the CLI.
local M = {}

M.USAGE = 64        -- usage error
M.UNAVAILABLE = 69  -- a secret could not be resolved, or no runtime is usable
M.SOFTWARE = 70     -- internal error (a bug)
M.IOERR = 74        -- audit log could not be written
M.NOPERM = 77       -- a policy denied the run
M.CONFIG = 78       -- invalid config

-- The exit code for each kind of failure the pipeline reports (nil, message, kind).
M.OF_KIND = {
  usage = M.USAGE, config = M.CONFIG, trust = M.NOPERM, denied = M.NOPERM, secrets = M.UNAVAILABLE,
  unavailable = M.UNAVAILABLE, audit = M.IOERR, internal = M.SOFTWARE, not_found = 127,
}

local Failure = {}
Failure.__index = Failure
Failure.__tostring = function(f) return f.message end

-- Raises a failure that the CLI prints (message, may be multi-line) and exits with `code`.
function M.fail(code, message)
  error(setmetatable({ code = code, message = message }, Failure), 0)
end

-- Raises the failure for a pipeline result `nil, message, kind` (kind may be an exit status).
function M.fail_kind(message, kind)
  M.fail(M.OF_KIND[kind] or (math.type(kind) == "integer" and kind) or M.SOFTWARE, message)
end

-- Returns true when `e` is a failure raised by M.fail.
function M.is_failure(e)
  return getmetatable(e) == Failure
end

return M
