-- Specs for moat.c.mask, the streaming matcher (SECURITY.md item 7), checked against a naive
-- reference. Which patterns a secret gives is moat.scrub's business (spec/scrub_spec.lua).
local mask = require("moat.c.mask")

local R = "<concealed by moat>"

-- The reference: scan the whole input, at each position replace the longest pattern that
-- starts there. Also returns, per output token, its input start (0-based) and the output
-- length once it is written.
local function reference(input, patterns, repl)
  local out, marks, len, i = {}, {}, 0, 1
  while i <= #input do
    local best = 0
    for _, p in ipairs(patterns) do
      if #p > best and input:sub(i, i + #p - 1) == p then best = #p end
    end
    local tok = best > 0 and repl or input:sub(i, i)
    out[#out + 1] = tok
    len = len + #tok
    marks[#marks + 1] = { start = i - 1, len = len }
    i = i + math.max(best, 1)
  end
  return table.concat(out), marks
end

local function longest(patterns)
  local n = 0
  for _, p in ipairs(patterns) do n = math.max(n, #p) end
  return n
end

-- How much output must be out after n input bytes when at most `bound` may be held back:
-- every token that starts before n - bound is decided.
local function due(marks, n, bound)
  local need = 0
  for _, mk in ipairs(marks) do
    if mk.start >= n - bound then break end
    need = mk.len
  end
  return need
end

-- Feeds the chunks in order and returns the whole output. With `check` = { patterns, repl }
-- it also checks after each feed that the output so far is a prefix of the reference's and
-- that no more than (longest pattern - 1) input bytes are held back.
local function run(m, chunks, check)
  local out, fed, want, marks, bound = {}, 0, nil, nil, nil
  if check then
    want, marks = reference(table.concat(chunks), check[1], check[2])
    bound = math.max(longest(check[1]) - 1, 0)
  end
  for _, c in ipairs(chunks) do
    out[#out + 1] = m:feed(c)
    fed = fed + #c
    if check then
      local so_far = table.concat(out)
      assert(want:sub(1, #so_far) == so_far, "output so far is not a prefix of the reference's")
      assert(#so_far >= due(marks, fed, bound), "more than longest - 1 bytes held back")
    end
  end
  out[#out + 1] = m:finish()
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

describe("moat.c.mask", function()
  describe("new", function()
    it("raises on misuse", function()
      assert.has_error(function() mask.new("secret", R) end)
      assert.has_error(function() mask.new({ "secret", 42 }, R) end,
        "bad argument #1 to 'new' (patterns[2] is a number, expected a string)")
      assert.has_error(function() mask.new({ "secret", "" }, R) end,
        "bad argument #1 to 'new' (patterns[2] is empty)")
      assert.has_error(function() mask.new({ "secretvalue" }) end)
      assert.has_error(function() mask.new({ "secretvalue" }, 1 > 0) end)
    end)
    it("refuses patterns too large to mask", function()
      local big = ("x"):rep(4 << 20)
      assert.has_error(function() mask.new({ big .. "a", big .. "b", big .. "c", big .. "d", "e" }, R) end,
        "mask.new: the patterns are too large to mask")
    end)
  end)

  describe("masking", function()
    local secret = "hunter2hunter2"

    it("replaces each pattern and passes everything else through", function()
      local m = mask.new({ secret }, R)
      assert.equal("token=" .. R .. "; again " .. R .. "\n",
        run(m, { "token=" .. secret .. "; again " .. secret .. "\n" }, { { secret }, R }))
    end)

    it("takes patterns as bytes, whatever they hold, and any replacement", function()
      local p = "a%b.c*[d]^$\0\195\169(-+?)"
      local m = mask.new({ p, "\0\1\2" }, "")
      assert.equal("x.y", run(m, { "x" .. p .. ".\0\1\2y" }))
      m = mask.new({ "abc" }, "<abc>")
      assert.equal("<abc><abc>ab", run(m, bytes("abcabcab")))
    end)

    it("holds nothing back when no pattern could start", function()
      local m = mask.new({ secret }, R)
      assert.equal("plain text\n", m:feed("plain text\n"))
      assert.equal("x", m:feed("xhun"))
      assert.equal("hunt!", m:feed("t!"))
      assert.equal("", m:finish())
    end)

    it("masks a pattern split at every possible byte boundary across two feeds", function()
      local input = "before " .. secret .. " middle " .. secret .. secret .. " after"
      local want = "before " .. R .. " middle " .. R .. R .. " after"
      for k = 0, #input do
        local m = mask.new({ secret }, R)
        assert.equal(want, run(m, { input:sub(1, k), input:sub(k + 1) }, { { secret }, R }))
      end
    end)

    it("masks a pattern fed one byte at a time, and no partial output ever holds it", function()
      local m = mask.new({ secret }, R)
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
      local m = mask.new({ secret }, R)
      assert.equal("", m:feed(secret:sub(1, 9)))
      for _ = 1, 100 do assert.equal("", m:feed("")) end
      assert.equal(R, m:feed(secret:sub(10)))
    end)

    it("handles overlapping patterns leftmost first", function()
      local pats = { "abcdefgh", "defghijk" }
      local m = mask.new(pats, "#")
      for _, input in ipairs({ "abcdefghijk", "xxdefghijkxx", "abcdefgxdefghijk", "abcdefgh", "abcdefghij",
        "abcdedefghijkabcdefgh" }) do
        assert.equal((reference(input, pats, "#")), run(m, bytes(input), { pats, "#" }))
        assert.equal((reference(input, pats, "#")), run(m, { input }))
      end
      assert.equal("#ijk", run(m, { "abcdefghijk" }))
      assert.equal("abcdefgx#", run(m, { "abcdefgxdefghijk" }))
    end)

    it("prefers the longer of two patterns where one is a prefix of the other", function()
      local m = mask.new({ "abcdef", "abcdefgh" }, "#")
      assert.equal("", m:feed("abcdef"))
      assert.equal("#", m:feed("gh"))
      assert.equal("#g!", run(m, { "abcdefg!" }))
      assert.equal("#", run(m, { "abcdef" }))
      assert.equal("x#y#", run(m, bytes("xabcdefghyabcdef")))
    end)

    it("starts a fresh stream after finish", function()
      local m = mask.new({ secret }, R)
      assert.equal("", m:feed("hunter"))
      assert.equal("hunter", m:finish())
      assert.equal("2hunter2", run(m, { "2hunter2" }))
    end)

    it("with no patterns, passes everything through at once", function()
      local m = mask.new({}, R)
      assert.equal("anything", m:feed("anything"))
      assert.equal("anything\0at all", run(m, { "anything", "\0at all" }, { {}, R }))
    end)

    it("leaves several MiB of random data without patterns in it unchanged byte for byte", function()
      math.randomseed(20261128)
      local parts = {}
      for i = 1, 4 * 1024 do
        local t = {}
        for j = 1, 1024 do t[j] = math.random(0, 255) end
        parts[i] = string.char(table.unpack(t))
      end
      local data = table.concat(parts)
      local pats = { "correct horse battery staple", "hunter2hunter2", "-----BEGIN KEY-----\nabcdefgh\n", "abcdefgh" }
      local m = mask.new(pats, R)
      local bound = longest(pats) - 1
      local out, held, i = {}, 0, 1
      while i <= #data do
        local chunk = data:sub(i, i + math.random(1, 70000) - 1)
        local o = m:feed(chunk)
        out[#out + 1] = o
        held = held + #chunk - #o
        assert(held <= bound, "more than longest - 1 bytes held back")
        i = i + #chunk
      end
      out[#out + 1] = m:finish()
      out = table.concat(out)
      assert.equal(#data, #out)
      assert.is_true(out == data)
    end)

    it("matches the reference masker on random patterns and inputs split at random points", function()
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
        local pats = {}
        for i = 1, rnd(0, 5) do pats[i] = word("ab\nc", 1, 9) end
        local repl = rnd(0, 1) == 0 and "#" or ""
        local input = word("abc\n\r", 0, 120)
        local m = mask.new(pats, repl)
        local want = reference(input, pats, repl)
        assert.equal(want, run(m, random_split(input, rnd), { pats, repl }))
        assert.equal(want, run(m, bytes(input), { pats, repl }))
      end
    end)

    -- Bytes that start no pattern (with the byte after them) are passed over without
    -- stepping the automaton; inputs mostly made of such bytes, with one-byte patterns and
    -- patterns cut at chunk ends, exercise that path against the reference.
    it("matches the reference where most bytes can start no pattern", function()
      math.randomseed(11)
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
        local pats = {}
        for i = 1, rnd(1, 4) do pats[i] = word("abc", 1, 6) end
        local input = word("abcxyz.....", 0, 160)
        local m = mask.new(pats, "#")
        local want = reference(input, pats, "#")
        assert.equal(want, run(m, random_split(input, rnd), { pats, "#" }))
        assert.equal(want, run(m, { input }, { pats, "#" }))
      end
      local m = mask.new({ "ab" }, "#")
      assert.equal("xxx", m:feed("xxxa"))
      assert.equal("#x", m:feed("bx"))
      assert.equal("xx", m:feed("xxa"))
      assert.equal("ac", m:feed("c"))
      assert.equal("", m:finish())
    end)

    -- Where every pattern has four bytes or more, the masker slides a window over the input
    -- and goes back to the root when the bytes it holds start no pattern: inputs made of the
    -- patterns' own alphabet (hex, as values often are), with patterns sharing prefixes and
    -- cut at chunk ends, exercise that path against the reference.
    it("matches the reference with patterns of four bytes or more in text of their alphabet", function()
      math.randomseed(13)
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
        local pats, alphabet = {}, rnd(0, 1) == 0 and "0123" or "0123456789abcdef"
        for i = 1, rnd(1, 6) do
          pats[i] = i > 1 and rnd(0, 1) == 0 and pats[i - 1]:sub(1, rnd(4, #pats[i - 1])) .. word(alphabet, 0, 4)
            or word(alphabet, 4, 12)
        end
        local parts = {}
        for i = 1, rnd(1, 8) do
          parts[i] = rnd(0, 2) == 0 and pats[rnd(1, #pats)] or word(alphabet .. " \n", 0, 40)
        end
        local input = table.concat(parts)
        local m = mask.new(pats, "#")
        local want = reference(input, pats, "#")
        assert.equal(want, run(m, random_split(input, rnd), { pats, "#" }))
        assert.equal(want, run(m, { input }, { pats, "#" }))
      end
    end)

    it("returns a chunk with nothing to mask as it is, and masks across chunks after one", function()
      local pats = { "0123456789abcdef01234567", "deadbeefdeadbeefdeadbeef" }
      local m = mask.new(pats, R)
      local text = ("0123456789abcdef 89abcdef0123 deadbeef\n"):rep(2000)
      assert.equal(text, m:feed(text))
      assert.equal("x " .. R .. " y\n", run(m, { "x 0123456789ab", "cdef01234567 y\n" }))
      assert.equal(text .. R .. "\n", run(m, { text .. pats[2] .. "\n" }))
      assert.equal("", m:finish())
    end)

    it("keeps the two-byte filter for patterns shorter than four bytes", function()
      local m = mask.new({ "ab" }, "#")
      assert.equal("xxx", m:feed("xxxa"))
      assert.equal("#x", m:feed("bx"))
      assert.equal("xx", m:feed("xxa"))
      assert.equal("ac", m:feed("c"))
      assert.equal("", m:finish())
    end)
  end)

  describe("lifetime", function()
    it("close is idempotent, __close works, and a closed masker raises", function()
      local m = mask.new({ "secretvalue" }, R)
      m:close()
      m:close()
      assert.has_error(function() m:feed("x") end, "masker is closed")
      assert.has_error(function() m:finish() end, "masker is closed")
      local held
      do
        local c <close> = mask.new({ "secretvalue" }, R)
        held = c
        assert.equal("", c:feed("secret"))
      end
      assert.has_error(function() held:finish() end, "masker is closed")
    end)
  end)
end)
