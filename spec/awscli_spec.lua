-- Unit tests of moat.awscli, the aws CLI plumbing shared by the ssm and awssm backends.
local json = require("moat.c.json")
local awscli = require("moat.awscli")

local SSM = {
  service = "SSM", noun = "the parameter", encrypted = "the SecureString parameter",
  grant = "ssm:GetParameter", ref = "ssm://REGION/path", example = "ssm://us-east-1/path",
}
local SM = {
  service = "Secrets Manager", noun = "the secret", grant = "secretsmanager:GetSecretValue",
  ref = "awssm://REGION/name", example = "awssm://us-east-1/name",
}

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

-- A ctx following DESIGN §5 whose run() answers with `result` (or nil, msg, errno).
local function scripted(...)
  local answer = table.pack(...)
  local ctx = { calls = {}, json = json, log = function() end, env = function() return nil end }
  function ctx.run(argv, opts)
    assert.is_table(opts)
    ctx.calls[#ctx.calls + 1] = as_called(argv, opts)
    return table.unpack(answer, 1, answer.n)
  end
  return ctx
end

describe("awscli.valid_region", function()
  local cases = {
    { "us-east-1", true }, { "eu-west-1", true }, { "us-gov-west-1", true }, { "ap-southeast-2", true },
    { "cn-north-1", true }, { "il-central-1", true }, { "eu-central-12", true },
    { "", false }, { "us-east", false }, { "US-EAST-1", false }, { "us--east-1", false },
    { "us-east--1", false }, { "use-east-1", false }, { "u-east-1", false }, { "us-east-1a", false },
    { "us_east_1", false }, { "us-east-1 ", false }, { "us-east-1/x", false }, { "-us-east-1", false },
    { "us-" .. ("a"):rep(30) .. "-1", false }, { 1, false }, { nil, false },
  }
  for _, c in ipairs(cases) do
    it(("%s is %s"):format(tostring(c[1]), c[2] and "a region" or "not a region"), function()
      assert.equal(c[2], awscli.valid_region(c[1]))
    end)
  end
end)

describe("awscli.where", function()
  it("names the region or the CLI's default", function()
    assert.equal("in eu-west-1", awscli.where("eu-west-1"))
    assert.equal("in the CLI's default region (from your aws profile)", awscli.where(nil))
  end)
end)

describe("awscli.said", function()
  local secret = "s3cr3t-Value-42"

  it("picks the line that reports the error, trimmed", function()
    local text = "\n  some progress line\n\tAn error occurred (AccessDeniedException) when calling X  \nmore\n"
    assert.equal("An error occurred (AccessDeniedException) when calling X", awscli.said(text))
    assert.equal("first line", awscli.said("\n first line \nsecond line\n"))
    assert.equal("", awscli.said(nil))
    assert.equal("", awscli.said("\n\r\n  \n"))
  end)

  it("conceals every value, longest first, including the lines of multi-line ones", function()
    local multi = "line-one-xyz\nline-two-xyz"
    local text = "An error occurred (X): " .. secret .. " and " .. secret .. "-longer and line-two-xyz"
    local out = awscli.said(text, { secret, secret .. "-longer", multi })
    assert.is_nil(out:find(secret, 1, true))
    assert.is_nil(out:find("line-two-xyz", 1, true))
    assert.equal("An error occurred (X): <concealed by moat> and <concealed by moat> and <concealed by moat>", out)
  end)

  it("conceals a value that holds control characters before blanking them", function()
    local v = "ab\tcd\001ef"
    local out = awscli.said("Error: " .. v, { v })
    assert.equal("Error: " .. awscli.HIDDEN, out)
  end)

  it("treats values as plain text, whatever bytes they hold", function()
    local v = "a%b.c*[d]^$\0\195\169(-+?)"
    assert.equal("x" .. awscli.HIDDEN .. "y", awscli.conceal("x" .. v .. "y", { v }))
    assert.equal("a.b", awscli.conceal("a.b", { "a%.b", "." .. "*" }))
  end)

  it("conceals what moat.scrub hides: encoded forms too, short values never", function()
    local b64 = require("moat.c.system").base64_encode(secret)
    assert.equal("Error: " .. awscli.HIDDEN, awscli.said("Error: " .. b64, { secret }))
    assert.equal("Error: pin 1234", awscli.said("Error: pin 1234", { "1234" }))
    assert.equal(require("moat.scrub").PLACEHOLDER, awscli.HIDDEN)
    assert.equal("x" .. awscli.HIDDEN, awscli.conceal("x" .. secret, { secret, 42, false }))
  end)

  it("blanks control characters and caps the length", function()
    local out = awscli.said("Error: a\27[31mb " .. ("y"):rep(2000))
    assert.is_nil(out:find("%c"))
    assert.equal(awscli.MAX_SAID + #"…", #out)
    assert.equal("…", out:sub(-#"…"))
    assert.equal("Error: a [31m…", awscli.said("Error: a\27[31mb", {}, 13))
  end)

  it("caps after concealing, so no part of a value survives the cut", function()
    local v = ("v"):rep(500)
    local out = awscli.said("Error: " .. v, { v })
    assert.equal("Error: " .. awscli.HIDDEN, out)
  end)
end)

describe("awscli.reason", function()
  it("appends the CLI's line of an unrecognised failure, concealed and elided", function()
    assert.equal("aws x failed: Error: <concealed by moat>",
      awscli.reason({ reason = "aws x failed", detail = "\nError: hunter22\n" }, { "hunter22" }))
    assert.equal("aws x failed: Error: bad value '<elided>' given",
      awscli.reason({ reason = "aws x failed", detail = "\nError: bad value 'never-seen-9' given\n" }, {}))
    assert.equal("r", awscli.reason({ reason = "r" }, {}))
    assert.equal("r", awscli.reason({ reason = "r", detail = "\n \n" }, {}))
  end)

  it("keeps a recognised failure's fixed text without the CLI's words", function()
    assert.equal("AWS denied access", awscli.reason({ reason = "AWS denied access", known = true,
      detail = "An error occurred (AccessDeniedException): not authorized 'x'" }, {}))
  end)

  it("masks through ctx.sanitize, so values moat knows from elsewhere are hidden too", function()
    local ctx = { sanitize = function(text) return (text:gsub("elsewhere%-value", "<concealed by moat>")) end }
    local r = awscli.reason({ reason = "aws x failed", detail = "Error: elsewhere-value broke" }, {}, ctx)
    assert.equal("aws x failed: Error: <concealed by moat> broke", r)
  end)
end)

describe("awscli.classify by stable fragments", function()
  local function denied(op, action, what)
    return ("An error occurred (AccessDeniedException) when calling the %s operation: User: "
      .. "arn:aws:iam::123456789012:user/dev is not authorized to perform: %s on resource: %s because no "
      .. "identity-based policy allows the %s action"):format(op, action, what, action)
  end
  -- moto (and some older endpoints) answer JSON services with an XML body and the HTTP status.
  local function xml(op, code, msg)
    return ("An error occurred (403) when calling the %s operation: <?xml version=\"1.0\" encoding=\"utf-8\"?>\n"
      .. "<ErrorResponse><Errors><Error><Code>%s</Code><Message>%s</Message><Type>Sender</Type></Error>"
      .. "</Errors></ErrorResponse>"):format(op, code, msg)
  end

  -- class -> kind, then texts of several CLI versions and services that all show it
  local classes = {
    { "no_credentials", "auth", {
      "Unable to locate credentials. You can configure credentials by running \"aws configure\".",
      "botocore.exceptions.NoCredentialsError: Unable to locate credentials",
      "\nUnable to locate credentials\n" } },
    { "expired", "auth", {
      "An error occurred (ExpiredTokenException) when calling the GetParameters operation: "
        .. "The security token included in the request is expired",
      "An error occurred (ExpiredToken) when calling the GetSecretValue operation: The provided token has expired.",
      "Error when retrieving token from sso: Token has expired and refresh failed",
      "The SSO session associated with this profile has expired or is otherwise invalid. To refresh this SSO "
        .. "session run aws sso login with the corresponding profile." } },
    { "kms", "permission", {
      denied("GetParameters", "kms:Decrypt", "arn:aws:kms:us-east-1:1:key/1")
        .. " (Service: AWSKMS; Status Code: 400; Error Code: AccessDeniedException; Request ID: x)",
      "An error occurred (AccessDeniedException) when calling the GetParameter operation: The ciphertext "
        .. "refers to a customer master key that does not exist, does not exist in this region, or you are not "
        .. "allowed to access. (Service: AWSKMS; Status Code: 400; Error Code: AccessDeniedException)",
      "An error occurred (KMSAccessDeniedException) when calling the GetSecretValue operation: Access to KMS "
        .. "is not allowed",
      "An error occurred (DecryptionFailure) when calling the GetSecretValue operation: failed" } },
    { "denied", "permission", {
      denied("GetParameters", "ssm:GetParameters", "arn:aws:ssm:us-east-1:1:parameter/app/db"),
      denied("BatchGetSecretValue", "secretsmanager:BatchGetSecretValue", "*"),
      "An error occurred (AccessDeniedException) when calling the GetParameter operation: access denied",
      xml("GetParameters", "AccessDenied",
        "User: arn:aws:iam::123456789012:user/dev is not authorized to perform: ssm:GetParameters") } },
    { "rejected", "auth", {
      "An error occurred (UnrecognizedClientException) when calling the GetParameters operation: "
        .. "The security token included in the request is invalid.",
      "An error occurred (InvalidSignatureException) when calling the GetSecretValue operation: The request "
        .. "signature we calculated does not match the signature you provided.",
      "An error occurred (InvalidClientTokenId) when calling the GetCallerIdentity operation: "
        .. "The security token included in the request is invalid.",
      xml("GetParameter", "InvalidClientTokenId", "The security token included in the request is invalid.") } },
    { "unreachable", "network", {
      "Could not connect to the endpoint URL: \"https://ssm.us-east-1.amazonaws.com/\"",
      "Connect timeout on endpoint URL: \"https://secretsmanager.eu-west-1.amazonaws.com/\"",
      "Read timeout on endpoint URL: \"https://ssm.eu-west-1.amazonaws.com/\"" } },
    { "no_region", "invalid", {
      "You must specify a region. You can also configure your region by running \"aws configure\".",
      "botocore.exceptions.NoRegionError: You must specify a region." } },
    { "throttled", "throttled", {
      "An error occurred (ThrottlingException) when calling the GetParameters operation (reached max retries: 4): "
        .. "Rate exceeded",
      "An error occurred (ThrottlingException) when calling the BatchGetSecretValue operation: Rate exceeded",
      "An error occurred (TooManyRequestsException) when calling the GetSecretValue operation: slow down" } },
  }

  for _, c in ipairs(classes) do
    for i, text in ipairs(c[3]) do
      for _, svc in ipairs({ SSM, SM }) do
        it(("%s/%s #%d: %s"):format(c[1], svc.service, i, (text:gsub("%c", " ")):sub(1, 40)), function()
          local f = awscli.classify("\n" .. text .. "\n", svc, { region = "eu-west-1", exit = 255, cmd = "aws x y" })
          local want = awscli.failure(c[1], svc, "eu-west-1")
          assert.same(want, f)
          assert.equal(c[2], f.kind)
          assert.equal(c[1], f.class)
          assert.is_true(f.known)
          -- Fixed text: nothing of the CLI's wording (ARNs, quoted URLs) is carried.
          assert.is_nil(f.reason:find("arn:", 1, true))
          assert.is_nil((f.reason .. f.fix):find("amazonaws", 1, true))
        end)
      end
    end
  end

  it("has a fixed reason and fix per class, naming the region used", function()
    local want = {
      no_credentials = { "auth", "no AWS credentials: the aws CLI found none", "aws configure" },
      expired = { "auth", "the AWS session token has expired", "aws sso login" },
      kms = { "permission", "KMS refused to decrypt the SecureString parameter",
        "grant kms:Decrypt on the parameter's KMS key" },
      denied = { "permission", "AWS denied access to the parameter in eu-west-1", "grant ssm:GetParameter on" },
      rejected = { "auth", "AWS rejected the credentials", "aws sts get-caller-identity" },
      unreachable = { "network", "the aws CLI could not reach SSM in eu-west-1", "AWS_ENDPOINT_URL" },
      no_region = { "invalid", "no AWS region is configured", "ssm://us-east-1/path" },
      throttled = { "throttled", "SSM throttled the request", "retry later" },
    }
    for name, w in pairs(want) do
      local f = awscli.failure(name, SSM, "eu-west-1")
      assert.equal(w[1], f.kind, name)
      assert.equal(w[2], f.reason, name)
      assert.truthy(f.fix:find(w[3], 1, true), name .. ": " .. f.fix)
    end
    assert.equal("the aws CLI could not reach SSM in the CLI's default region (from your aws profile)",
      awscli.failure("unreachable", SSM, nil).reason)
  end)

  it("names an unknown error by its code and exit status and suggests running it by hand", function()
    local f = awscli.classify("An error occurred (InternalServerError) when calling the GetParameters operation",
      SSM, { exit = 254, cmd = "aws ssm get-parameters", by_hand = "aws ssm get-parameters --names …" })
    assert.same({ kind = "backend_error", reason = "aws ssm get-parameters failed (InternalServerError, exit 254)",
      fix = "run the same `aws ssm get-parameters --names …` by hand to see the full error" }, f)
    f = awscli.classify("aws: error: argument operation: Invalid choice, valid choices are:", SM,
      { exit = 252, cmd = "aws secretsmanager batch-get-secret-value" })
    assert.equal("aws secretsmanager batch-get-secret-value failed (exit 252)", f.reason)
    f = awscli.classify("InternalServiceError\nboom", SM, { code = "InternalServiceError", cmd = "aws sm b" })
    assert.equal("aws sm b failed (InternalServiceError)", f.reason)
    assert.equal("aws sm b failed", awscli.classify("", SM, { cmd = "aws sm b" }).reason)
  end)

  it("asks the service's own classes first", function()
    local svc = setmetatable({ specific = function(code, _, region)
      if code == "ParameterNotFound" then return { kind = "not_found", reason = "gone " .. region } end
    end }, { __index = SSM })
    -- The KMS in the name would otherwise read as a KMS failure.
    local f = awscli.classify("An error occurred (ParameterNotFound): Parameter /KMS/x not found.", svc,
      { region = "r1", cmd = "c" })
    assert.same({ kind = "not_found", reason = "gone r1", known = true }, f)
  end)

  it("reads the error code from the CLI's text and refuses an unknown class", function()
    assert.equal("ParameterNotFound", awscli.error_code("\nAn error occurred (ParameterNotFound) when calling"))
    assert.is_nil(awscli.error_code("Unable to locate credentials"))
    assert.has_error(function() awscli.failure("nope", SM) end)
    assert.is_nil(awscli.common("all is well", SM))
  end)
end)

describe("awscli.split and awscli.region", function()
  it("splits the region part of a reference", function()
    assert.same({ path = "/a/b" }, awscli.split("/a/b"))
    assert.same({ region = "eu-west-1", path = "/a" }, awscli.split("eu-west-1/a"))
    assert.is_nil(awscli.split("nope/a"))
    assert.is_nil(awscli.split("eu-west-1"))
  end)

  it("takes the reference's region, else AWS_REGION, else AWS_DEFAULT_REGION, else none", function()
    local function ctx(env) return { env = function(k) return env[k] end } end
    assert.equal("ap-south-1", awscli.region(ctx({ AWS_REGION = "eu-west-1" }), "ap-south-1"))
    assert.equal("eu-west-1", awscli.region(ctx({ AWS_REGION = "eu-west-1", AWS_DEFAULT_REGION = "us-east-2" })))
    assert.equal("us-east-2", awscli.region(ctx({ AWS_REGION = "", AWS_DEFAULT_REGION = "us-east-2" })))
    assert.is_nil(awscli.region(ctx({})))
    assert.is_nil(awscli.region(ctx({ AWS_REGION = "--debug" })))
  end)
end)

describe("awscli.spawn_failure and check", function()
  it("says the CLI is missing when it cannot be found", function()
    for _, c in ipairs({ { "aws: No such file or directory" }, { "exec failed", 2 }, { "aws: not found" },
      { "ENOENT" } }) do
      local f = awscli.spawn_failure(c[1], c[2])
      assert.same({ global = true, kind = "unavailable", reason = "the aws CLI is not installed or not on PATH",
        fix = awscli.INSTALL_FIX }, f)
    end
  end)

  it("passes on other start failures, sanitized", function()
    local f = awscli.spawn_failure("Permission denied\n\27[0m", 13)
    assert.equal("could not start the aws CLI: Permission denied", f.reason)
    assert.equal(awscli.INSTALL_FIX, f.fix)
  end)

  it("check asks sts get-caller-identity once per region in use", function()
    local ctx = scripted({ code = 0, stdout = '{"Arn": "arn:aws:iam::1:user/u"}', stderr = "" })
    assert.is_true(awscli.check(ctx))
    assert.same({ { "aws", "sts", "get-caller-identity", "--output", "json" } }, ctx.calls)
    ctx = scripted({ code = 0, stdout = "{}", stderr = "" })
    ctx.env = function(k) return k == "AWS_REGION" and "eu-west-1" or nil end
    local reqs = { { parsed = { region = "us-east-2" } }, { parsed = {} }, { parsed = { region = "eu-west-1" } },
      { parsed = { region = "us-east-2" } } }
    assert.is_true(awscli.check(ctx, reqs))
    assert.same({ { "aws", "sts", "get-caller-identity", "--output", "json", "--region", "us-east-2" },
      { "aws", "sts", "get-caller-identity", "--output", "json", "--region", "eu-west-1" } }, ctx.calls)
    local ok, why, fix = awscli.check(scripted({ code = 255, stdout = "",
      stderr = "\nUnable to locate credentials. You can configure credentials by running \"aws configure\".\n" }))
    assert.is_nil(ok)
    assert.equal("no AWS credentials: the aws CLI found none", why)
    assert.truthy(fix:find("aws configure", 1, true))
    ok, why, fix = awscli.check(scripted(nil, "aws: No such file or directory", 2))
    assert.is_nil(ok)
    assert.equal("the aws CLI is not installed or not on PATH", why)
    assert.equal(awscli.INSTALL_FIX, fix)
  end)
end)

describe("awscli.call", function()
  local argv = { "aws", "ssm", "get-parameters", "--names", "/a" }
  local function never() error("classify must not be called") end

  it("returns the decoded JSON of a call that succeeded", function()
    local doc = awscli.call(scripted({ code = 0, stdout = '{"Parameters":[]}', stderr = "" }), argv, never)
    assert.is_table(doc.Parameters)
  end)

  it("does not quote output that is not JSON", function()
    local doc, f = awscli.call(scripted({ code = 0, stdout = '{"Value": "hunter22', stderr = "" }), argv, never)
    assert.is_nil(doc)
    assert.equal("aws printed output that is not the expected JSON", f.reason)
    assert.is_nil(f.reason:find("hunter22", 1, true))
  end)

  it("classifies a non-zero exit and keeps the raw stderr as detail", function()
    local doc, f = awscli.call(scripted({ code = 255, stdout = "", stderr = "\nboom\n" }), argv, function(r)
      assert.equal(255, r.code)
      return { kind = "backend_error", reason = "r" }
    end)
    assert.is_nil(doc)
    assert.same({ kind = "backend_error", reason = "r", detail = "\nboom\n" }, f)
  end)

  it("reads exit 127 without an AWS error as a missing CLI", function()
    local _, f = awscli.call(scripted({ code = 127, stdout = "", stderr = "env: 'aws': No such file" }), argv, never)
    assert.equal("the aws CLI is not installed or not on PATH", f.reason)
    assert.is_true(f.global)
  end)

  it("reports a start failure, a cut run and a timeout", function()
    local _, f = awscli.call(scripted(nil, "aws: No such file or directory", 2), argv, never)
    assert.equal("the aws CLI is not installed or not on PATH", f.reason)
    local ctx = scripted({ code = nil, signal = 9, timed_out = true, stdout = "", stderr = "" })
    _, f = awscli.call(ctx, argv, never)
    assert.same({ kind = "timeout", reason = "aws ssm get-parameters did not finish in time",
      fix = "check the network and the region, or raise --timeout" }, f)
    ctx.run_failure = function(r, prog)
      assert.equal("aws", prog)
      return r.timed_out and { kind = "timeout", reason = "cut" } or nil
    end
    _, f = awscli.call(ctx, argv, never)
    assert.same({ kind = "timeout", reason = "cut" }, f)
  end)
end)

describe("moat.awscli grouping", function()
  it("groups requests by region in first-seen order, one name once, every request kept", function()
    local function parse(ref)
      local region, name = ref:match("^x://([^/]*)(/.*)$")
      return { region = region ~= "" and region or nil, name = name }
    end
    local reqs = { { ref = "x:///a" }, { ref = "x://eu-west-1/b" }, { ref = "x:///a" }, { ref = "x:///c" } }
    local groups = awscli.by_region({ env = function() return nil end }, reqs, parse, function(p) return p.name end)
    assert.equal(2, #groups)
    assert.is_nil(groups[1].region)
    assert.same({ "/a", "/c" }, groups[1].names)
    assert.same({ reqs[1], reqs[3] }, groups[1].reqs["/a"])
    assert.equal("eu-west-1", groups[2].region)
    assert.same({ "/b" }, groups[2].names)
  end)

  it("runs no call, one call directly, or several through ctx.gather", function()
    local gathered = 0
    local ctx = { gather = function(fns)
      gathered = gathered + 1
      local out = {}
      for i, f in ipairs(fns) do out[i] = f() end
      return out
    end }
    assert.same({}, awscli.run_all(ctx, {}))
    assert.same({ 1 }, awscli.run_all(ctx, { function() return 1 end }))
    assert.equal(0, gathered)
    assert.same({ 1, 2 }, awscli.run_all(ctx, { function() return 1 end, function() return 2 end }))
    assert.equal(1, gathered)
  end)
end)
