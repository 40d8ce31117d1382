-- Specs for moat.scrub, the one policy for hiding values: which patterns a value gives, the
-- streaming masker built from them, text for people and the argv check (SECURITY.md 3, 7, 22).
local scrub = require("moat.scrub")

local R = scrub.PLACEHOLDER

local function slurp(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

local function bytes(s)
  local t = {}
  for i = 1, #s do t[i] = s:sub(i, i) end
  return t
end

-- Feeds the chunks through a fresh masker for `values`; returns the whole output.
local function masked(values, chunks)
  local m <close> = scrub.masker(values)
  local out = {}
  for _, c in ipairs(chunks) do out[#out + 1] = m:feed(c) end
  out[#out + 1] = m:finish()
  return table.concat(out)
end

describe("moat.scrub", function()
  it("has one threshold and one placeholder", function()
    assert.equal(6, scrub.MIN)
    assert.equal("<concealed by moat>", scrub.PLACEHOLDER)
  end)

  describe("patterns", function()
    it("derives the value, its lines and its base64, URL and JSON forms", function()
      local v = "p@ss/w\xc3\xb6rd\"?>?>\r\n\\x\t\1yz"
      assert.same({
        v,
        "p@ss/w\xc3\xb6rd\"?>?>",
        "\\x\t\1yz",
        "cEBzcy93w7ZyZCI/Pj8+DQpceAkBeXo=",
        "cEBzcy93w7ZyZCI/Pj8+DQpceAkBeXo",
        "cEBzcy93w7ZyZCI_Pj8-DQpceAkBeXo=",
        "cEBzcy93w7ZyZCI_Pj8-DQpceAkBeXo",
        "p%40ss%2Fw%C3%B6rd%22%3F%3E%3F%3E%0D%0A%5Cx%09%01yz",
        "p@ss/w\xc3\xb6rd\\\"?>?>\\r\\n\\\\x\\t\\u0001yz",
      }, scrub.patterns({ v }))
    end)

    it("leaves values and lines under MIN alone, encodings included, and drops duplicates", function()
      -- plain ASCII: value, URL and JSON forms are the same string; base64 of 9 bytes has no padding
      assert.same({ "abcdefghi", "YWJjZGVmZ2hp" }, scrub.patterns({ "abcdefghi", "abcdefghi" }))
      assert.same({}, scrub.patterns({ "abc" }))
      -- 5 bytes: its base64 would be 8 characters long, but a value that short is not hidden at all
      assert.same({}, scrub.patterns({ "abcde" }))
      assert.same({ "abcdef", "YWJjZGVm" }, scrub.patterns({ "abcdef" }))
      local lines = scrub.patterns({ "long line one\nab\n" })
      assert.same({ "long line one\nab\n", "long line one" }, { lines[1], lines[2] })
      for _, p in ipairs(lines) do assert.is_true(#p >= scrub.MIN) end
      assert.same({}, scrub.patterns({}))
      assert.same({}, scrub.patterns(nil))
    end)

    it("raises on a value that is not a string", function()
      assert.has_error(function() scrub.patterns({ "secret-value", 42 }) end,
        "scrub: values[2] is a number, not a string")
    end)
  end)

  describe("masker", function()
    it("masks the value and its base64, URL and JSON forms however the stream is split", function()
      local v = "s3cr3t\xfb\xff+ \"quoted\"\n"
      local enc = scrub.patterns({ v })
      assert.equal(8, #enc) -- value, its first line, 4 base64 forms, URL, JSON
      assert.equal(string.rep(R, #enc, " | "), masked({ v }, { table.concat(enc, " | ") }))
      assert.equal("url=" .. R .. "&x=1", masked({ v }, { "url=s3cr3t%FB%FF%2B%20%22quoted%22%0A&x=1" }))
      assert.equal('{"k":"' .. R .. '"}', masked({ v }, { '{"k":"s3cr3t\xfb\xff+ \\"quoted\\"\\n"}' }))
      assert.equal("b64 " .. R .. ".", masked({ v }, { "b64 czNjcjN0+/8rICJxdW90ZWQiCg==." }))
      assert.equal("b64 " .. R .. "!", masked({ v }, { "b64 czNjcjN0+/8rICJxdW90ZWQiCg!" }))
      assert.equal("b64url " .. R .. ".", masked({ v }, { "b64url czNjcjN0-_8rICJxdW90ZWQiCg==." }))
      assert.equal("b64url " .. R .. "!", masked({ v }, bytes("b64url czNjcjN0-_8rICJxdW90ZWQiCg!")))
    end)

    it("masks each line of a multi-line value, and the whole value as one", function()
      local pem = slurp(MOAT_ROOT .. "/spec/fixtures/mask/fake_key.pem")
      local lines = {}
      for line in pem:gmatch("[^\n]+") do lines[#lines + 1] = line end
      assert.equal("key: " .. R .. "end", masked({ pem }, { "key: " .. pem .. "end" }))
      -- printed with CRLF line ends and indented, line by line, one byte at a time
      local out = masked({ pem }, bytes("  " .. table.concat(lines, "\r\n  ") .. "\r\n"))
      assert.equal("  " .. string.rep(R, #lines, "\r\n  ") .. "\r\n", out)
      for _, line in ipairs(lines) do assert.is_nil(out:find(line, 1, true)) end
    end)

    it("passes short values through", function()
      assert.equal("pin 1234 ok", masked({ "1234" }, { "pin 1234 ok" }))
    end)
  end)

  describe("text", function()
    it("indents continuation lines so they cannot pass for moat's own", function()
      assert.equal("first\n    moat: error: forged", scrub.text("first\nmoat: error: forged\n"))
    end)

    it("hides values and their lines, escapes control characters, caps the length", function()
      local s = scrub.text("a\27[31m top-secret-1 line-two-xx\r\n", { "top-secret-1", "zz\nline-two-xx" })
      assert.equal("a\\x1b[31m " .. R .. " " .. R, s)
      assert.equal(503, #scrub.text(string.rep("x", 2000)))
      assert.equal("xxxx...", scrub.text(string.rep("x", 20), {}, 4))
      assert.equal("", scrub.text(nil))
      assert.equal("42", scrub.text(42))
      assert.equal("\\x00\\x7f\\x0d", scrub.text("\0\127\r"))
    end)

    it("hides before it caps, so no part of a value survives the cut", function()
      local v = ("v"):rep(600)
      assert.equal("x" .. R, scrub.text("x" .. v, { v }))
    end)

    it("hides encoded forms too", function()
      local v = "hunter2hunter2"
      local b64 = require("moat.c.system").base64_encode(v)
      assert.equal("got " .. R, scrub.text("got " .. b64, { v }))
    end)
  end)

  describe("contains", function()
    it("finds any pattern of any value in a string", function()
      local values = { "short", "top-secret-1", "zz\nline-two-xx" }
      assert.is_true(scrub.contains("--token=top-secret-1", values))
      assert.is_true(scrub.contains("x" .. require("moat.c.system").base64_encode("top-secret-1"), values))
      assert.is_true(scrub.contains("line-two-xx", values))
      assert.is_true(scrub.contains("top%20secret-1", { "top secret-1" }))
      assert.is_false(scrub.contains("short", values))
      assert.is_false(scrub.contains("nothing here", values))
      assert.is_false(scrub.contains("anything", {}))
    end)
  end)

  describe("overriding", function()
    it("a wrapped function is what the others use", function()
      local forms = scrub.forms
      finally(function() scrub.forms = forms end)
      -- A site that also hides each value reversed.
      scrub.forms = function(v)
        local out = forms(v)
        if #out > 0 then out[#out + 1] = v:reverse() end
        return out
      end
      local values = { "abcdefgh" }
      assert.equal("x " .. R, scrub.text("x hgfedcba", values))
      assert.is_true(scrub.contains("hgfedcba", values))
      assert.equal("<" .. R .. ">", masked(values, { "<hgfe", "dcba>" }))
    end)

    it("a changed MIN applies everywhere", function()
      local min = scrub.MIN
      finally(function() scrub.MIN = min end)
      scrub.MIN = 3
      assert.same({ "abc", "YWJj" }, scrub.patterns({ "abc" }))
      assert.equal("x " .. R, scrub.text("x abc", { "abc" }))
    end)
  end)
end)

describe("moat.scrub.elide", function()
  it("replaces quoted stretches, first quote to last, or to the end when unclosed", function()
    assert.equal("bad '<elided>' here", scrub.elide("bad 'v1' and 'v2' here"))
    assert.equal('bad "<elided>"', scrub.elide('bad "it\'s a value"'))
    assert.equal("value '<elided>'", scrub.elide("value 'cut off and never closed"))
    assert.equal("nothing quoted", scrub.elide("nothing quoted"))
    assert.equal("x '<elided>' y", scrub.elide("x 'multi\nline' y"))
  end)
end)
