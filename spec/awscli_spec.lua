-- Unit tests of moat.awscli, the aws CLI plumbing shared by the ssm and awssm backends.
local json = require("moat.c.json")
local awscli = require("moat.awscli")

local SSM = {
  service = "SSM", noun = "the parameter", encrypted = "the SecureString parameter",
  grant = "ssm:GetParameters", ref = "ssm://REGION/path", example = "ssm://us-east-1/path",
}
local SM = {
  service = "Secrets Manager", noun = "the secret", grant = "secretsmanager:GetSecretValue",
  ref = "awssm://REGION/name", example = "awssm://us-east-1/name",
}

-- A ctx following DESIGN §5 whose run() answers with `result` (or nil, msg, errno).
local function scripted(...)
  local answer = table.pack(...)
  local ctx = { calls = {}, json = json }
  function ctx.run(argv, opts)
    assert.is_table(opts)
    ctx.calls[#ctx.calls + 1] = argv
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
    assert.equal("region eu-west-1", awscli.where("eu-west-1"))
    assert.equal("the CLI's default region", awscli.where(nil))
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
  it("appends the CLI's line, concealed, or leaves the reason alone", function()
    assert.equal("AWS denied access to the secret: Error: <concealed by moat>",
      awscli.reason({ reason = "AWS denied access to the secret", detail = "\nError: hunter22\n" }, { "hunter22" }))
    assert.equal("r", awscli.reason({ reason = "r" }, {}))
    assert.equal("r", awscli.reason({ reason = "r", detail = "\n \n" }, {}))
  end)
end)

describe("awscli.classify maps real CLI texts", function()
  local denied_ssm = "An error occurred (AccessDeniedException) when calling the GetParameters operation: User: "
    .. "arn:aws:iam::123456789012:user/dev is not authorized to perform: ssm:GetParameters on resource: "
    .. "arn:aws:ssm:us-east-1:123456789012:parameter/app/db because no identity-based policy allows the "
    .. "ssm:GetParameters action"
  local denied_sm = "An error occurred (AccessDeniedException) when calling the BatchGetSecretValue operation: "
    .. "User: arn:aws:iam::123456789012:user/dev is not authorized to perform: secretsmanager:BatchGetSecretValue "
    .. "because no identity-based policy allows the secretsmanager:BatchGetSecretValue action"
  local kms = "An error occurred (AccessDeniedException) when calling the GetParameters operation: User: "
    .. "arn:aws:iam::123456789012:user/dev is not authorized to perform: kms:Decrypt on resource: "
    .. "arn:aws:kms:us-east-1:123456789012:key/1234 because no identity-based policy allows the kms:Decrypt "
    .. "action (Service: AWSKMS; Status Code: 400; Error Code: AccessDeniedException; Request ID: x)"
  local cmk = "An error occurred (AccessDeniedException) when calling the GetParameter operation: The ciphertext "
    .. "refers to a customer master key that does not exist, does not exist in this region, or you are not "
    .. "allowed to access. (Service: AWSKMS; Status Code: 400; Error Code: AccessDeniedException)"

  -- text, service, region, kind, reason, fix, global
  local cases = {
    { "Unable to locate credentials. You can configure credentials by running \"aws configure\".", SSM, nil,
      "auth", "the aws CLI found no AWS credentials",
      "run `aws configure`, set AWS_PROFILE to a configured profile, or run `aws sso login`", true },
    { "botocore.exceptions.NoCredentialsError: Unable to locate credentials", SM, nil,
      "auth", "the aws CLI found no AWS credentials",
      "run `aws configure`, set AWS_PROFILE to a configured profile, or run `aws sso login`", true },
    { "An error occurred (ExpiredTokenException) when calling the GetParameters operation: "
      .. "The security token included in the request is expired", SSM, nil,
      "auth", "the AWS session token has expired",
      "run `aws sso login` (with the same AWS_PROFILE) or refresh the temporary credentials", true },
    { "An error occurred (ExpiredToken) when calling the GetSecretValue operation: The provided token has expired.",
      SM, nil, "auth", "the AWS session token has expired",
      "run `aws sso login` (with the same AWS_PROFILE) or refresh the temporary credentials", true },
    { "Error when retrieving token from sso: Token has expired and refresh failed", SM, nil,
      "auth", "the AWS session token has expired",
      "run `aws sso login` (with the same AWS_PROFILE) or refresh the temporary credentials", true },
    { "The SSO session associated with this profile has expired or is otherwise invalid. To refresh this SSO "
      .. "session run aws sso login with the corresponding profile.", SSM, nil,
      "auth", "the AWS session token has expired",
      "run `aws sso login` (with the same AWS_PROFILE) or refresh the temporary credentials", true },
    { kms, SSM, nil, "auth", "KMS refused to decrypt the SecureString parameter",
      "grant kms:Decrypt on the parameter's KMS key to this identity (IAM policy or key policy)" },
    { cmk, SSM, nil, "auth", "KMS refused to decrypt the SecureString parameter",
      "grant kms:Decrypt on the parameter's KMS key to this identity (IAM policy or key policy)" },
    { kms, SM, nil, "auth", "KMS refused to decrypt the secret",
      "grant kms:Decrypt on the secret's KMS key to this identity (IAM policy or key policy)" },
    { denied_ssm, SSM, nil, "auth", "AWS denied access to the parameter",
      "grant ssm:GetParameters on the parameter to this identity (see `aws sts get-caller-identity`)" },
    { denied_sm, SM, nil, "auth", "AWS denied access to the secret",
      "grant secretsmanager:GetSecretValue on the secret to this identity (see `aws sts get-caller-identity`)" },
    { "An error occurred (UnrecognizedClientException) when calling the GetParameters operation: "
      .. "The security token included in the request is invalid.", SSM, nil,
      "auth", "AWS rejected the credentials",
      "check AWS_PROFILE / AWS_ACCESS_KEY_ID and run `aws sts get-caller-identity`", true },
    { "An error occurred (InvalidSignatureException) when calling the GetSecretValue operation: The request "
      .. "signature we calculated does not match the signature you provided.", SM, nil,
      "auth", "AWS rejected the credentials",
      "check AWS_PROFILE / AWS_ACCESS_KEY_ID and run `aws sts get-caller-identity`", true },
    { "Could not connect to the endpoint URL: \"https://ssm.us-east-1.amazonaws.com/\"", SSM, "us-east-1",
      "unavailable", "the aws CLI could not reach SSM in region us-east-1",
      "check the region (ssm://REGION/path, AWS_REGION or AWS_DEFAULT_REGION), the network, "
        .. "and AWS_ENDPOINT_URL if it is set", true },
    { "Connect timeout on endpoint URL: \"https://secretsmanager.eu-west-1.amazonaws.com/\"", SM, nil,
      "unavailable", "the aws CLI could not reach Secrets Manager in the CLI's default region",
      "check the region (awssm://REGION/name, AWS_REGION or AWS_DEFAULT_REGION), the network, "
        .. "and AWS_ENDPOINT_URL if it is set", true },
    { "You must specify a region. You can also configure your region by running \"aws configure\".", SSM, nil,
      "invalid", "no AWS region is configured",
      "write the region in the reference (ssm://us-east-1/path) or set AWS_REGION / `aws configure`", true },
    { "botocore.exceptions.NoRegionError: You must specify a region.", SM, nil,
      "invalid", "no AWS region is configured",
      "write the region in the reference (awssm://us-east-1/name) or set AWS_REGION / `aws configure`", true },
    { "An error occurred (ThrottlingException) when calling the GetParameters operation (reached max retries: 4): "
      .. "Rate exceeded", SSM, nil, "unavailable", "SSM throttled the request", "retry later or lower --jobs", true },
    { "An error occurred (ThrottlingException) when calling the BatchGetSecretValue operation: Rate exceeded", SM,
      nil, "unavailable", "Secrets Manager throttled the request", "retry later or lower --jobs", true },
  }

  for _, c in ipairs(cases) do
    it(c[5] .. " (" .. c[2].service .. "): " .. c[1]:sub(1, 50), function()
      local f = awscli.classify("\n" .. c[1] .. "\n", c[2], { region = c[3], exit = 255, cmd = "aws x y" })
      assert.same({ kind = c[4], reason = c[5], fix = c[6], global = c[7] }, f)
    end)
  end

  it("names an unknown error by its code and exit status and suggests running it by hand", function()
    local f = awscli.classify("An error occurred (InternalServerError) when calling the GetParameters operation",
      SSM, { exit = 254, cmd = "aws ssm get-parameters", by_hand = "aws ssm get-parameters --names …" })
    assert.same({ kind = "unavailable", reason = "aws ssm get-parameters failed (InternalServerError, exit 254)",
      fix = "run the same `aws ssm get-parameters --names …` by hand to see the full error" }, f)
    f = awscli.classify("aws: error: argument operation: Invalid choice, valid choices are:", SM,
      { exit = 252, cmd = "aws secretsmanager batch-get-secret-value" })
    assert.equal("aws secretsmanager batch-get-secret-value failed (exit 252)", f.reason)
    assert.equal("run the same `aws secretsmanager batch-get-secret-value` by hand to see the full error", f.fix)
    f = awscli.classify("InternalServiceError\nboom", SM, { code = "InternalServiceError", cmd = "aws sm b" })
    assert.equal("aws sm b failed (InternalServiceError)", f.reason)
    assert.equal("aws sm b failed", awscli.classify("", SM, { cmd = "aws sm b" }).reason)
  end)

  it("asks the service's own codes first", function()
    local svc = setmetatable({ specific = function(code, text, region)
      if code == "ParameterNotFound" then return { kind = "not_found", reason = text:sub(1, 2) .. region } end
    end }, { __index = SSM })
    -- The KMS in the name would otherwise read as a KMS failure.
    local f = awscli.classify("An error occurred (ParameterNotFound): Parameter /KMS/x not found.", svc,
      { region = "r1", cmd = "c" })
    assert.same({ kind = "not_found", reason = "Anr1" }, f)
    assert.equal("auth", awscli.classify(denied_ssm, svc, { cmd = "c" }).kind)
  end)

  it("reads the error code from the CLI's text", function()
    assert.equal("ParameterNotFound", awscli.error_code("\nAn error occurred (ParameterNotFound) when calling"))
    assert.is_nil(awscli.error_code("Unable to locate credentials"))
    assert.is_nil(awscli.error_code(nil))
  end)

  it("builds each common failure by name and refuses an unknown name", function()
    for _, name in ipairs({ "no_credentials", "expired", "kms", "denied", "rejected", "unreachable", "no_region",
      "throttled" }) do
      local f = awscli.failure(name, SM, "eu-west-1")
      assert.is_string(f.kind)
      assert.is_string(f.reason)
      assert.is_string(f.fix)
    end
    assert.has_error(function() awscli.failure("nope", SM) end)
    assert.is_nil(awscli.common("all is well", SM))
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

  it("check runs aws --version", function()
    local ctx = scripted({ code = 0, stdout = "aws-cli/2.15.0", stderr = "" })
    assert.is_true(awscli.check(ctx))
    assert.same({ { "aws", "--version" } }, ctx.calls)
    local ok, why, fix = awscli.check(scripted({ code = 1, stdout = "", stderr = "" }))
    assert.is_nil(ok)
    assert.equal("`aws --version` failed (exit 1)", why)
    assert.equal(awscli.INSTALL_FIX, fix)
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
      return { kind = "unavailable", reason = "r" }
    end)
    assert.is_nil(doc)
    assert.same({ kind = "unavailable", reason = "r", detail = "\nboom\n" }, f)
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
    local groups = awscli.by_region(reqs, parse, function(p) return p.name end)
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
