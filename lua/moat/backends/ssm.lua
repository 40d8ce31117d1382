-- AWS SSM Parameter Store through the aws CLI: ssm:///path or ssm://region/path[:version|:label].
local M = {
  scheme = "ssm",
  description = "AWS SSM Parameter Store through the aws CLI (aws ssm get-parameters)",
}

-- The API takes at most 10 names per GetParameters call.
M.batch = 10

local _MAX_NAME = 2048
local _MAX_REASON = 400

local _INSTALL_FIX = "install the AWS CLI (https://aws.amazon.com/cli/ or your package manager) "
  .. "and make sure `aws` is on PATH"

local function _valid_region(region)
  if #region > 32 then return false end
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

local function _valid_selector(sel)
  if sel:match("^%d+$") then return #sel <= 20 end
  -- Labels: letters, digits, '.', '-', '_'; not starting with a digit or '-'.
  return #sel <= 100 and sel:match("^[A-Za-z_.][A-Za-z0-9_.%-]*$") ~= nil
end

-- Parses "ssm:///path[:sel]" or "ssm://region/path[:sel]"; returns
-- { region = string|nil, name = "/path[:sel]", path = "/path", selector = ":sel"|nil } or nil, why.
function M.parse(ref)
  if type(ref) ~= "string" then return nil, "the reference is not a string" end
  if ref:find("[%c%s]") then
    return nil, "the reference contains whitespace or control characters"
  end
  local rest = ref:match("^ssm://(.*)$")
  if not rest then return nil, "an SSM reference looks like ssm:///path or ssm://region/path" end
  local region, name = rest:match("^([^/]*)(/.*)$")
  if not region then
    return nil, "an SSM reference looks like ssm:///path or ssm://region/path (the path starts with /)"
  end
  if region == "" then
    region = nil
  elseif not _valid_region(region) then
    return nil, "'" .. region .. "' is not an AWS region name (like us-east-1)"
  end
  if #name > _MAX_NAME then
    return nil, "the parameter name is longer than " .. _MAX_NAME .. " characters"
  end
  local path, sel = name:match("^([^:]*):([^:]*)$")
  if not path then
    if name:find(":", 1, true) then return nil, "the parameter name has more than one ':'" end
    path = name
  end
  if path == "/" or not path:match("^/[A-Za-z0-9_.%-/]+$") then
    return nil, "the parameter path must start with / and hold only letters, digits and _ . - /"
  end
  if sel and not _valid_selector(sel) then
    return nil, "':" .. sel .. "' is not a version number or label"
  end
  return { region = region, name = name, path = path, selector = sel and (":" .. sel) or nil }
end

-- Keeps the one line of CLI output that says what went wrong, without control characters and
-- capped, and with every value fetched in this resolve concealed.
local function _sanitize(text, values)
  local pick
  for line in (text or ""):gmatch("[^\r\n]+") do
    line = line:gsub("%c", " "):match("^%s*(.-)%s*$")
    if line ~= "" then
      if line:find("An error occurred", 1, true) or line:find("Unable to locate", 1, true)
        or line:find("Could not connect", 1, true) or line:find("[Ee]rror") then
        pick = line
        break
      end
      pick = pick or line
    end
  end
  pick = pick or ""
  for _, v in ipairs(values) do
    if #v > 0 then
      local i = 1
      while true do
        local s, e = pick:find(v, i, true)
        if not s then break end
        pick = pick:sub(1, s - 1) .. "<concealed by moat>" .. pick:sub(e + 1)
        i = s + #"<concealed by moat>"
      end
    end
  end
  if #pick > _MAX_REASON then pick = pick:sub(1, _MAX_REASON) .. "…" end
  return pick
end

local function _where(region)
  return region and ("region " .. region) or "the CLI's default region"
end

-- Maps a failed aws call to { kind, reason, fix } from its stderr.
local function _classify(r, region)
  local err = (r.stderr or "") .. "\n" .. (r.stdout or "")
  local function has(s) return err:find(s, 1, true) ~= nil end
  if r.code == 127 and not has("An error occurred") then
    return { kind = "unavailable", reason = "the aws CLI is not installed or not on PATH", fix = _INSTALL_FIX }
  end
  if has("Unable to locate credentials") or has("NoCredentialsError") then
    return { kind = "auth", reason = "the aws CLI found no AWS credentials",
      fix = "run `aws configure`, set AWS_PROFILE to a configured profile, or run `aws sso login`" }
  end
  if has("ExpiredToken") or has("security token included in the request is expired")
    or has("Token has expired") or has("token has expired")
    or (has("SSO") and has("expired")) then
    return { kind = "auth", reason = "the AWS session token has expired",
      fix = "run `aws sso login` (with the same AWS_PROFILE) or refresh the temporary credentials" }
  end
  if has("kms:Decrypt") or has("AWSKMS") or has("KMS") or has("ciphertext refers to a customer master key") then
    return { kind = "auth", reason = "KMS refused to decrypt the SecureString parameter",
      fix = "grant kms:Decrypt on the parameter's KMS key to this identity (IAM policy or key policy)" }
  end
  if has("AccessDeniedException") or has("is not authorized to perform") then
    return { kind = "auth", reason = "AWS denied access to the parameter",
      fix = "grant ssm:GetParameters on the parameter to this identity (see `aws sts get-caller-identity`)" }
  end
  if has("UnrecognizedClientException") or has("InvalidClientTokenId")
    or has("SignatureDoesNotMatch") or has("security token included in the request is invalid") then
    return { kind = "auth", reason = "AWS rejected the credentials",
      fix = "check AWS_PROFILE / AWS_ACCESS_KEY_ID and run `aws sts get-caller-identity`" }
  end
  if has("ParameterNotFound") or has("ParameterVersionNotFound") then
    return { kind = "not_found", reason = "the parameter does not exist in " .. _where(region),
      fix = "check the name, version and region: `aws ssm describe-parameters`" }
  end
  if has("Could not connect to the endpoint URL") or has("Connect timeout on endpoint URL") then
    return { kind = "unavailable", reason = "the aws CLI could not reach SSM in " .. _where(region),
      fix = "check the region (ssm://REGION/path, AWS_REGION or AWS_DEFAULT_REGION), the network, "
        .. "and AWS_ENDPOINT_URL if it is set" }
  end
  if has("You must specify a region") or has("NoRegionError") then
    return { kind = "invalid", reason = "no AWS region is configured",
      fix = "write the region in the reference (ssm://us-east-1/path) or set AWS_REGION / `aws configure`" }
  end
  if has("ThrottlingException") or has("Rate exceeded") then
    return { kind = "unavailable", reason = "SSM throttled the request",
      fix = "retry later or lower --jobs" }
  end
  return { kind = "unavailable", reason = "aws ssm get-parameters failed (exit " .. tostring(r.code) .. ")",
    fix = "run the same `aws ssm get-parameters --names …` by hand to see the full error" }
end

-- Splits one region's names into as few calls of at most M.batch names as possible, none
-- holding two names of the same parameter (so a response entry without a Selector field names
-- one request). Each parameter's names go to the least-filled calls, which keeps every call
-- within M.batch: ⌈n/10⌉ calls, or more only when a parameter is asked for at more versions.
local function _chunks(names, paths)
  local groups, order = {}, {}
  for _, n in ipairs(names) do
    local p = paths[n]
    if not groups[p] then
      groups[p] = { at = #order + 1 }
      order[#order + 1] = p
    end
    table.insert(groups[p], n)
  end
  local k = math.ceil(#names / M.batch)
  for _, p in ipairs(order) do k = math.max(k, #groups[p]) end
  table.sort(order, function(a, b)
    local ga, gb = groups[a], groups[b]
    if #ga ~= #gb then return #ga > #gb end
    return ga.at < gb.at
  end)
  local chunks = {}
  for i = 1, k do chunks[i] = { names = {}, index = i } end
  for _, p in ipairs(order) do
    local free = {}
    for i = 1, k do free[i] = chunks[i] end
    table.sort(free, function(a, b)
      if #a.names ~= #b.names then return #a.names < #b.names end
      return a.index < b.index
    end)
    for j, n in ipairs(groups[p]) do table.insert(free[j].names, n) end
  end
  return chunks
end

local function _spawn_failure(msg, errno)
  msg = tostring(msg or "")
  if errno == 2 or msg:find("No such file", 1, true) or msg:find("not found", 1, true)
    or msg:find("ENOENT", 1, true) then
    return { kind = "unavailable", reason = "the aws CLI is not installed or not on PATH", fix = _INSTALL_FIX }
  end
  return { kind = "unavailable", reason = "could not start the aws CLI: " .. _sanitize(msg, {}),
    fix = _INSTALL_FIX }
end

-- Runs one get-parameters call; returns { values = { name = value }, fails = { name = failure } }.
local function _call(ctx, region, names)
  local argv = { "aws", "ssm", "get-parameters", "--names" }
  for _, n in ipairs(names) do argv[#argv + 1] = n end
  argv[#argv + 1] = "--with-decryption"
  argv[#argv + 1] = "--output"
  argv[#argv + 1] = "json"
  if region then
    argv[#argv + 1] = "--region"
    argv[#argv + 1] = region
  end
  local out = { values = {}, fails = {} }
  local function fail_all(f)
    for _, n in ipairs(names) do out.fails[n] = f end
    return out
  end
  local r, err, errno = ctx.run(argv, {})
  if not r then return fail_all(_spawn_failure(err, errno)) end
  local cut = ctx.run_failure and ctx.run_failure(r, "aws")
  if cut then return fail_all(cut) end
  if r.timed_out then
    return fail_all({ kind = "timeout", reason = "aws ssm get-parameters did not finish in time",
      fix = "check the network and the region, or raise --timeout" })
  end
  if r.code ~= 0 or (r.signal and r.signal ~= 0) then
    local f = _classify(r, region)
    f.detail = r.stderr
    return fail_all(f)
  end
  local doc = ctx.json.decode(r.stdout or "")
  -- The decoder's message may quote the output, so it is not passed on.
  if type(doc) ~= "table" then
    return fail_all({ kind = "unavailable", reason = "aws printed output that is not the expected JSON",
      fix = "check that `aws` is the AWS CLI and that AWS_DEFAULT_OUTPUT or a cli_pager does not interfere" })
  end
  local want = {}
  for _, n in ipairs(names) do want[n] = true end
  local by_path = {}
  for _, n in ipairs(names) do by_path[n:match("^([^:]*)")] = n end
  for _, p in ipairs(type(doc.Parameters) == "table" and doc.Parameters or {}) do
    if type(p) == "table" and type(p.Name) == "string" then
      local key = p.Name .. (type(p.Selector) == "string" and p.Selector or "")
      local n = want[key] and key or (type(p.Selector) ~= "string" and by_path[p.Name]) or nil
      if n and type(p.Value) == "string" then
        out.values[n] = p.Value
      end
    end
  end
  for _, n in ipairs(type(doc.InvalidParameters) == "table" and doc.InvalidParameters or {}) do
    if type(n) == "string" and want[n] and out.values[n] == nil then
      out.fails[n] = { kind = "not_found", reason = "the parameter does not exist in " .. _where(region),
        fix = "check the name, version or label and the region: `aws ssm describe-parameters`" }
    end
  end
  for _, n in ipairs(names) do
    if out.values[n] == nil and not out.fails[n] then
      out.fails[n] = { kind = "unavailable", reason = "aws ssm get-parameters returned no value for it",
        fix = "run `aws ssm get-parameter --with-decryption --name …` by hand to see why" }
    end
  end
  return out
end

-- Optional readiness check: true | nil, reason, fix.
function M.check(ctx)
  local r, err, errno = ctx.run({ "aws", "--version" }, {})
  if not r then
    local f = _spawn_failure(err, errno)
    return nil, f.reason, f.fix
  end
  if r.code ~= 0 then
    return nil, "`aws --version` failed (exit " .. tostring(r.code) .. ")", _INSTALL_FIX
  end
  return true
end

-- Resolves requests ({name, ref, parsed}) with one aws call per ≤ 10 names per region, all
-- calls concurrent; reports each through ctx.ok / ctx.fail.
function M.resolve(requests, ctx)
  local regions, order = {}, {}
  for _, req in ipairs(requests) do
    local parsed = req.parsed or assert(M.parse(req.ref))
    local key = parsed.region or ""
    local g = regions[key]
    if not g then
      g = { region = parsed.region, names = {}, reqs = {}, paths = {} }
      regions[key] = g
      order[#order + 1] = key
    end
    if not g.reqs[parsed.name] then
      g.reqs[parsed.name] = {}
      g.names[#g.names + 1] = parsed.name
      g.paths[parsed.name] = parsed.path
    end
    table.insert(g.reqs[parsed.name], req)
  end

  local jobs = {}
  for _, key in ipairs(order) do
    local g = regions[key]
    for _, c in ipairs(_chunks(g.names, g.paths)) do
      jobs[#jobs + 1] = { group = g, names = c.names }
    end
  end
  local results
  if #jobs == 1 then
    results = { _call(ctx, jobs[1].group.region, jobs[1].names) }
  elseif #jobs > 1 then
    local fns = {}
    for i, j in ipairs(jobs) do
      fns[i] = function() return _call(ctx, j.group.region, j.names) end
    end
    results = (ctx.gather or require("moat.proc").gather)(fns)
  else
    results = {}
  end

  -- Failures are reported last so their CLI text can be scrubbed of every value fetched.
  local values = {}
  for _, res in ipairs(results) do
    for _, v in pairs(res.values) do values[#values + 1] = v end
  end
  table.sort(values, function(a, b) return #a > #b end)
  for i, j in ipairs(jobs) do
    local res = results[i]
    for _, n in ipairs(j.names) do
      local v = res.values[n]
      if v ~= nil then
        for _, req in ipairs(j.group.reqs[n]) do ctx.ok(req, v) end
      end
    end
  end
  for i, j in ipairs(jobs) do
    local res = results[i]
    for _, n in ipairs(j.names) do
      local f = res.fails[n]
      if f then
        local reason = f.reason
        if f.detail then
          local said = _sanitize(f.detail, values)
          if said ~= "" then reason = reason .. ": " .. said end
        end
        for _, req in ipairs(j.group.reqs[n]) do
          ctx.fail(req, { kind = f.kind, reason = reason, fix = f.fix })
        end
      end
    end
  end
end

return M
