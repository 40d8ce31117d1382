-- What the AWS backends (ssm, awssm) share about driving the aws CLI: region names, running a
-- call, and turning the CLI's error texts into failures people can act on. Not a backend.
local scrub = require("moat.scrub")

local M = {}

M.INSTALL_FIX = "install the AWS CLI (https://aws.amazon.com/cli/ or your package manager) "
  .. "and make sure `aws` is on PATH"
M.MAX_SAID = 400
M.HIDDEN = scrub.PLACEHOLDER

local _NOT_INSTALLED = "the aws CLI is not installed or not on PATH"

-- Takes a string; returns whether it is an AWS region name (like us-east-1, us-gov-west-1).
function M.valid_region(region)
  if type(region) ~= "string" or #region > 32 then return false end
  local parts = {}
  for part in (region .. "-"):gmatch("([^-]*)-") do parts[#parts + 1] = part end
  if #parts < 3 or not parts[1]:match("^%l%l$") or not parts[#parts]:match("^%d+$") then
    return false
  end
  for i = 2, #parts - 1 do
    if not parts[i]:match("^%l+$") then return false end
  end
  return true
end

-- Takes a region or nil; returns where a call went, for messages.
function M.where(region)
  return region and ("region " .. region) or "the CLI's default region"
end

-- Takes text and a list of values (anything but strings is skipped); returns it with every
-- form of each value that moat.scrub hides replaced by M.HIDDEN.
function M.conceal(text, values)
  local list = {}
  for _, v in ipairs(values or {}) do
    if type(v) == "string" then list[#list + 1] = v end
  end
  return scrub.replace(text, list)
end

-- Takes CLI output, values to conceal and an optional cap; returns the one line worth showing
-- (the first that reports an error, else the first non-empty), values concealed, control
-- characters blanked, at most `max` (default M.MAX_SAID) bytes plus "…".
function M.said(text, values, max)
  max = max or M.MAX_SAID
  local pick
  for line in M.conceal(tostring(text or ""), values):gmatch("[^\r\n]+") do
    line = line:gsub("%c", " "):match("^%s*(.-)%s*$")
    if line ~= "" then
      if line:find("An error occurred", 1, true) or line:find("[Ee]rror") or line:find("Unable to", 1, true)
        or line:find("Could not", 1, true) then
        pick = line
        break
      end
      pick = pick or line
    end
  end
  pick = pick or ""
  if #pick > max then pick = pick:sub(1, max) .. "…" end
  return pick
end

-- Takes a failure {reason, detail = raw CLI text | nil} and values to conceal; returns the
-- reason followed by the line of the CLI's text that says what went wrong, if any.
function M.reason(f, values)
  local said = f.detail and M.said(f.detail, values) or ""
  if said == "" then return f.reason end
  return f.reason .. ": " .. said
end

-- Takes the message and errno of a failed start of `aws`; returns {kind, reason, fix, global}.
function M.spawn_failure(msg, errno)
  msg = tostring(msg or "")
  if errno == 2 or msg:find("No such file", 1, true) or msg:find("not found", 1, true)
    or msg:find("ENOENT", 1, true) then
    return { global = true, kind = "unavailable", reason = _NOT_INSTALLED, fix = M.INSTALL_FIX }
  end
  return { global = true, kind = "unavailable", reason = "could not start the aws CLI: " .. M.said(msg),
    fix = M.INSTALL_FIX }
end

-- Takes a backend ctx; runs `aws --version` and returns true | nil, reason, fix.
function M.check(ctx)
  local r, err, errno = ctx.run({ "aws", "--version" }, {})
  if not r then
    local f = M.spawn_failure(err, errno)
    return nil, f.reason, f.fix
  end
  if r.code ~= 0 then
    return nil, "`aws --version` failed (exit " .. tostring(r.code) .. ")", M.INSTALL_FIX
  end
  return true
end

-- Takes CLI output; returns the AWS error code of "An error occurred (Code)" | nil.
function M.error_code(text)
  return tostring(text or ""):match("An error occurred %(([%w.]+)%)")
end

-- The failures every AWS service shares, by name; `svc` describes the service (see M.classify).
local _COMMON = {
  no_credentials = function()
    return { global = true, kind = "auth", reason = "the aws CLI found no AWS credentials",
      fix = "run `aws configure`, set AWS_PROFILE to a configured profile, or run `aws sso login`" }
  end,
  expired = function()
    return { global = true, kind = "auth", reason = "the AWS session token has expired",
      fix = "run `aws sso login` (with the same AWS_PROFILE) or refresh the temporary credentials" }
  end,
  kms = function(svc)
    return { kind = "auth", reason = "KMS refused to decrypt " .. (svc.encrypted or svc.noun),
      fix = "grant kms:Decrypt on " .. svc.noun .. "'s KMS key to this identity (IAM policy or key policy)" }
  end,
  denied = function(svc)
    return { kind = "auth", reason = "AWS denied access to " .. svc.noun,
      fix = "grant " .. svc.grant .. " on " .. svc.noun
        .. " to this identity (see `aws sts get-caller-identity`)" }
  end,
  rejected = function()
    return { global = true, kind = "auth", reason = "AWS rejected the credentials",
      fix = "check AWS_PROFILE / AWS_ACCESS_KEY_ID and run `aws sts get-caller-identity`" }
  end,
  unreachable = function(svc, region)
    return { global = true, kind = "unavailable",
      reason = "the aws CLI could not reach " .. svc.service .. " in " .. M.where(region),
      fix = "check the region (" .. svc.ref .. ", AWS_REGION or AWS_DEFAULT_REGION), the network, "
        .. "and AWS_ENDPOINT_URL if it is set" }
  end,
  no_region = function(svc)
    return { global = true, kind = "invalid", reason = "no AWS region is configured",
      fix = "write the region in the reference (" .. svc.example .. ") or set AWS_REGION / `aws configure`" }
  end,
  throttled = function(svc)
    return { global = true, kind = "unavailable", reason = svc.service .. " throttled the request",
      fix = "retry later or lower --jobs" }
  end,
}

-- Which common failure a text shows, tried in order; each entry: name, then texts (any one).
local _SIGNS = {
  { "no_credentials", "Unable to locate credentials", "NoCredentialsError" },
  { "expired", "ExpiredToken", "security token included in the request is expired", "Token has expired",
    "token has expired", sso = true },
  { "kms", "kms:Decrypt", "AWSKMS", "KMS", "ciphertext refers to a customer master key" },
  { "denied", "AccessDeniedException", "is not authorized to perform" },
  { "rejected", "UnrecognizedClientException", "InvalidClientTokenId", "InvalidSignatureException",
    "SignatureDoesNotMatch", "security token included in the request is invalid" },
  { "unreachable", "Could not connect to the endpoint URL", "Connect timeout on endpoint URL" },
  { "no_region", "You must specify a region", "NoRegionError" },
  { "throttled", "ThrottlingException", "Rate exceeded" },
}

-- Takes a common failure's name (no_credentials, expired, kms, denied, rejected, unreachable,
-- no_region, throttled), a service description and a region; returns {kind, reason, fix, global}.
function M.failure(name, svc, region)
  return assert(_COMMON[name], "no such common AWS failure")(svc, region)
end

-- Takes CLI text, a service description and a region; returns the common failure it shows
-- ({kind, reason, fix, global}) | nil.
function M.common(text, svc, region)
  text = tostring(text or "")
  local function has(s) return text:find(s, 1, true) ~= nil end
  for _, sign in ipairs(_SIGNS) do
    local hit = sign.sso and has("SSO") and has("expired")
    for i = 2, #sign do hit = hit or has(sign[i]) end
    if hit then return M.failure(sign[1], svc, region) end
  end
  return nil
end

-- Maps a failed call to {kind, reason, fix, global}: the service's own codes first, then the
-- CLI's common errors, else "<cmd> failed". text: the CLI's stderr and stdout (or a batch
-- entry's code and message). svc = { service = "SSM", noun = "the parameter", encrypted = noun
-- for KMS | nil, grant = "ssm:GetParameters", ref = "ssm://REGION/path", example = a ref with a
-- region, specific = function(code, text, region) -> failure | nil }. how = { region, code
-- (else read from text), exit, cmd = "aws ssm get-parameters", by_hand = the command to suggest }.
function M.classify(text, svc, how)
  text = tostring(text or "")
  local code = how.code or M.error_code(text)
  local f = (svc.specific and svc.specific(code, text, how.region)) or M.common(text, svc, how.region)
  if f then return f end
  local why = {}
  if code then why[#why + 1] = code end
  if how.exit then why[#why + 1] = "exit " .. tostring(how.exit) end
  return { kind = "unavailable",
    reason = how.cmd .. " failed" .. (#why > 0 and (" (" .. table.concat(why, ", ") .. ")") or ""),
    fix = "run the same `" .. (how.by_hand or how.cmd) .. "` by hand to see the full error" }
end

-- Runs one aws call through ctx.run; returns its decoded JSON output | nil, failure {kind,
-- reason, fix, global, detail = the CLI's raw stderr | nil}. `classify(r)` maps a result that
-- exited non-zero to a failure (usually through M.classify).
function M.call(ctx, argv, classify)
  local r, err, errno = ctx.run(argv, {})
  if not r then return nil, M.spawn_failure(err, errno) end
  local cut = ctx.run_failure and ctx.run_failure(r, "aws")
  if cut then return nil, cut end
  if r.timed_out then
    return nil, { kind = "timeout", reason = table.concat(argv, " ", 1, math.min(3, #argv))
        .. " did not finish in time",
      fix = "check the network and the region, or raise --timeout" }
  end
  if r.code ~= 0 or (r.signal and r.signal ~= 0) then
    local f
    local out = (r.stderr or "") .. "\n" .. (r.stdout or "")
    if r.code == 127 and not out:find("An error occurred", 1, true) then
      f = { global = true, kind = "unavailable", reason = _NOT_INSTALLED, fix = M.INSTALL_FIX }
    else
      f = classify(r)
    end
    f.detail = r.stderr
    return nil, f
  end
  local doc = ctx.json.decode(r.stdout or "")
  -- The decoder's message may quote the output (a value), so it is not passed on.
  if type(doc) ~= "table" then
    return nil, { kind = "unavailable", reason = "aws printed output that is not the expected JSON",
      fix = "check that `aws` is the AWS CLI and that AWS_DEFAULT_OUTPUT or a cli_pager does not interfere" }
  end
  return doc
end

-- Groups requests by region, in first-seen order: returns an array of
-- { region = r|nil, names = {unique names in order}, reqs = {name -> {req, ...}} }, where
-- `parse(ref)` gives the parsed reference and `name_of(parsed)` the name to ask aws for.
function M.by_region(requests, parse, name_of)
  local groups, index = {}, {}
  for _, req in ipairs(requests) do
    local p = req.parsed or assert(parse(req.ref))
    local key = p.region or ""
    local g = index[key]
    if not g then
      g = { region = p.region, names = {}, reqs = {} }
      index[key] = g
      groups[#groups + 1] = g
    end
    local name = name_of(p)
    if not g.reqs[name] then
      g.reqs[name] = {}
      g.names[#g.names + 1] = name
    end
    table.insert(g.reqs[name], req)
  end
  return groups
end

-- Runs each function of `fns` (one aws call each) concurrently through ctx.gather; returns
-- their results in order.
function M.run_all(ctx, fns)
  if #fns == 0 then return {} end
  if #fns == 1 then return { fns[1]() } end
  return (ctx.gather or require("moat.proc").gather)(fns)
end

return M
