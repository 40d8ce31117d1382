-- AWS SSM Parameter Store through the aws CLI: ssm:///path or ssm://region/path[:version|:label].
local M = {
  scheme = "ssm",
  description = "AWS SSM Parameter Store through the aws CLI (aws ssm get-parameters)",
}

-- The API takes at most 10 names per GetParameters call.
M.batch = 10

local awscli = require("moat.awscli")

local _MAX_NAME = 2048

-- The parameter-store side of the CLI's errors, for awscli.classify.
local _SVC = {
  service = "SSM", noun = "the parameter", encrypted = "the SecureString parameter",
  grant = "ssm:GetParameter", ref = "ssm://REGION/path", example = "ssm://us-east-1/path",
  specific = function(_, text, region)
    if text:find("(ParameterNotFound)", 1, true) or text:find("(ParameterVersionNotFound)", 1, true)
      or text:find("<Code>ParameterNotFound", 1, true) then
      return M.not_found(region)
    end
  end,
}

-- Takes a region | nil; returns the failure for a parameter that does not exist there.
function M.not_found(region)
  return { kind = "not_found", known = true, reason = "the parameter does not exist " .. awscli.where(region),
    fix = "check the name, version or label and the region: `aws ssm describe-parameters`" }
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
  local where, why = awscli.split(rest)
  if not where then return nil, "an SSM reference looks like ssm:///path or ssm://region/path: " .. why end
  local region, name = where.region, where.path
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

local function _classify(region, cmd)
  return function(r)
    return awscli.classify((r.stderr or "") .. "\n" .. (r.stdout or ""), _SVC, { region = region, exit = r.code,
      cmd = "aws ssm " .. cmd, by_hand = "aws ssm " .. cmd .. (cmd == "get-parameters" and " --names …"
        or " --name …") .. " --with-decryption" })
  end
end

-- Asks for each name with its own `get-parameter` call, concurrently: what an identity granted
-- only ssm:GetParameter (the upstream guide's policy) can do. Fills out.values / out.fails.
local function _one_by_one(ctx, region, names, out)
  ctx.log(("GetParameters was denied %s; asking for %d name%s one by one with get-parameter")
    :format(awscli.where(region), #names, #names == 1 and "" or "s"))
  local fns = {}
  for i, n in ipairs(names) do
    fns[i] = function()
      local argv = { "aws", "ssm", "get-parameter", "--name", n, "--with-decryption", "--output", "json" }
      local doc, f = awscli.call(ctx, argv, _classify(region, "get-parameter"), region)
      local p = doc and doc.Parameter
      if type(p) == "table" and type(p.Value) == "string" then return p.Value end
      return f or { kind = "backend_error", reason = "aws ssm get-parameter returned no value for it",
        fix = "run `aws ssm get-parameter --with-decryption --name …` by hand to see why" }
    end
  end
  for i, res in ipairs(awscli.run_all(ctx, fns)) do
    if type(res) == "string" then out.values[names[i]] = res else out.fails[names[i]] = res end
  end
  return out
end

-- Files one get-parameters answer `doc` for `names` into out.values / out.fails.
local function _file(doc, names, region, out)
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
    if type(n) == "string" and want[n] and out.values[n] == nil then out.fails[n] = M.not_found(region) end
  end
  for _, n in ipairs(names) do
    if out.values[n] == nil and not out.fails[n] then
      out.fails[n] = { kind = "backend_error", reason = "aws ssm get-parameters returned no value for it",
        fix = "run `aws ssm get-parameter --with-decryption --name …` by hand to see why" }
    end
  end
  return out
end

-- Runs one get-parameters call (per-name get-parameter calls when GetParameters is denied);
-- returns { values = { name = value }, fails = { name = failure } }.
local function _call(ctx, region, names)
  local argv = { "aws", "ssm", "get-parameters", "--names" }
  for _, n in ipairs(names) do argv[#argv + 1] = n end
  table.move({ "--with-decryption", "--output", "json" }, 1, 3, #argv + 1, argv)
  local out = { values = {}, fails = {} }
  local doc, f = awscli.call(ctx, argv, _classify(region, "get-parameters"), region)
  if doc then return _file(doc, names, region, out) end
  if f.class == "denied" then return _one_by_one(ctx, region, names, out) end
  for _, n in ipairs(names) do out.fails[n] = f end
  return out
end

-- Optional readiness check: `aws sts get-caller-identity` once per region in use (true | nil,
-- reason, fix); `requests`, when given, name the regions.
M.check = awscli.check

-- Resolves requests ({name, ref, parsed}) with one aws call per ≤ 10 names per region, all
-- calls concurrent; reports each through ctx.ok / ctx.fail.
function M.resolve(requests, ctx)
  local jobs = {}
  for _, g in ipairs(awscli.by_region(ctx, requests, M.parse, function(p) return p.name end)) do
    local paths = {}
    for _, name in ipairs(g.names) do
      local req = g.reqs[name][1]
      paths[name] = (req.parsed or assert(M.parse(req.ref))).path
    end
    for _, c in ipairs(_chunks(g.names, paths)) do
      jobs[#jobs + 1] = { group = g, names = c.names }
    end
  end
  local fns = {}
  for i, j in ipairs(jobs) do
    fns[i] = function() return _call(ctx, j.group.region, j.names) end
  end
  local results = awscli.run_all(ctx, fns)

  -- Failures are reported last so their CLI text can be scrubbed of every value fetched.
  local values = {}
  for _, res in ipairs(results) do
    for _, v in pairs(res.values) do values[#values + 1] = v end
  end
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
        local reason = awscli.reason(f, values, ctx)
        for _, req in ipairs(j.group.reqs[n]) do
          ctx.fail(req, { kind = f.kind, reason = reason, fix = f.fix })
        end
      end
    end
  end
end

return M
