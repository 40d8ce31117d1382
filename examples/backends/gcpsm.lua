-- Google Cloud Secret Manager through the gcloud CLI.
--   gcpsm://PROJECT/SECRET[#VERSION]   e.g. gcpsm://my-project/db-password#3
--   gcpsm:///SECRET                    (the gcloud default project; VERSION defaults to latest)
-- Install: copy to ~/.config/moat/lua/moat/backends/gcpsm.lua (or /etc/moat/lua/moat/backends/).
-- gcloud reads one secret version a call, so distinct secrets are fetched concurrently. The
-- payload is taken from --format=json (base64) so that values stay byte-exact.
local M = { scheme = "gcpsm", description = "Google Cloud Secret Manager through gcloud (secrets versions access)" }

-- Parses a reference; returns { project = string|nil, secret, version } | nil, why.
function M.parse(ref)
  local rest = ref:match("^gcpsm://(.*)$")
  if not rest then return nil, "a Secret Manager reference looks like gcpsm://PROJECT/SECRET[#VERSION]" end
  local body, version = rest:match("^([^#]*)#(.*)$")
  body = body or rest
  version = version or "latest"
  local project, secret = body:match("^([^/]*)/([^/]+)$")
  if not project then return nil, "a Secret Manager reference looks like gcpsm://PROJECT/SECRET[#VERSION]" end
  if project ~= "" and not project:match("^[a-z][a-z0-9%-]*[a-z0-9]$") then
    return nil, ("'%s' is not a project id"):format(project)
  end
  if not secret:match("^[%w_%-]+$") or #secret > 255 then
    return nil, "a secret id holds up to 255 letters, digits, _ and -"
  end
  if version ~= "latest" and not version:match("^%d+$") then
    return nil, "the version is a number or 'latest'"
  end
  return { project = project ~= "" and project or nil, secret = secret, version = version }
end

-- Readiness: is gcloud installed?
function M.check(ctx)
  local r = ctx.run({ "gcloud", "--version" })
  if not r then
    return nil, "gcloud is not installed", "install the Google Cloud CLI: https://cloud.google.com/sdk/docs/install"
  end
  if r.code ~= 0 then return nil, "`gcloud --version` failed", "check the gcloud installation" end
  return true
end

local _B64 = {}
local _ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
for i = 1, #_ALPHABET do _B64[_ALPHABET:byte(i)] = i - 1 end
_B64[("-"):byte()], _B64[("_"):byte()] = 62, 63  -- the URL-safe alphabet decodes too

local function _unbase64(s)
  s = s:gsub("%s", ""):gsub("=+$", "")
  local out = {}
  for i = 1, #s, 4 do
    local chunk, n, bits = s:sub(i, i + 3), 0, 0
    for j = 1, #chunk do
      local v = _B64[chunk:byte(j)]
      if not v then return nil end
      n, bits = (n << 6) | v, bits + 6
    end
    local bytes = bits // 8
    n = n >> (bits - bytes * 8)
    for k = bytes, 1, -1 do out[#out + 1] = string.char((n >> (8 * (k - 1))) & 255) end
  end
  return table.concat(out)
end

local function _failure(r, what)
  local err = r.stderr or ""
  if err:find("NOT_FOUND", 1, true) then
    return { kind = "not_found", reason = what .. " does not exist or has no such version",
      fix = "check the project, secret and version: `gcloud secrets versions list SECRET`" }
  end
  if err:find("PERMISSION_DENIED", 1, true) then
    return { kind = "auth", reason = "Secret Manager denied access to " .. what,
      fix = "grant roles/secretmanager.secretAccessor on the secret to this account" }
  end
  if err:find("gcloud auth login", 1, true) or err:find("active account", 1, true)
    or err:find("Reauthentication", 1, true) then
    return { kind = "auth", reason = "gcloud is not logged in", fix = "run `gcloud auth login`" }
  end
  if err:find("property [project] is not currently set", 1, true) then
    return { kind = "invalid", reason = "no project given and gcloud has no default project",
      fix = "write the project in the reference (gcpsm://PROJECT/SECRET) or run `gcloud config set project ID`" }
  end
  return { kind = "backend_error", reason = ("gcloud failed (exit %s)"):format(tostring(r.code)),
    fix = "run `gcloud secrets versions access` by hand to see the error" }
end

local function _access(ctx, p)
  local argv = { "gcloud", "secrets", "versions", "access", p.version, "--secret=" .. p.secret, "--format=json" }
  if p.project then argv[#argv + 1] = "--project=" .. p.project end
  local what = ("secret %s%s"):format(p.project and (p.project .. "/") or "", p.secret)
  local r = ctx.run(argv)
  if not r then
    return nil, { kind = "unavailable", reason = "gcloud is not installed",
      fix = "install the Google Cloud CLI: https://cloud.google.com/sdk/docs/install" }
  end
  if r.timed_out then return nil, { kind = "timeout", reason = "gcloud did not answer in time" } end
  if r.code ~= 0 then return nil, _failure(r, what) end
  local doc = ctx.json.decode(r.stdout)
  local data = type(doc) == "table" and type(doc.payload) == "table" and doc.payload.data
  local value = type(data) == "string" and _unbase64(data)
  if not value then
    return nil, { kind = "backend_error", reason = "gcloud printed something other than the expected JSON" }
  end
  return value
end

-- Resolves requests: one gcloud call per distinct secret version, all concurrent.
function M.resolve(requests, ctx)
  local seen, order = {}, {}
  for _, req in ipairs(requests) do
    local p = req.parsed
    local key = ("%s/%s#%s"):format(p.project or "", p.secret, p.version)
    if not seen[key] then
      seen[key] = { p = p, reqs = {} }
      order[#order + 1] = key
    end
    table.insert(seen[key].reqs, req)
  end
  local fns = {}
  for i, key in ipairs(order) do fns[i] = function() return { _access(ctx, seen[key].p) } end end
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
