-- What the AWS backends (ssm, awssm) share about driving the aws CLI: references' region part,
-- which region a call goes to, running a call, checking credentials, and turning the CLI's
-- error texts into failures people can act on. Not a backend.
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

-- Takes what follows "<scheme>://" in a reference; returns { region = r | nil, path = the
-- rest from its first "/" on } | nil, why. Both AWS backends write references this way.
function M.split(rest)
  local region, path = rest:match("^([^/]*)(/.*)$")
  if not region then return nil, "the path after the region starts with /" end
  if region == "" then return { path = path } end
  if not M.valid_region(region) then
    return nil, "'" .. region .. "' is not an AWS region name (like us-east-1 or eu-west-1)"
  end
  return { region = region, path = path }
end

-- Takes a backend ctx and the reference's region | nil; returns the region moat asks in (DESIGN
-- §5: the reference's, else AWS_REGION, else AWS_DEFAULT_REGION) | nil for the CLI's profile.
function M.region(ctx, region)
  if region then return region end
  for _, var in ipairs({ "AWS_REGION", "AWS_DEFAULT_REGION" }) do
    local v = ctx.env and ctx.env(var)
    if type(v) == "string" and M.valid_region(v) then return v end
  end
  return nil
end

-- Takes a region or nil; returns where a call went, for messages ("in eu-west-1").
function M.where(region)
  return region and ("in " .. region) or "in the CLI's default region (from your aws profile)"
end

-- Takes a region | nil; returns the environment a call in it gets on top of moat's (nil: none).
-- Both variables, so CLI v1 (which reads only AWS_DEFAULT_REGION) and v2 agree. Not --region:
-- argv is checked for values, and a value may well be a region's name (`-e AWS_REGION`).
function M.region_env(region)
  return region and { AWS_REGION = region, AWS_DEFAULT_REGION = region } or nil
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
-- (the first that reports an error, else the first non-empty), values concealed, quoted
-- strings elided, control characters blanked, at most `max` (default M.MAX_SAID) bytes plus "…".
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
  pick = scrub.elide(pick or "")
  if #pick > max then pick = pick:sub(1, max) .. "…" end
  return pick
end

-- Takes a failure {reason, detail = raw CLI text | nil, known = recognised?}, values to conceal
-- and the ctx (whose sanitize masks every value moat knows); returns the reason, followed for
-- an unrecognised failure by the CLI's line that says what went wrong, sanitized and elided.
function M.reason(f, values, ctx)
  if f.known or not f.detail then return f.reason end
  local text = f.detail
  if ctx and ctx.sanitize then text = ctx.sanitize(text, values) end
  local said = M.said(text, values)
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

-- Takes CLI output; returns the AWS error code of "An error occurred (Code)" | nil.
function M.error_code(text)
  return tostring(text or ""):match("An error occurred %(([%w.]+)%)")
end

-- The AWS error classes, tried in order: name, kind, the stable fragments that show it (any
-- one; a table: all of its strings), whether no other call could do better (global), and
-- fixed reason and fix texts (svc describes the service; see M.classify). No CLI wording is
-- passed on for these, so nothing a CLI quotes can reach a message.
M.CLASSES = {
  { "no_credentials", "auth", { "Unable to locate credentials", "NoCredentialsError" }, global = true,
    reason = function() return "no AWS credentials: the aws CLI found none" end,
    fix = function()
      return "run `aws configure`, set AWS_PROFILE to a configured profile, or run `aws sso login`"
    end,
  },
  { "expired", "auth", { "(ExpiredTokenException)", "(ExpiredToken)", "<Code>ExpiredToken",
      "security token included in the request is expired", { "SSO", "expired" }, "Token has expired" },
    global = true, reason = function() return "the AWS session token has expired" end,
    fix = function()
      return "run `aws sso login` (with the same AWS_PROFILE) or refresh the temporary credentials"
    end,
  },
  { "kms", "permission", { "(KMSAccessDenied", { "KMS", "AccessDenied" }, "kms:Decrypt", "(DecryptionFailure)",
      "ciphertext refers to a customer master key" },
    reason = function(svc) return "KMS refused to decrypt " .. (svc.encrypted or svc.noun) end,
    fix = function(svc)
      return "grant kms:Decrypt on " .. svc.noun .. "'s KMS key to this identity (IAM policy or key policy)"
    end,
  },
  { "denied", "permission", { "(AccessDeniedException)", "(AccessDenied)", "<Code>AccessDenied",
      "is not authorized to perform" },
    reason = function(svc, region) return "AWS denied access to " .. svc.noun .. " " .. M.where(region) end,
    fix = function(svc)
      return "grant " .. svc.grant .. " on " .. svc.noun .. " to this identity in its IAM policy"
        .. " (see `aws sts get-caller-identity` for which identity that is)"
    end,
  },
  { "rejected", "auth", { "(InvalidSignatureException)", "(UnrecognizedClientException)", "(InvalidClientTokenId)",
      "(SignatureDoesNotMatch)", "<Code>InvalidClientTokenId", "<Code>SignatureDoesNotMatch",
      "security token included in the request is invalid" }, global = true,
    reason = function() return "AWS rejected the credentials" end,
    fix = function()
      return "check AWS_PROFILE / AWS_ACCESS_KEY_ID / the secret key and run `aws sts get-caller-identity`"
    end,
  },
  { "unreachable", "network", { "Could not connect to the endpoint URL", "Connect timeout on endpoint URL",
      "Read timeout on endpoint URL", "EndpointConnectionError" }, global = true,
    reason = function(svc, region) return "the aws CLI could not reach " .. svc.service .. " " .. M.where(region) end,
    fix = function(svc)
      return "check the region (" .. svc.ref .. ", AWS_REGION or AWS_DEFAULT_REGION), the network, "
        .. "and AWS_ENDPOINT_URL if it is set"
    end,
  },
  { "no_region", "invalid", { "You must specify a region", "NoRegionError" }, global = true,
    reason = function() return "no AWS region is configured" end,
    fix = function(svc)
      return "write the region in the reference (" .. svc.example .. ") or set AWS_REGION / `aws configure`"
    end,
  },
  { "throttled", "throttled", { "(ThrottlingException)", "(Throttling)", "(TooManyRequestsException)",
      "Rate exceeded" }, global = true,
    reason = function(svc) return svc.service .. " throttled the request" end,
    fix = function() return "retry later or lower --jobs" end },
}

local function _has(text, frag)
  if type(frag) == "string" then return text:find(frag, 1, true) ~= nil end
  for _, f in ipairs(frag) do
    if not text:find(f, 1, true) then return false end
  end
  return true
end

-- Takes a class name (see M.CLASSES), a service description and a region; returns the failure
-- {kind, reason, fix, global, class, known = true}.
function M.failure(name, svc, region)
  for _, c in ipairs(M.CLASSES) do
    if c[1] == name then
      return { kind = c[2], class = name, known = true, global = c.global or nil,
        reason = c.reason(svc, region), fix = c.fix(svc, region) }
    end
  end
  error("no such AWS failure class: " .. tostring(name), 2)
end

-- Takes CLI text, a service description and a region; returns the failure of the first class
-- whose fragment it shows | nil.
function M.common(text, svc, region)
  text = tostring(text or "")
  for _, c in ipairs(M.CLASSES) do
    for _, frag in ipairs(c[3]) do
      if _has(text, frag) then return M.failure(c[1], svc, region) end
    end
  end
  return nil
end

-- Maps a failed call to {kind, reason, fix, global, class, known}: the service's own classes
-- first, then the common ones, else backend_error "<cmd> failed". text: the CLI's stderr and
-- stdout (or a batch entry's code and message). svc = { service = "SSM", noun = "the
-- parameter", encrypted = noun for KMS | nil, grant = "ssm:GetParameter", ref =
-- "ssm://REGION/path", example = a ref with a region, specific = function(code, text, region)
-- -> failure | nil }. how = { region, code (else read from text), exit, cmd, by_hand }.
function M.classify(text, svc, how)
  text = tostring(text or "")
  local code = how.code or M.error_code(text)
  local f = svc.specific and svc.specific(code, text, how.region)
  if f then
    f.known = true
    return f
  end
  f = M.common(text, svc, how.region)
  if f then return f end
  local why = {}
  if code and code:match("^[%w.]+$") then why[#why + 1] = code end
  if how.exit then why[#why + 1] = "exit " .. tostring(how.exit) end
  return { kind = "backend_error",
    reason = how.cmd .. " failed" .. (#why > 0 and (" (" .. table.concat(why, ", ") .. ")") or ""),
    fix = "run the same `" .. (how.by_hand or how.cmd) .. "` by hand to see the full error" }
end

-- Runs one aws call in `region` (nil: the CLI's profile decides) through ctx.run; returns its
-- decoded JSON output | nil, failure {kind, reason, fix, global, class, known, detail = the
-- CLI's raw stderr | nil}. `classify(r)` maps a result that exited non-zero to a failure
-- (usually through M.classify).
function M.call(ctx, argv, classify, region)
  local r, err, errno = ctx.run(argv, { env = M.region_env(region) })
  if not r then return nil, M.spawn_failure(err, errno) end
  local cut = ctx.run_failure and ctx.run_failure(r, "aws")
  if cut then return nil, cut end
  if r.timed_out then
    return nil, { kind = "timeout", reason = table.concat(argv, " ", 1, math.min(3, #argv))
        .. " did not finish in time", fix = "check the network and the region, or raise --timeout" }
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
    return nil, { kind = "backend_error", reason = "aws printed output that is not the expected JSON",
      fix = "check that `aws` is the AWS CLI and that AWS_DEFAULT_OUTPUT or a cli_pager does not interfere" }
  end
  return doc
end

-- Groups requests by the region moat asks in (M.region), in first-seen order: returns an array
-- of { region = r|nil, names = {unique names in order}, reqs = {name -> {req, ...}} }, where
-- `parse(ref)` gives the parsed reference and `name_of(parsed)` the name to ask aws for.
function M.by_region(ctx, requests, parse, name_of)
  local groups, index = {}, {}
  for _, req in ipairs(requests) do
    local p = req.parsed or assert(parse(req.ref))
    local region = M.region(ctx, p.region)
    local g = index[region or ""]
    if not g then
      g = { region = region, names = {}, reqs = {} }
      index[region or ""] = g
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

-- The identity check's side of the CLI's errors.
local _STS = { service = "STS", noun = "the caller identity", grant = "sts:GetCallerIdentity",
  ref = "REGION in the reference", example = "ssm://us-east-1/path" }

-- Takes a backend ctx and optional requests (with parsed references holding `region`); runs
-- `aws sts get-caller-identity` once for each region moat would ask in (the CLI's profile when
-- none), concurrently; returns true | nil, reason, fix for the first that fails.
function M.check(ctx, requests)
  local regions, seen = {}, {}
  for _, req in ipairs(requests or { {} }) do
    local region = M.region(ctx, req.parsed and req.parsed.region)
    if not seen[region or ""] then
      seen[region or ""] = true
      regions[#regions + 1] = region or false
    end
  end
  local fns = {}
  for i, region in ipairs(regions) do
    fns[i] = function()
      local argv = { "aws", "sts", "get-caller-identity", "--output", "json" }
      local doc, f = M.call(ctx, argv, function(r)
        return M.classify((r.stderr or "") .. "\n" .. (r.stdout or ""), _STS,
          { region = region or nil, exit = r.code, cmd = "aws sts get-caller-identity" })
      end, region or nil)
      return doc and true or f
    end
  end
  for _, res in ipairs(M.run_all(ctx, fns)) do
    if res ~= true then return nil, M.reason(res, {}, ctx), res.fix end
  end
  return true
end

return M
