-- config.suspicious_ref: values that look like a mistyped reference are caught with their
-- corrected form; values that merely contain a colon stay plain (DESIGN §4).
local config = require("moat.config")

local BROKEN = {
  { "ssm:/x", "ssm:///x" },
  { "ssm:/app/db", "ssm:///app/db" },
  { "ssm///app/db", "ssm:///app/db" },
  { "ssm//app", "ssm:///app" },
  { "ssm//eu-west-1/app/db", "ssm://eu-west-1/app/db" },
  { "awssm:/prod/db", "awssm:///prod/db" },
  { "op:/v/i/f", "op://v/i/f" },
  { "op//v/i/f", "op://v/i/f" },
  { "op:v/i/f", "op://v/i/f" },
  { "OP:/Private/Bank/password", "op://Private/Bank/password" },
  { "env:/HOME", "env://HOME" },
  { "env:HOME", "env://HOME" },
  { "env//HOME", "env://HOME" },
  { " op://v/i/f", "op://v/i/f" },
  { "op://v/i/f ", "op://v/i/f" },
  { "op://v/i/f\n", "op://v/i/f" },
  { "\tssm:///x", "ssm:///x" },
  { " ssm:/x", "ssm:///x" },
  { " env://HOME ", "env://HOME" },
  { " op://Private/My Item/password", "op://Private/My Item/password" },
}

local PLAIN = {
  "postgres:5432", "a:b", "localhost:8080", "user:pass@host", "http://example.com", "https://x/y",
  "op", "op:", "op:/", "op://", "env:", "env:/", "ssm:", "ssm:/", "ssm:x", "ssm:x/y", "op:abc",
  "env:not a name", "env:1X", "c:/windows/path", "opx:/v/i/f", "mailto:a@b", "hunter2",
  "  padded plain value  ", "op://v/i/f", "ssm:///x", "ssm://us-east-1/x", "env://HOME",
  "awssm:///prod/db", "op:///v/i/f", "op/v/i/f", "op:x:y", "", " ", "pass: word",
}

-- Shows `v` on one line for a test name.
local function show(v)
  return '"' .. v:gsub("%c", function(c) return ("\\%d"):format(c:byte()) end) .. '"'
end

describe("config.suspicious_ref", function()
  for _, c in ipairs(BROKEN) do
    it(("corrects %s to %s"):format(show(c[1]), c[2]), function()
      assert.equal(c[2], config.suspicious_ref(c[1]))
      assert.equal(c[2], config.suspicious_ref(c[1], { "op", "ssm", "env", "awssm", "vault" }))
    end)
  end

  for _, v in ipairs(PLAIN) do
    it(("leaves %s alone"):format(show(v)), function()
      assert.is_nil(config.suspicious_ref(v))
    end)
  end

  it("knows only the schemes it is given", function()
    assert.equal("vault://kv/app", config.suspicious_ref("vault:/kv/app", { "op", "vault" }))
    assert.equal("vault://kv/app", config.suspicious_ref("vault//kv/app", { "vault" }))
    assert.is_nil(config.suspicious_ref("vault:/kv/app"))
    assert.is_nil(config.suspicious_ref("op:/v/i/f", { "vault" }))
    -- A bare scheme:body is guessed only for env and op: a user backend named like a host
    -- (redis) keeps redis:6379 plain.
    assert.is_nil(config.suspicious_ref("redis:6379", { "redis" }))
    assert.equal("redis://db/0", config.suspicious_ref("redis:/db/0", { "redis" }))
  end)

  it("ignores what is not a string", function()
    assert.is_nil(config.suspicious_ref(nil))
    assert.is_nil(config.suspicious_ref(42))
  end)
end)
