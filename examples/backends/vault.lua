-- HashiCorp Vault KV (v1 or v2) through the vault CLI.
--   vault://MOUNT/PATH#FIELD          e.g. vault://secret/app#password
--   vault://secret/data/app#password  (the KV v2 API path is accepted too)
-- Install: copy to ~/.config/moat/lua/moat/backends/vault.lua (or /etc/moat/lua/moat/backends/).
-- One `vault kv get -format=json` per distinct path, all paths at once; every field of a path
-- comes from that one call. VAULT_ADDR, VAULT_TOKEN, VAULT_NAMESPACE are read by the CLI itself.
local M = { scheme = "vault", description = "HashiCorp Vault KV through the vault CLI (vault kv get)" }

local _SEG = "^[%w_.@%-]+$"

-- Parses a reference; returns { mount, path, field } | nil, why.
function M.parse(ref)
  local rest = ref:match("^vault://(.*)$")
  if not rest then return nil, "a Vault reference looks like vault://MOUNT/PATH#FIELD" end
  local body, field = rest:match("^([^#]*)#(.*)$")
  if not body or field == "" then return nil, "name the field after #: vault://MOUNT/PATH#FIELD" end
  if field:find("#", 1, true) then return nil, "the reference has more than one '#'" end
  local mount, path = body:match("^([^/]+)/(.+)$")
  if not mount then return nil, "the reference needs a mount and a path: vault://MOUNT/PATH#FIELD" end
  path = path:gsub("^data/", "")          -- vault://secret/data/app is the KV v2 API path of secret/app
  for seg in (mount .. "/" .. path):gmatch("[^/]+") do
    if not seg:match(_SEG) or seg == ".." or seg == "." then
      return nil, ("'%s' is not a valid path segment (letters, digits, _ . @ -)"):format(seg)
    end
  end
  if path:find("//", 1, true) or path:sub(-1) == "/" then return nil, "the path has an empty segment" end
  return { mount = mount, path = path, field = field }
end

-- Readiness: is the vault CLI installed?
function M.check(ctx)
  local r = ctx.run({ "vault", "version" })
  if not r then
    return nil, "the vault CLI is not installed", "install it: https://developer.hashicorp.com/vault/install"
  end
  if r.code ~= 0 then return nil, "`vault version` failed", "check the vault CLI installation" end
  return true
end

-- Maps a failed `vault kv get` to { kind, reason, fix }.
local function _failure(r, key)
  local err = r.stderr or ""
  if err:find("No value found at", 1, true) then
    return { kind = "not_found", reason = "Vault has no secret at " .. key,
      fix = "check the mount and path: `vault kv list " .. key:match("^(.*)/[^/]*$") .. "`" }
  end
  if err:find("permission denied", 1, true) or err:find("Code: 403", 1, true) then
    return { kind = "auth", reason = "Vault denied access to " .. key,
      fix = "log in (`vault login`) or use a token whose policy allows reading " .. key }
  end
  if err:find("missing client token", 1, true) then
    return { kind = "auth", reason = "no Vault token", fix = "run `vault login` or set VAULT_TOKEN" }
  end
  if err:find("connection refused", 1, true) or err:find("dial tcp", 1, true) or err:find("no such host", 1, true) then
    return { kind = "unavailable", reason = "cannot reach the Vault server", fix = "check VAULT_ADDR and the network" }
  end
  return { kind = "backend_error", reason = ("vault kv get failed (exit %s)"):format(tostring(r.code)),
    fix = "run `vault kv get " .. key .. "` by hand to see the error" }
end

-- Fetches one path; returns { fields } | nil, failure.
local function _get(ctx, mount, path)
  local key = mount .. "/" .. path
  local r = ctx.run({ "vault", "kv", "get", "-format=json", "-mount=" .. mount, path })
  if not r then
    return nil, { kind = "unavailable", reason = "the vault CLI is not installed",
      fix = "install it: https://developer.hashicorp.com/vault/install" }
  end
  if r.timed_out then
    return nil, { kind = "timeout", reason = "vault did not answer in time", fix = "check VAULT_ADDR" }
  end
  if r.code ~= 0 then return nil, _failure(r, key) end
  local doc = ctx.json.decode(r.stdout)
  local data = type(doc) == "table" and doc.data
  if type(data) ~= "table" then
    return nil, { kind = "backend_error", reason = "vault printed something other than the expected JSON" }
  end
  -- KV v2 wraps the fields with their metadata; KV v1 returns them directly.
  if type(data.data) == "table" and data.metadata ~= nil then data = data.data end
  return data
end

-- Resolves requests: one call per distinct MOUNT/PATH, all concurrent.
function M.resolve(requests, ctx)
  local paths, order = {}, {}
  for _, req in ipairs(requests) do
    local key = req.parsed.mount .. "/" .. req.parsed.path
    if not paths[key] then
      paths[key] = { mount = req.parsed.mount, path = req.parsed.path, reqs = {} }
      order[#order + 1] = key
    end
    table.insert(paths[key].reqs, req)
  end
  local fns = {}
  for i, key in ipairs(order) do
    local p = paths[key]
    fns[i] = function() return { _get(ctx, p.mount, p.path) } end
  end
  local gather = ctx.gather or function(list)
    local out = {}
    for i, fn in ipairs(list) do out[i] = fn() end
    return out
  end
  local results = gather(fns)
  for i, key in ipairs(order) do
    local fields, failure = results[i][1], results[i][2]
    for _, req in ipairs(paths[key].reqs) do
      if not fields then
        ctx.fail(req, failure)
      else
        local v = fields[req.parsed.field]
        if type(v) == "string" then
          ctx.ok(req, v)
        elseif type(v) == "number" or type(v) == "boolean" then
          ctx.ok(req, math.type(v) == "integer" and ("%d"):format(v) or tostring(v))
        elseif v == nil then
          ctx.fail(req, { kind = "not_found", reason = ("%s has no field '%s'"):format(key, req.parsed.field),
            fix = "check the field name: `vault kv get " .. key .. "`" })
        else
          ctx.fail(req, { kind = "invalid", reason = ("the field '%s' is not a string"):format(req.parsed.field) })
        end
      end
    end
  end
end

return M
