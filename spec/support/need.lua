-- Test support: the one way a spec says it cannot run here because the machine lacks something
-- (a daemon, a tool, root, a mount). Locally the test turns pending with the reason; under
-- CI=true it fails instead, so that nothing in CI turns pending by itself:
--   if not srv then return pending(need.missing("moto", why)) end
local M = {}

-- True when the suite runs in CI (CI=true or CI=1), where everything a spec needs must be there.
function M.strict()
  local ci = os.getenv("CI")
  return ci == "true" or ci == "1"
end

-- Takes what is missing and why; returns the message for pending(), or raises under CI=true.
function M.missing(what, why)
  local msg = what .. " is not available here" .. (why and (": " .. tostring(why)) or "")
  if M.strict() then
    error(msg .. " (CI=true: a test may not skip itself in CI; `make deps` installs what the suite needs"
      .. " and the suite runs as root)", 2)
  end
  return msg
end

return M
