-- AWS Secrets Manager through the aws CLI: awssm:///name or awssm://region/name, optionally
-- #key to take one key of a secret that holds a JSON object. Up to 20 secrets of a region go
-- in one `aws secretsmanager batch-get-secret-value` call, all calls concurrent; a CLI without
-- that command (or an identity not allowed to batch) falls back to concurrent get-secret-value.
local M = {
  scheme = "awssm",
  description = "AWS Secrets Manager through the aws CLI (batch-get-secret-value)",
}

M.batch = 20          -- BatchGetSecretValue takes at most 20 secret ids
M.no_batch = false    -- set once the CLI turned out not to know batch-get-secret-value

local awscli = require("moat.awscli")

-- The Secrets Manager side of the CLI's errors, for awscli.classify.
local _SVC = {
  service = "Secrets Manager", noun = "the secret", grant = "secretsmanager:GetSecretValue",
  ref = "awssm://REGION/name", example = "awssm://us-east-1/name",
}
function _SVC.specific(code, text, region)
  if code == "ResourceNotFoundException" or text:find("(ResourceNotFoundException)", 1, true)
    or text:find("<Code>ResourceNotFoundException", 1, true) then
    return { kind = "not_found", reason = "the secret does not exist " .. awscli.where(region),
      fix = "check the name and region: `aws secretsmanager list-secrets`" }
  elseif code == "DecryptionFailure" then
    return awscli.failure("kms", _SVC, region)
  elseif code == "InvalidRequestException" or text:find("(InvalidRequestException)", 1, true) then
    return { kind = "invalid", reason = "Secrets Manager refused the request (is the secret scheduled for deletion?)",
      fix = "check the secret with `aws secretsmanager describe-secret --secret-id …`" }
  end
end

-- Parses "awssm:///name[#key]" or "awssm://region/name[#key]"; returns
-- { region = string|nil, id = "name" (or an ARN), key = string|nil } | nil, why.
function M.parse(ref)
  if type(ref) ~= "string" then return nil, "the reference is not a string" end
  if ref:find("[%c%s]") then return nil, "the reference contains whitespace or control characters" end
  local rest = ref:match("^awssm://(.*)$")
  if not rest then return nil, "a Secrets Manager reference looks like awssm:///name or awssm://region/name" end
  local body, key = rest:match("^([^#]*)#(.*)$")
  body = body or rest
  if key == "" then return nil, "the key after # is empty (awssm:///name#key)" end
  if key and key:find("#", 1, true) then return nil, "the reference has more than one '#'" end
  local where, why = awscli.split(body)
  if not where then
    return nil, "a Secrets Manager reference looks like awssm:///name or awssm://region/name: " .. why
  end
  local region, id = where.region, where.path:sub(2)
  if id == "" then return nil, "the secret name is empty" end
  -- The name becomes an argument of aws: one starting with "-" would be read as an option.
  if id:sub(1, 1) == "-" then return nil, "a secret name must not start with '-'" end
  if #id > 2048 then return nil, "the secret name is too long" end
  if id:match("^arn:") then
    if not id:match("^arn:[%w%-]+:secretsmanager:[%w%-]+:%d+:secret:[%w/_+=.@%-]+$") then
      return nil, "'" .. id .. "' is not a Secrets Manager secret ARN"
    end
  elseif #id > 512 or not id:match("^[%w/_+=.@%-]+$") then
    return nil, "a secret name holds 1 to 512 letters, digits and / _ + = . @ -"
  end
  return { region = region, id = id, key = key }
end

local function _argv(op, ...)
  local argv = { "aws", "secretsmanager", op, ... }
  table.move({ "--output", "json" }, 1, 2, #argv + 1, argv)
  return argv
end

-- Runs argv; returns decoded JSON | nil, failure (with `unsupported` when the CLI lacks `op`).
local function _call(ctx, argv, region, op)
  local doc, f = awscli.call(ctx, argv, function(r)
    return awscli.classify((r.stderr or "") .. "\n" .. (r.stdout or ""), _SVC,
      { region = region, exit = r.code, cmd = "aws secretsmanager " .. op })
  end, region)
  if not doc and f.detail then f.unsupported = f.detail:find("Invalid choice", 1, true) ~= nil end
  if not doc and f.unsupported then f.known = true end
  return doc, f
end

-- Returns the secret's bytes from a GetSecretValue-shaped entry | nil, failure.
local function _payload(entry)
  if type(entry.SecretString) == "string" then return entry.SecretString end
  if type(entry.SecretBinary) == "string" then
    -- The CLI prints SecretBinary as standard base64; line breaks, if any, are not part of it.
    local bytes = require("moat.c.system").base64_decode((entry.SecretBinary:gsub("%s", "")))
    if bytes then return bytes end
  end
  return nil, { kind = "invalid", reason = "the secret has neither SecretString nor SecretBinary",
    fix = "store a value in the secret: `aws secretsmanager put-secret-value`" }
end

-- Fetches `ids` of one region one call each, concurrently; returns { [id] = payload | failure table }.
local function _singles(ctx, region, ids)
  local fns = {}
  for i, id in ipairs(ids) do
    fns[i] = function()
      local doc, f = _call(ctx, _argv("get-secret-value", "--secret-id=" .. id), region, "get-secret-value")
      if not doc then return f end
      local v, pf = _payload(doc)
      return v or pf
    end
  end
  local results = awscli.run_all(ctx, fns)
  local out = {}
  for i, id in ipairs(ids) do out[id] = results[i] end
  return out
end

-- Fetches ≤ M.batch ids of one region with one batch call; returns { [id] = payload | failure }.
local function _batch(ctx, region, ids)
  if M.no_batch then return _singles(ctx, region, ids) end
  local argv = _argv("batch-get-secret-value", "--secret-id-list", table.unpack(ids))
  local doc, f = _call(ctx, argv, region, "batch-get-secret-value")
  if not doc then
    if f.unsupported then M.no_batch = true end
    -- An old CLI, or an identity allowed GetSecretValue but not the batch call: ask one by one,
    -- which also names the failing secrets. Failures no call can avoid are not retried.
    if f.unsupported or (not f.global and f.kind ~= "timeout") then return _singles(ctx, region, ids) end
    local out = {}
    for _, id in ipairs(ids) do out[id] = f end
    return out
  end
  local out = {}
  local by_name, by_arn = {}, {}
  for _, e in ipairs(type(doc.SecretValues) == "table" and doc.SecretValues or {}) do
    if type(e) == "table" then
      if type(e.Name) == "string" then by_name[e.Name] = e end
      if type(e.ARN) == "string" then by_arn[e.ARN] = e end
    end
  end
  for _, e in ipairs(type(doc.Errors) == "table" and doc.Errors or {}) do
    if type(e) == "table" and type(e.SecretId) == "string" then
      local code = type(e.ErrorCode) == "string" and e.ErrorCode or nil
      local msg = type(e.Message) == "string" and e.Message or nil
      local fail = awscli.classify((code or "") .. "\n" .. (msg or ""), _SVC,
        { region = region, code = code, cmd = "aws secretsmanager batch-get-secret-value" })
      fail.detail = msg
      out[e.SecretId] = fail
    end
  end
  for _, id in ipairs(ids) do
    local e = by_name[id] or by_arn[id]
    if e then
      local v, pf = _payload(e)
      out[id] = v or pf
    elseif out[id] == nil then
      out[id] = { kind = "backend_error", reason = "batch-get-secret-value returned nothing for it",
        fix = "run `aws secretsmanager get-secret-value --secret-id …` by hand to see why" }
    end
  end
  return out
end

-- Takes `key` of the JSON object in `payload`; returns the value | nil, failure.
local function _take(ctx, payload, key)
  local obj = ctx.json.decode(payload)
  if type(obj) ~= "table" or getmetatable(obj) == ctx.json.array_mt then
    return nil, { kind = "invalid", reason = ("#%s needs a secret holding a JSON object; this one is not"):format(key),
      fix = "drop #key to take the whole secret, or store a JSON object in it" }
  end
  local v = obj[key]
  if v == nil then
    return nil, { kind = "not_found", reason = ("the secret's JSON has no key '%s'"):format(key),
      fix = "check the key's spelling (keys are case-sensitive)" }
  end
  if type(v) == "string" then return v end
  if math.type(v) == "integer" then return ("%d"):format(v) end
  if type(v) == "number" then return ("%.17g"):format(v) end
  if type(v) == "boolean" then return tostring(v) end
  return nil, { kind = "invalid", reason = ("the key '%s' holds a JSON %s, not a string"):format(key,
      v == ctx.json.null and "null" or "object or array"),
    fix = "point #key at a string, number or boolean" }
end

-- Optional readiness check: `aws sts get-caller-identity` once per region in use (true | nil,
-- reason, fix); `requests`, when given, name the regions.
M.check = awscli.check

-- Resolves requests ({name, ref, parsed}): ≤ 20 secrets a call per region, all calls at once.
function M.resolve(requests, ctx)
  local jobs = {}
  for _, g in ipairs(awscli.by_region(ctx, requests, M.parse, function(p) return p.id end)) do
    for i = 1, #g.names, M.batch do
      local last = math.min(i + M.batch - 1, #g.names)
      jobs[#jobs + 1] = { region = g.region, ids = table.move(g.names, i, last, 1, {}) }
    end
  end
  local fns = {}
  for i, j in ipairs(jobs) do fns[i] = function() return _batch(ctx, j.region, j.ids) end end
  local results = awscli.run_all(ctx, fns)
  local got = {}
  for i, j in ipairs(jobs) do
    for _, id in ipairs(j.ids) do got[(j.region or "") .. "\0" .. id] = results[i][id] end
  end
  -- Failures are reported last so their CLI text can be scrubbed of every value fetched.
  local values, failed = {}, {}
  for _, v in pairs(got) do
    if type(v) == "string" then values[#values + 1] = v end
  end
  for _, req in ipairs(requests) do
    local p = req.parsed or assert(M.parse(req.ref))
    local v = got[(awscli.region(ctx, p.region) or "") .. "\0" .. p.id]
    local f
    if type(v) == "string" and p.key then v, f = _take(ctx, v, p.key) end
    if type(v) == "string" then
      values[#values + 1] = v
      ctx.ok(req, v)
    else
      f = f or v or { kind = "backend_error", reason = "no answer for this secret" }
      failed[#failed + 1] = { req = req, f = f }
    end
  end
  for _, x in ipairs(failed) do
    ctx.fail(x.req, { kind = x.f.kind, reason = awscli.reason(x.f, values, ctx), fix = x.f.fix })
  end
end

return M
