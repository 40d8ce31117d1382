-- Specs for moat.c.mask, the streaming masker (SECURITY.md item 7), checked against a naive reference.
local mask = require("moat.c.mask")

local R = "<concealed by moat>"

-- The reference: scan the whole input, at each position replace the longest pattern that starts there.
local function reference(input, patterns, repl)
  local out, i = {}, 1
  while i <= #input do
    local best = 0
    for _, p in ipairs(patterns) do
      if #p > best and input:sub(i, i + #p - 1) == p then best = #p end
    end
    if best > 0 then
      out[#out + 1] = repl
      i = i + best
    else
      out[#out + 1] = input:sub(i, i)
      i = i + 1
    end
  end
  return table.concat(out)
end

local function longest(patterns)
  local n = 0
  for _, p in ipairs(patterns) do n = math.max(n, #p) end
  return n
end

-- Feeds the chunks in order and returns the whole output; checks the hold-back bound after each feed.
local function run(m, chunks, bound)
  local out = {}
  for _, c in ipairs(chunks) do
    out[#out + 1] = m:feed(c)
    if bound then assert(m:held() <= bound, "held " .. m:held() .. " > " .. bound) end
  end
  out[#out + 1] = m:finish()
  assert.equal(0, m:held())
  return table.concat(out)
end

local function bytes(s)
  local t = {}
  for i = 1, #s do t[i] = s:sub(i, i) end
  return t
end

local function random_split(s, rnd)
  local chunks, i = {}, 1
  while i <= #s do
    local n = rnd(0, 12)
    chunks[#chunks + 1] = s:sub(i, i + n - 1)
    i = i + n
  end
  return chunks
end

local function slurp(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

describe("moat.c.mask", function()
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
      }, mask.patterns({ v }))
    end)
    it("drops patterns shorter than min and duplicates", function()
      -- plain ASCII: value, percent and JSON forms are the same string; base64 of 9 bytes has no padding
      assert.same({ "abcdefghi", "YWJjZGVmZ2hp" }, mask.patterns({ "abcdefghi", "abcdefghi" }))
      assert.same({}, mask.patterns({ "abc" }))
      assert.same({ "abc", "YWJj" }, mask.patterns({ "abc" }, { min = 3 }))
      local lines = mask.patterns({ "long line one\nab\n" })
      assert.same({ "long line one\nab\n", "long line one" }, { lines[1], lines[2] })
      for _, p in ipairs(lines) do assert.is_true(#p >= 6) end
    end)
    it("raises on misuse", function()
      assert.has_error(function() mask.new("secret") end)
      assert.has_error(function() mask.new({ "secret", 42 }) end)
      assert.has_error(function() mask.new({ "secretvalue" }, { mni = 3 }) end,
        "bad argument #2 (unknown option 'mni')")
      assert.has_error(function() mask.new({ "secretvalue" }, { min = 0 }) end)
      assert.has_error(function() mask.new({ "secretvalue" }, { replacement = 1 }) end)
    end)
  end)

  describe("masking", function()
    local secret = "hunter2hunter2"

    it("replaces the value and passes everything else through", function()
      local m = mask.new({ secret })
      assert.equal("token=" .. R .. "; again " .. R .. "\n",
        run(m, { "token=" .. secret .. "; again " .. secret .. "\n" }))
    end)

    it("holds nothing back when no pattern could start", function()
      local m = mask.new({ secret })
      assert.equal("plain text\n", m:feed("plain text\n"))
      assert.equal(0, m:held())
      assert.equal("x", m:feed("xhun"))
      assert.equal(3, m:held())
      assert.equal("hunt!", m:feed("t!"))
      assert.equal(0, m:held())
    end)

    it("masks a value split at every possible byte boundary across two feeds", function()
      local input = "before " .. secret .. " middle " .. secret .. secret .. " after"
      local want = "before " .. R .. " middle " .. R .. R .. " after"
      for k = 0, #input do
        local m = mask.new({ secret })
        assert.equal(want, run(m, { input:sub(1, k), input:sub(k + 1) }, #secret - 1))
      end
    end)

    it("masks a value fed one byte at a time, and no partial output ever holds it", function()
      local m = mask.new({ secret })
      local input = "a" .. secret .. "b" .. secret:sub(1, 5) .. "c"
      local seen = {}
      for _, b in ipairs(bytes(input)) do
        seen[#seen + 1] = m:feed(b)
        assert.is_nil(table.concat(seen):find(secret, 1, true))
      end
      seen[#seen + 1] = m:finish()
      assert.equal("a" .. R .. "b" .. secret:sub(1, 5) .. "c", table.concat(seen))
    end)

    it("a delayed write cannot leak: the held prefix stays held however long nothing arrives", function()
      local m = mask.new({ secret })
      assert.equal("", m:feed(secret:sub(1, 9)))
      for _ = 1, 100 do assert.equal("", m:feed("")) end
      assert.equal(9, m:held())
      assert.equal(R, m:feed(secret:sub(10)))
    end)

    it("masks base64, URL and JSON forms", function()
      local v = "s3cr3t\xfb\xff+ \"quoted\"\n"
      local m = mask.new({ v })
      local enc = mask.patterns({ v })
      assert.equal(8, #enc) -- value, its first line, 4 base64 forms, URL, JSON
      assert.equal(string.rep(R, #enc, " | "), run(m, { table.concat(enc, " | ") }))
      assert.equal("url=" .. R .. "&x=1", run(m, { "url=s3cr3t%FB%FF%2B%20%22quoted%22%0A&x=1" }))
      assert.equal('{"k":"' .. R .. '"}', run(m, { '{"k":"s3cr3t\xfb\xff+ \\"quoted\\"\\n"}' }))
      assert.equal("b64 " .. R .. ".", run(m, { "b64 czNjcjN0+/8rICJxdW90ZWQiCg==." }))
      assert.equal("b64 " .. R .. "!", run(m, { "b64 czNjcjN0+/8rICJxdW90ZWQiCg!" }))
      assert.equal("b64url " .. R .. ".", run(m, { "b64url czNjcjN0-_8rICJxdW90ZWQiCg==." }))
      assert.equal("b64url " .. R .. "!", run(m, bytes("b64url czNjcjN0-_8rICJxdW90ZWQiCg!")))
    end)

    it("masks each line of a multi-line value, and the whole value as one", function()
      local pem = slurp(MOAT_ROOT .. "/spec/fixtures/mask/fake_key.pem")
      local m = mask.new({ pem })
      local lines = {}
      for line in pem:gmatch("[^\n]+") do lines[#lines + 1] = line end
      assert.equal("key: " .. R .. "end", run(m, { "key: " .. pem .. "end" }))
      -- printed with CRLF line ends and indented, line by line
      local out = run(m, random_split("  " .. table.concat(lines, "\r\n  ") .. "\r\n",
        function(a, b) return math.random(a, b) end))
      assert.equal("  " .. string.rep(R, #lines, "\r\n  ") .. "\r\n", out)
      for _, line in ipairs(lines) do assert.is_nil(out:find(line, 1, true)) end
    end)

    it("handles overlapping patterns leftmost first", function()
      local m = mask.new({ "abcdefgh", "defghijk" }, { replacement = "#" })
      local pats = { "abcdefgh", "defghijk" }
      for _, input in ipairs({ "abcdefghijk", "xxdefghijkxx", "abcdefgxdefghijk", "abcdefgh", "abcdefghij",
        "abcdedefghijkabcdefgh" }) do
        assert.equal(reference(input, pats, "#"), run(m, bytes(input), 7))
        assert.equal(reference(input, pats, "#"), run(m, { input }))
      end
      assert.equal("#ijk", run(m, { "abcdefghijk" }))
      assert.equal("abcdefgx#", run(m, { "abcdefgxdefghijk" }))
    end)

    it("prefers the longer of two values where one is a prefix of the other", function()
      local m = mask.new({ "abcdef", "abcdefgh" }, { replacement = "#" })
      assert.equal("", m:feed("abcdef"))
      assert.equal(6, m:held())
      assert.equal("#", m:feed("gh"))
      assert.equal("#g!", run(m, { "abcdefg!" }))
      assert.equal("#", run(m, { "abcdef" }))
      assert.equal("x#y#", run(m, bytes("xabcdefghyabcdef")))
    end)

    it("starts a fresh stream after finish", function()
      local m = mask.new({ secret })
      assert.equal("", m:feed("hunter"))
      assert.equal("hunter", m:finish())
      assert.equal("2hunter2", run(m, { "2hunter2" }))
    end)

    it("with no values, passes everything through", function()
      local m = mask.new({})
      assert.equal("anything\0at all", run(m, { "anything", "\0at all" }, 0))
      assert.equal(0, m:held())
    end)

    it("leaves several MiB of random data without secrets unchanged byte for byte", function()
      math.randomseed(20261128)
      local parts = {}
      for i = 1, 4 * 1024 do
        local t = {}
        for j = 1, 1024 do t[j] = math.random(0, 255) end
        parts[i] = string.char(table.unpack(t))
      end
      local data = table.concat(parts)
      local values = { "correct horse battery staple", "hunter2hunter2", "-----BEGIN KEY-----\nabcdefgh\n" }
      local m = mask.new(values)
      local bound = longest(mask.patterns(values)) - 1
      local chunks, i = {}, 1
      while i <= #data do
        local n = math.random(1, 70000)
        chunks[#chunks + 1] = data:sub(i, i + n - 1)
        i = i + n
      end
      local out = run(m, chunks, bound)
      assert.equal(#data, #out)
      assert.is_true(out == data)
    end)

    it("matches the reference masker on random inputs split at random points", function()
      math.randomseed(7)
      local rnd = math.random
      local function word(alphabet, min, max)
        local t = {}
        for i = 1, rnd(min, max) do
          local k = rnd(1, #alphabet)
          t[i] = alphabet:sub(k, k)
        end
        return table.concat(t)
      end
      for _ = 1, 1500 do
        local values = {}
        for i = 1, rnd(0, 4) do values[i] = word("ab\nc", 1, 9) end
        local opts = { min = rnd(1, 4), replacement = rnd(0, 1) == 0 and "#" or "" }
        local pats = mask.patterns(values, opts)
        local input = word("abc\n\r", 0, 120)
        local m = mask.new(values, opts)
        local bound = math.max(longest(pats) - 1, 0)
        local want = reference(input, pats, opts.replacement)
        assert.equal(want, run(m, random_split(input, rnd), bound))
        assert.equal(want, run(m, bytes(input), bound))
      end
    end)
  end)

  describe("lifetime", function()
    it("close is idempotent, __close works, and a closed masker raises", function()
      local m = mask.new({ "secretvalue" })
      m:close()
      m:close()
      assert.has_error(function() m:feed("x") end, "masker is closed")
      assert.has_error(function() m:held() end, "masker is closed")
      local held
      do
        local c <close> = mask.new({ "secretvalue" })
        held = c
        assert.equal("", c:feed("secret"))
      end
      assert.has_error(function() held:finish() end, "masker is closed")
    end)
  end)
end)
