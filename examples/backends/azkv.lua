-- Azure Key Vault secrets through the az CLI.
--   azkv://VAULT/NAME[#VERSION]   e.g. azkv://my-vault/db-password
-- Install: copy to ~/.config/moat/lua/moat/backends/azkv.lua (or /etc/moat/lua/moat/backends/).
-- az reads one secret a call, so distinct secrets are fetched concurrently.
local M = { scheme = "azkv", description = "Azure Key Vault through the az CLI (az keyvault secret show)" }

-- Parses a reference; returns { vault, name, version = string|nil } | nil, why.
function M.parse(ref)
  local rest = ref:match("^azkv://(.*)$")
  if not rest then return nil, "a Key Vault reference looks like azkv://VAULT/NAME[#VERSION]" end
  local body, version = rest:match("^([^#]*)#(.*)$")
  body = body or rest
  local vault, name = body:match("^([^/]+)/([^/]+)$")
  if not vault then return nil, "a Key Vault reference looks like azkv://VAULT/NAME[#VERSION]" end
  if not vault:match("^%a[%w%-]+$") or #vault < 3 or #vault > 24 then
    return nil, ("'%s' is not a key vault name (3-24 letters, digits and -)"):format(vault)
  end
  if not name:match("^[%w%-]+$") or #name > 127 then
    return nil, "a secret name holds up to 127 letters, digits and -"
  end
  if version and not version:match("^%x+$") then return nil, "the version is a hexadecimal id" end
  return { vault = vault, name = name, version = version }
end

-- Readiness: is az installed?
function M.check(ctx)
  local r = ctx.run({ "az", "version" })
  if not r then
    return nil, "the az CLI is not installed",
      "install the Azure CLI: https://learn.microsoft.com/cli/azure/install-azure-cli"
  end
  if r.code ~= 0 then return nil, "`az version` failed", "check the az installation" end
  return true
end

local function _failure(r, what)
  local err = r.stderr or ""
  if err:find("SecretNotFound", 1, true) then
    return { kind = "not_found", reason = what .. " does not exist",
      fix = "check the name and version: `az keyvault secret list --vault-name VAULT`" }
  end
  if err:find("Forbidden", 1, true) then
    return { kind = "auth", reason = "Key Vault denied access to " .. what,
      fix = "grant this identity the 'Key Vault Secrets User' role (or a get-secrets access policy)" }
  end
  if err:find("az login", 1, true) then
    return { kind = "auth", reason = "az is not logged in", fix = "run `az login`" }
  end
  if err:find("Failed to resolve", 1, true) or err:find("Name or service not known", 1, true) then
    return { kind = "not_found", reason = "the key vault of " .. what .. " cannot be found",
      fix = "check the vault name (azkv://VAULT/NAME) and the network" }
  end
  return { kind = "backend_error", reason = ("az failed (exit %s)"):format(tostring(r.code)),
    fix = "run `az keyvault secret show` by hand to see the error" }
end

local function _show(ctx, p)
  local argv = { "az", "keyvault", "secret", "show", "--vault-name", p.vault, "--name", p.name }
  if p.version then
    argv[#argv + 1] = "--version"
    argv[#argv + 1] = p.version
  end
  argv[#argv + 1] = "--output"
  argv[#argv + 1] = "json"
  local r = ctx.run(argv)
  local what = ("secret %s in vault %s"):format(p.name, p.vault)
  if not r then
    return nil, { kind = "unavailable", reason = "the az CLI is not installed",
      fix = "install the Azure CLI: https://learn.microsoft.com/cli/azure/install-azure-cli" }
  end
  if r.timed_out then return nil, { kind = "timeout", reason = "az did not answer in time" } end
  if r.code ~= 0 then return nil, _failure(r, what) end
  local doc = ctx.json.decode(r.stdout)
  if type(doc) ~= "table" or type(doc.value) ~= "string" then
    return nil, { kind = "backend_error", reason = "az printed something other than the expected JSON" }
  end
  return doc.value
end

-- Resolves requests: one az call per distinct secret, all concurrent.
function M.resolve(requests, ctx)
  local seen, order = {}, {}
  for _, req in ipairs(requests) do
    local p = req.parsed
    local key = ("%s/%s#%s"):format(p.vault, p.name, p.version or "")
    if not seen[key] then
      seen[key] = { p = p, reqs = {} }
      order[#order + 1] = key
    end
    table.insert(seen[key].reqs, req)
  end
  local fns = {}
  for i, key in ipairs(order) do fns[i] = function() return { _show(ctx, seen[key].p) } end end
  local gather = ctx.gather or function(list)
    local out = {}
    for i, fn in ipairs(list) do out[i] = fn() end
    return out
  end
  for i, res in ipairs(gather(fns)) do
    for _, req in ipairs(seen[order[i]].reqs) do
      if res[1] then ctx.ok(req, res[1]) else ctx.fail(req, res[2]) end
    end
  end
end

return M
