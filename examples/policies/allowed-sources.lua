-- Policy: secrets may come only from these 1Password vaults and these SSM path prefixes (and
-- the other backends listed in OTHER). Edit the lists for your site.
-- Install: copy to /etc/moat/policy.lua or ~/.config/moat/policy.lua.
local OP_VAULTS = { "Engineering", "CI" }            -- op://<vault>/…, compared case-insensitively
local SSM_PREFIXES = { "/team/app/", "/shared/ci/" }  -- ssm:///<path>, any region
local OTHER = { plain = true }                        -- backends allowed without restriction

local function allowed_vault(vault)
  for _, v in ipairs(OP_VAULTS) do
    if v:lower() == vault:lower() then return true end
  end
  return false
end

local function allowed_path(path)
  for _, p in ipairs(SSM_PREFIXES) do
    if path:sub(1, #p) == p then return true end
  end
  return false
end

return function(plan, ctx)
  for _, s in ipairs(plan.secrets) do
    if s.backend == "op" then
      local vault = s.ref:match("^op://([^/]+)/")
      if not vault or not allowed_vault(vault) then
        ctx.deny(s, ("1Password vault '%s' is not allowed (allowed: %s)")
          :format(tostring(vault), table.concat(OP_VAULTS, ", ")))
      end
    elseif s.backend == "ssm" then
      -- The path without region or :version, as the ssm backend parsed it.
      local path = s.parsed and s.parsed.path or s.ref:match("^ssm://[^/]*(/[^:]*)")
      if not path or path:find("/%.%.?/") or not allowed_path(path) then
        ctx.deny(s, ("SSM parameter %s is outside the allowed prefixes (%s)")
          :format(tostring(path), table.concat(SSM_PREFIXES, ", ")))
      end
    elseif not OTHER[s.backend] then
      ctx.deny(s, ("backend %s is not allowed by this site"):format(s.backend))
    end
  end
end
