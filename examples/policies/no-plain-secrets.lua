-- Policy: a variable whose name looks like a credential (*KEY*, *TOKEN*, *SECRET*, *PASSWORD*,
-- *CREDENTIAL*) must come from a secret store, never be a plain value written in the config.
-- Install: copy to /etc/moat/policy.lua or ~/.config/moat/policy.lua (or require it from there).
local WORDS = { "KEY", "TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL" }

local function sensitive(name)
  local up = name:upper()
  for _, w in ipairs(WORDS) do
    if up:find(w, 1, true) then return true end
  end
  return false
end

return function(plan, ctx)
  for _, s in ipairs(plan.secrets) do
    if s.plain and sensitive(s.name) then
      ctx.deny(s, "looks like a credential but is a plain value in the config; use a secret reference"
        .. " (op://, ssm://, awssm://, env://)")
    end
  end
  for _, e in ipairs(plan.env) do
    if sensitive(e.name) then
      ctx.deny(e.name, "looks like a credential but is set in env:; move it to secrets: with a reference")
    end
  end
end
