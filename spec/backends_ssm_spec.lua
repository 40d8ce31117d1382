-- Unit tests of the ssm backend against a scripted ctx (no processes); the moto suite is
-- spec/integration_ssm_spec.lua.
local json = require("moat.c.json")
local ssm = require("moat.backends.ssm")

-- The call as the CLI sees it: argv, then the region moat put in its environment as
-- --region R. The region itself is never in argv (a value may be a region's name).
local function as_called(argv, opts)
  for _, a in ipairs(argv) do assert.are_not.equal("--region", a) end
  local env = opts.env or {}
  assert.equal(env.AWS_REGION, env.AWS_DEFAULT_REGION)
  local out = table.move(argv, 1, #argv, 1, {})
  if env.AWS_DEFAULT_REGION then
    out[#out + 1] = "--region"
    out[#out + 1] = env.AWS_DEFAULT_REGION
  end
  return out
end

-- A ctx following DESIGN §5 whose run() answers from `respond(argv)` (argv as called).
local function scripted(respond)
  local ctx = { calls = {}, oks = {}, fails = {}, json = json }
  function ctx.run(argv, opts)
    assert.is_table(opts)
    local called = as_called(argv, opts)
    ctx.calls[#ctx.calls + 1] = called
    return respond(called)
  end
  function ctx.ok(req, value) ctx.oks[req.name] = value end
  function ctx.fail(req, f) ctx.fails[req.name] = f end
  ctx.environ = {}
  function ctx.env(name) return ctx.environ[name] end
  function ctx.sanitize(text) return text end
  function ctx.log() end
  return ctx
end

local function names_of(argv)
  local out, on = {}, false
  for _, a in ipairs(argv) do
    if a == "--names" then on = true
    elseif a:sub(1, 2) == "--" then on = false
    elseif on then out[#out + 1] = a end
  end
  return out
end

local function region_of(argv)
  for i, a in ipairs(argv) do if a == "--region" then return argv[i + 1] end end
end

-- Answers like moto: Name without selector, no Selector field; unknown names are invalid.
local function store(params)
  return function(argv)
    local doc = { Parameters = json.array({}), InvalidParameters = json.array({}) }
    local region = region_of(argv) or "default"
    for _, n in ipairs(names_of(argv)) do
      local v = params[region .. ":" .. n]
      if v then
        table.insert(doc.Parameters, { Name = n:match("^([^:]*)"), Value = v, Type = "SecureString" })
      else
        table.insert(doc.InvalidParameters, n)
      end
    end
    return { code = 0, stdout = assert(json.encode(doc)), stderr = "" }
  end
end

local function requests(list)
  local out = {}
  for i, ref in ipairs(list) do
    out[i] = { name = "V" .. i, ref = ref, parsed = assert(ssm.parse(ref)) }
  end
  return out
end

local saved_proc
local gathered
setup(function()
  saved_proc = package.loaded["moat.proc"]
  -- The scripted run() never yields, so running the sub-tasks in turn is a faithful gather.
  package.loaded["moat.proc"] = {
    gather = function(fns)
      gathered = (gathered or 0) + #fns
      local res = {}
      for i, fn in ipairs(fns) do res[i] = fn() end
      return res
    end,
  }
end)
teardown(function() package.loaded["moat.proc"] = saved_proc end)

describe("ssm.parse", function()
  it("accepts the default-region and region forms with selectors", function()
    assert.same({ name = "/app/db", path = "/app/db" }, ssm.parse("ssm:///app/db"))
    assert.same({ region = "eu-west-1", name = "/a/b.c-d_e", path = "/a/b.c-d_e" },
      ssm.parse("ssm://eu-west-1/a/b.c-d_e"))
    assert.same({ region = "us-gov-west-1", name = "/p:3", path = "/p", selector = ":3" },
      ssm.parse("ssm://us-gov-west-1/p:3"))
    assert.same({ name = "/p:prod", path = "/p", selector = ":prod" }, ssm.parse("ssm:///p:prod"))
    assert.is_table(ssm.parse("ssm:///" .. string.rep("a", 2047)))
  end)

  it("refuses malformed references with a reason", function()
    local bad = {
      "op://v/i/f", "ssm://", "ssm:/x", "ssm://us-east-1", "ssm://us-east-1x/p", "ssm://US-EAST-1/p",
      "ssm://useast1/p", "ssm://-us-east-1/p", "ssm:///", "ssm:///a b", "ssm:///a\nb", "ssm:///a\0b",
      "ssm:///a\tb", "ssm:///a:1:2", "ssm:///a:", "ssm:///a:1x", "ssm:///a:b c", "ssm:///a$b",
      "ssm:///a;rm", "ssm:///é", "ssm://us-east-1/-x:-1", "ssm:///" .. string.rep("a", 2048),
    }
    for _, ref in ipairs(bad) do
      local p, why = ssm.parse(ref)
      assert.is_nil(p, ref)
      assert.is_string(why, ref)
      assert.truthy(#why > 10, ref)
    end
    assert.is_nil((ssm.parse(42)))
  end)
end)

describe("ssm.resolve batching", function()
  before_each(function() gathered = 0 end)

  it("groups by region, ≤ 10 names a call, each name once", function()
    local params, refs = {}, {}
    for i = 1, 23 do
      params["default:/p/" .. i] = "v" .. i
      refs[#refs + 1] = "ssm:///p/" .. i
    end
    for i = 1, 3 do
      params["eu-west-1:/e/" .. i] = "e" .. i
      refs[#refs + 1] = "ssm://eu-west-1/e/" .. i
    end
    refs[#refs + 1] = "ssm:///p/1" -- the same parameter under a second name
    local ctx = scripted(store(params))
    ssm.resolve(requests(refs), ctx)
    assert.equal(4, #ctx.calls)
    assert.equal(4, gathered)
    local per_region, total = {}, 0
    for _, argv in ipairs(ctx.calls) do
      assert.same({ "aws", "ssm", "get-parameters", "--names" }, { table.unpack(argv, 1, 4) })
      local n = #names_of(argv)
      assert.truthy(n >= 1 and n <= 10)
      total = total + n
      local r = region_of(argv) or "default"
      per_region[r] = (per_region[r] or 0) + 1
      local tail = table.concat(argv, " ", 5 + n)
      if r == "default" then
        assert.equal("--with-decryption --output json", tail)
      else
        assert.equal("--with-decryption --output json --region eu-west-1", tail)
      end
    end
    assert.same({ default = 3, ["eu-west-1"] = 1 }, per_region)
    assert.equal(26, total)
    for i = 1, 23 do assert.equal("v" .. i, ctx.oks["V" .. i]) end
    for i = 1, 3 do assert.equal("e" .. i, ctx.oks["V" .. (23 + i)]) end
    assert.equal("v1", ctx.oks.V27)
    assert.same({}, ctx.fails)
  end)

  it("makes no call for no requests and needs no gather for one call", function()
    local ctx = scripted(store({ ["default:/x"] = "1" }))
    ssm.resolve({}, ctx)
    assert.equal(0, #ctx.calls)
    ssm.resolve(requests({ "ssm:///x" }), ctx)
    assert.equal(1, #ctx.calls)
    assert.equal(0, gathered)
    assert.equal("1", ctx.oks.V1)
  end)

  it("fails exactly the InvalidParameters names as not found", function()
    local ctx = scripted(store({ ["default:/a"] = "A", ["default:/c"] = "C" }))
    ssm.resolve(requests({ "ssm:///a", "ssm:///b", "ssm:///c", "ssm:///d:4" }), ctx)
    assert.same({ V1 = "A", V3 = "C" }, ctx.oks)
    assert.equal("not_found", ctx.fails.V2.kind)
    assert.equal("not_found", ctx.fails.V4.kind)
    assert.is_string(ctx.fails.V2.fix)
    assert.is_nil(ctx.fails.V1)
  end)

  it("tells versions of one parameter apart with and without a Selector field", function()
    local versions = { ["/a"] = "latest", ["/a:1"] = "one", ["/a:prod"] = "prod" }
    for _, with_selector in ipairs({ false, true }) do
      local ctx = scripted(function(argv)
        local doc = { Parameters = json.array({}), InvalidParameters = json.array({}) }
        for _, n in ipairs(names_of(argv)) do
          local path, sel = n:match("^([^:]*)(.*)$")
          table.insert(doc.Parameters, {
            Name = path, Value = versions[n], Selector = (with_selector and sel ~= "") and sel or nil,
          })
        end
        return { code = 0, stdout = json.encode(doc), stderr = "" }
      end)
      ssm.resolve(requests({ "ssm:///a", "ssm:///a:1", "ssm:///a:prod", "ssm:///b" }), ctx)
      assert.same({ V1 = "latest", V2 = "one", V3 = "prod" }, {
        V1 = ctx.oks.V1, V2 = ctx.oks.V2, V3 = ctx.oks.V3 })
      for _, argv in ipairs(ctx.calls) do
        local seen = {}
        for _, n in ipairs(names_of(argv)) do
          local path = n:match("^([^:]*)")
          assert.is_nil(seen[path])
          seen[path] = true
        end
      end
    end
  end)

  it("spreads the versions of one parameter over calls and still fills calls to 10", function()
    local function run(versions, distinct)
      local refs = {}
      for i = 1, distinct do refs[#refs + 1] = "ssm:///d/" .. i end
      refs[#refs + 1] = "ssm:///v"
      for i = 1, versions - 1 do refs[#refs + 1] = "ssm:///v:" .. i end
      local ctx = scripted(store({}))
      ssm.resolve(requests(refs), ctx)
      local total = 0
      for _, argv in ipairs(ctx.calls) do
        local names, seen = names_of(argv), {}
        assert.truthy(#names <= 10)
        total = total + #names
        for _, n in ipairs(names) do
          local path = n:match("^([^:]*)")
          assert.is_nil(seen[path])
          seen[path] = true
        end
      end
      assert.equal(#refs, total)
      return #ctx.calls
    end
    assert.equal(3, run(3, 27))
    assert.equal(4, run(4, 25))
    assert.equal(5, run(5, 1))
    assert.equal(1, run(1, 9))
  end)

  it("keeps values byte-exact", function()
    local odd = {
      "  lead and trail  ", "line1\nline2\n", "a=b=c", [["double" 'single']], "ünïcødé ✓",
      "\ttab", "\n", "back\\slash", string.rep("x", 100 * 1024),
    }
    local params, refs = {}, {}
    for i, v in ipairs(odd) do
      params["default:/o/" .. i] = v
      refs[i] = "ssm:///o/" .. i
    end
    local ctx = scripted(store(params))
    ssm.resolve(requests(refs), ctx)
    for i, v in ipairs(odd) do assert.equal(v, ctx.oks["V" .. i]) end
  end)
end)

describe("ssm.resolve errors", function()
  local secret = "s3cr3t-value-XYZ"

  -- One call returns the secret; the second fails with `stderr` that echoes it.
  local function failing(code, stderr)
    return scripted(function(argv)
      if region_of(argv) == "eu-west-1" then
        return { code = 0, stderr = "", stdout = json.encode({
          Parameters = json.array({ { Name = "/ok", Value = secret } }), InvalidParameters = json.array({}) }) }
      end
      return { code = code, stdout = "", stderr = stderr:gsub("SECRET", secret) }
    end)
  end

  local cases = {
    { "Unable to locate credentials. You can configure credentials by running \"aws configure\".",
      "auth", "aws configure" },
    { "An error occurred (ExpiredTokenException) when calling the GetParameters operation: "
      .. "The security token included in the request is expired", "auth", "aws sso login" },
    { "An error occurred (ExpiredToken) when calling the GetParameters operation: The provided token has expired.",
      "auth", "aws sso login" },
    { "An error occurred (AccessDeniedException) when calling the GetParameters operation: User: "
      .. "arn:aws:iam::123456789012:user/dev is not authorized to perform: ssm:GetParameters on resource: "
      .. "arn:aws:ssm:us-east-1:123456789012:parameter/app/db because no identity-based policy allows the "
      .. "ssm:GetParameters action", "permission", "ssm:GetParameter" },
    { "An error occurred (AccessDeniedException) when calling the GetParameters operation: User: "
      .. "arn:aws:iam::123456789012:user/dev is not authorized to perform: kms:Decrypt on resource: "
      .. "arn:aws:kms:us-east-1:123456789012:key/1234 because no identity-based policy allows the kms:Decrypt "
      .. "action (Service: AWSKMS; Status Code: 400; Error Code: AccessDeniedException; Request ID: x)",
      "permission", "kms:Decrypt" },
    { "An error occurred (AccessDeniedException) when calling the GetParameter operation: The ciphertext "
      .. "refers to a customer master key that does not exist, does not exist in this region, or you are not "
      .. "allowed to access. (Service: AWSKMS; Status Code: 400; Error Code: AccessDeniedException)",
      "permission", "kms:Decrypt" },
    { "An error occurred (ParameterNotFound) when calling the GetParameter operation: Parameter /zz not found.",
      "not_found", "describe-parameters" },
    { "Could not connect to the endpoint URL: \"https://ssm.us-east-1.amazonaws.com/\"", "network",
      "AWS_ENDPOINT_URL" },
    { "You must specify a region. You can also configure your region by running \"aws configure\".",
      "invalid", "AWS_REGION" },
    { "An error occurred (InternalServerError) SECRET boom " .. string.rep("y", 2000), "backend_error", "by hand" },
  }

  for _, c in ipairs(cases) do
    it("maps " .. c[1]:sub(1, 60), function()
      local ctx = failing(255, "\n" .. c[1] .. "\n")
      ssm.resolve(requests({ "ssm:///app/db", "ssm://eu-west-1/ok" }), ctx)
      assert.equal(secret, ctx.oks.V2)
      local f = ctx.fails.V1
      assert.equal(c[2], f.kind)
      assert.truthy(f.fix:find(c[3], 1, true), f.fix)
      assert.is_nil(f.reason:find(secret, 1, true))
      assert.is_nil(f.fix:find(secret, 1, true))
      assert.truthy(#f.reason < 600)
      assert.is_nil(f.reason:find("[%c]"))
    end)
  end

  it("names a missing aws CLI", function()
    local ctx = scripted(function() return nil, "aws: No such file or directory" end)
    ssm.resolve(requests({ "ssm:///a", "ssm:///b" }), ctx)
    for _, n in ipairs({ "V1", "V2" }) do
      assert.equal("unavailable", ctx.fails[n].kind)
      assert.truthy(ctx.fails[n].reason:find("not installed", 1, true))
      assert.truthy(ctx.fails[n].fix:find("install", 1, true))
    end
    local ok, why, fix = ssm.check(ctx)
    assert.is_nil(ok)
    assert.truthy(why:find("not installed", 1, true))
    assert.is_string(fix)
  end)

  it("reports a timeout and output that is not JSON without quoting it", function()
    local ctx = scripted(function() return { code = nil, signal = 15, timed_out = true, stdout = "", stderr = "" } end)
    ssm.resolve(requests({ "ssm:///a" }), ctx)
    assert.equal("timeout", ctx.fails.V1.kind)
    ctx = scripted(function() return { code = 0, stdout = "{\"Parameters\": [" .. secret, stderr = "" } end)
    ssm.resolve(requests({ "ssm:///a" }), ctx)
    assert.equal("backend_error", ctx.fails.V1.kind)
    assert.is_nil(ctx.fails.V1.reason:find(secret, 1, true))
  end)

  it("check() asks sts get-caller-identity in the region in use", function()
    local ctx = scripted(function() return { code = 0, stdout = '{"Arn": "arn:aws:iam::1:user/u"}', stderr = "" } end)
    ctx.environ.AWS_DEFAULT_REGION = "eu-central-1"
    assert.is_true(ssm.check(ctx))
    assert.same({ { "aws", "sts", "get-caller-identity", "--output", "json", "--region", "eu-central-1" } }, ctx.calls)
  end)
end)

describe("ssm.resolve with an identity granted only ssm:GetParameter", function()
  local DENIED = "\nAn error occurred (AccessDeniedException) when calling the GetParameters operation: User: "
    .. "arn:aws:iam::123456789012:user/dev is not authorized to perform: ssm:GetParameters on resource: "
    .. "arn:aws:ssm:us-east-1:123456789012:parameter/a because no identity-based policy allows the "
    .. "ssm:GetParameters action\n"
  local GONE = "\nAn error occurred (ParameterNotFound) when calling the GetParameter operation: \n"

  -- get-parameters is denied; get-parameter answers from `params` (name -> value).
  local function guide_policy(params)
    return scripted(function(argv)
      if argv[3] == "get-parameters" then return { code = 255, stdout = "", stderr = DENIED } end
      assert.equal("get-parameter", argv[3])
      assert.equal("--name", argv[4])
      local v = params[argv[5]]
      if not v then return { code = 255, stdout = "", stderr = GONE } end
      return { code = 0, stderr = "", stdout = json.encode({ Parameter = { Name = argv[5], Value = v } }) }
    end)
  end

  it("asks for exactly those names again with concurrent get-parameter calls, and says so under -v", function()
    local ctx = guide_policy({ ["/a"] = "value-a", ["/b"] = " value b\n", ["/c:2"] = "v-c2" })
    local logged = {}
    ctx.log = function(...) logged[#logged + 1] = table.concat({ ... }, " ") end
    ctx.environ.AWS_REGION = "eu-west-1"
    gathered = 0
    ssm.resolve(requests({ "ssm:///a", "ssm:///b", "ssm:///c:2", "ssm:///gone" }), ctx)
    assert.same({ V1 = "value-a", V2 = " value b\n", V3 = "v-c2" }, ctx.oks)
    assert.equal("not_found", ctx.fails.V4.kind)
    assert.equal("the parameter does not exist in eu-west-1", ctx.fails.V4.reason)
    assert.equal(5, #ctx.calls)
    local asked = {}
    for i = 2, 5 do
      local c = ctx.calls[i]
      assert.same({ "aws", "ssm", "get-parameter", "--name", c[5], "--with-decryption", "--output", "json",
        "--region", "eu-west-1" }, c)
      asked[#asked + 1] = c[5]
    end
    table.sort(asked)
    assert.same({ "/a", "/b", "/c:2", "/gone" }, asked)
    assert.equal(4, gathered)
    assert.truthy(logged[1]:find("GetParameters was denied in eu-west-1; asking for 4 names one by one", 1, true))
  end)

  it("reports an identity without any SSM right as denied, with the IAM fix", function()
    local ctx = scripted(function(argv)
      return { code = 255, stdout = "", stderr = DENIED:gsub("GetParameters", argv[3] == "get-parameter"
        and "GetParameter" or "GetParameters") }
    end)
    ssm.resolve(requests({ "ssm:///a", "ssm://us-east-2/b" }), ctx)
    for _, n in ipairs({ "V1", "V2" }) do
      assert.equal("permission", ctx.fails[n].kind)
      assert.truthy(ctx.fails[n].fix:find("grant ssm:GetParameter on the parameter", 1, true))
      assert.is_nil(ctx.fails[n].reason:find("arn:", 1, true))
    end
    assert.equal("AWS denied access to the parameter in the CLI's default region (from your aws profile)",
      ctx.fails.V1.reason)
    assert.equal("AWS denied access to the parameter in us-east-2", ctx.fails.V2.reason)
    assert.equal(4, #ctx.calls)
  end)

  it("does not retry other failures one by one", function()
    local ctx = scripted(function() return { code = 255, stdout = "", stderr = "\nUnable to locate credentials\n" } end)
    ssm.resolve(requests({ "ssm:///a", "ssm:///b" }), ctx)
    assert.equal(1, #ctx.calls)
    assert.equal("auth", ctx.fails.V1.kind)
  end)
end)

describe("ssm.resolve region", function()
  local function answer()
    return scripted(function()
      return { code = 0, stderr = "", stdout = json.encode({ Parameters = json.array({ { Name = "/a", Value = "v" } }),
        InvalidParameters = json.array({}) }) }
    end)
  end

  it("passes --region from the reference, else AWS_REGION, else AWS_DEFAULT_REGION, else none", function()
    local cases = {
      { "ssm://ap-south-1/a", { AWS_REGION = "eu-west-1" }, "ap-south-1" },
      { "ssm:///a", { AWS_REGION = "eu-west-1", AWS_DEFAULT_REGION = "us-east-2" }, "eu-west-1" },
      { "ssm:///a", { AWS_DEFAULT_REGION = "us-east-2" }, "us-east-2" },
      { "ssm:///a", {}, nil },
    }
    for _, c in ipairs(cases) do
      local ctx = answer()
      ctx.environ = c[2]
      ssm.resolve(requests({ c[1] }), ctx)
      assert.equal("v", ctx.oks.V1)
      assert.equal(c[3], region_of(ctx.calls[1]), c[1])
    end
  end)

  it("puts a reference naming the environment's region in the same call", function()
    local ctx = answer()
    ctx.environ.AWS_REGION = "eu-west-1"
    ssm.resolve(requests({ "ssm:///a", "ssm://eu-west-1/b" }), ctx)
    assert.equal(1, #ctx.calls)
  end)
end)

describe("ssm.resolve unrecognised CLI text", function()
  it("shows it through ctx.sanitize with quoted strings elided", function()
    local ctx = scripted(function()
      return { code = 255, stdout = "", stderr = "\nError: parameter value 'never-seen-by-moat' is malformed\n" }
    end)
    local sanitized
    ctx.sanitize = function(text) sanitized = text return text end
    ssm.resolve(requests({ "ssm:///a" }), ctx)
    assert.is_string(sanitized)
    local f = ctx.fails.V1
    assert.equal("backend_error", f.kind)
    assert.equal("aws ssm get-parameters failed (exit 255): Error: parameter value '<elided>' is malformed",
      f.reason)
  end)
end)
