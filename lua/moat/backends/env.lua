-- env://VAR: the value of an environment variable of the host (moat's own environment).
local M = { scheme = "env", description = "a variable of the host environment (env://VAR)" }

-- Parses `ref`; returns { var } | nil, why.
function M.parse(ref)
  local var = type(ref) == "string" and ref:match("^env://(.*)$")
  if not var then return nil, "must be env://VAR" end
  if var == "" then return nil, "the variable name is empty (env://VAR)" end
  if not var:match("^[A-Za-z_][A-Za-z0-9_]*$") then
    return nil, ("'%s' is not a variable name (letters, digits and _, not starting with a digit)")
      :format((var:gsub("[%z\1-\31\127]", "?")))
  end
  return { var = var }
end

-- Resolves each request from the host environment; an unset variable is not found.
function M.resolve(requests, ctx)
  for _, req in ipairs(requests) do
    local var = req.parsed and req.parsed.var or M.parse(req.ref).var
    local v = ctx.env(var)
    if v == nil then
      ctx.fail(req, { kind = "not_found", reason = ("the host variable %s is not set"):format(var),
        fix = ("export %s=... before moat run"):format(var) })
    else
      ctx.ok(req, v)
    end
  end
end

return M
