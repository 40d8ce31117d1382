local json = require("moat.c.json")

-- Decodes `text`, asserting success.
local function dec(text)
  local v, err = json.decode(text)
  assert.is_nil(err)
  return v
end

describe("moat.c.json", function()
  describe("decode", function()
    it("decodes objects, arrays and scalars", function()
      local v = dec('{"s":"x","i":42,"f":1.5,"t":true,"n":null,"a":[1,"2"],"o":{"k":false}}')
      assert.equal("x", v.s)
      assert.equal(42, v.i)
      assert.equal(math.type(v.i), "integer")
      assert.equal(1.5, v.f)
      assert.equal("float", math.type(v.f))
      assert.is_true(v.t)
      assert.equal(json.null, v.n)
      assert.same({ 1, "2" }, v.a)
      assert.is_false(v.o.k)
    end)

    it("marks arrays with json.array_mt and leaves objects plain", function()
      local v = dec('{"a":[],"o":{}}')
      assert.equal(json.array_mt, getmetatable(v.a))
      assert.is_nil(getmetatable(v.o))
      assert.is_nil(getmetatable(v))
    end)

    it("decodes any top-level value", function()
      assert.equal("x", dec('"x"'))
      assert.equal(7, dec("7"))
      assert.equal(json.null, dec("null"))
      assert.is_false(dec(" false "))
    end)

    it("makes json.null a light userdata distinct from nil and false", function()
      assert.equal("userdata", type(json.null))
      assert.not_equal(nil, json.null)
      assert.not_equal(false, json.null)
    end)

    it("keeps integers up to 64 bits and reads 1.0 as a float", function()
      assert.equal(math.maxinteger, dec("9223372036854775807"))
      assert.equal(math.mininteger, dec("-9223372036854775808"))
      assert.equal("float", math.type(dec("1.0")))
      assert.equal(1e300, dec("1e300"))
    end)

    it("decodes escapes, unicode and NUL byte-exactly", function()
      assert.equal('q"b\\s/\b\f\n\r\t', dec('"q\\"b\\\\s\\/\\b\\f\\n\\r\\t"'))
      assert.equal("\xc3\xa9\xe2\x9c\x93", dec('"\\u00e9\\u2713"'))
      assert.equal("\xf0\x9f\x98\x80", dec('"\\ud83d\\ude00"'))
      assert.equal("a\0b", dec('"a\\u0000b"'))
      assert.equal("caf\xc3\xa9", dec('"caf\xc3\xa9"'))
    end)

    it("reports errors with line and column and no input content", function()
      local v, err = json.decode('{\n  "password": "hunter2-secret",\n  "x": tru\n}')
      assert.is_nil(v)
      assert.equal("invalid JSON at line 3, column 10: invalid syntax", err)
      assert.is_nil(err:find("hunter2", 1, true))
      v, err = json.decode('"hunter2-unterminated')
      assert.is_nil(v)
      assert.matches("^invalid JSON at line 1, column %d+: unexpected end of input$", err)
      assert.is_nil(err:find("hunter2", 1, true))
    end)

    it("refuses empty input, trailing text, bad UTF-8, huge numbers and NUL in keys", function()
      local cases = {
        [""] = "unexpected end of input",
        ["[1] x"] = "unexpected text after the value",
        ['"\xff"'] = "invalid UTF-8",
        ["1e400"] = "number out of range",
        ["9223372036854775808"] = "number out of range",
        ['{"a\\u0000":1}'] = "NUL byte in an object key",
        ["[1,]"] = "invalid syntax",
      }
      for text, what in pairs(cases) do
        local v, err = json.decode(text)
        assert.is_nil(v, text)
        assert.matches("^invalid JSON at line %d+, column %-?%d+: " .. what:gsub("%p", "%%%0") .. "$", err)
      end
    end)

    it("refuses nesting deeper than jansson allows, without crashing", function()
      local v, err = json.decode(("["):rep(100000) .. ("]"):rep(100000))
      assert.is_nil(v)
      assert.matches("nested too deeply", err)
    end)

    it("raises on a non-string argument", function()
      assert.has_error(function() json.decode({}) end)
    end)
  end)

  describe("encode", function()
    it("produces the canonical form: sorted keys, no whitespace", function()
      local v = dec('{"b":1,"a":[1,2,{"d":null,"c":"x"}]}')
      assert.equal('{"a":[1,2,{"c":"x","d":null}],"b":1}', json.encode(v, { canonical = true }))
    end)

    it("is deterministic whatever the insertion order", function()
      local a, b = {}, {}
      local keys = {}
      for i = 1, 200 do keys[i] = ("key%03d"):format(i) end
      for i = 1, 200 do a[keys[i]] = i end
      for i = 200, 1, -1 do b[keys[i]] = i end
      local ea = json.encode(a, { canonical = true })
      assert.equal(ea, json.encode(b, { canonical = true }))
      assert.equal(ea, json.encode(a))
      assert.matches('^{"key001":1,"key002":2,', ea)
    end)

    it("sorts keys bytewise", function()
      assert.equal('{"B":1,"a":2,"aa":3,"\xc3\xa9":4}', json.encode({ ["\xc3\xa9"] = 4, aa = 3, a = 2, B = 1 }))
    end)

    it("pretty-prints with two spaces and sorted keys", function()
      assert.equal('{\n  "a": [\n    1,\n    2\n  ],\n  "b": {}\n}',
        json.encode({ b = {}, a = { 1, 2 } }, { pretty = true }))
    end)

    it("encodes scalars", function()
      assert.equal("1", json.encode(1))
      assert.equal("-9223372036854775808", json.encode(math.mininteger))
      assert.equal("1.5", json.encode(1.5))
      assert.equal("1.0", json.encode(1.0))
      assert.equal("true", json.encode(true))
      assert.equal("null", json.encode(json.null))
      assert.equal('"x"', json.encode("x"))
    end)

    it("escapes only what JSON requires", function()
      assert.equal('"a/b \\"q\\" \\\\ \\n\\t\\u0001 \xc3\xa9"', json.encode('a/b "q" \\ \n\t\1 \xc3\xa9'))
      assert.equal('"a\\u0000b"', json.encode("a\0b"))
    end)

    it("tells arrays from objects", function()
      assert.equal("[1,2,3]", json.encode({ 1, 2, 3 }))
      assert.equal("{}", json.encode({}))
      assert.equal("[]", json.encode(json.array({})))
      assert.equal('{"a":[]}', json.encode({ a = setmetatable({}, json.array_mt) }))
      assert.equal('[1,"x",null]', json.encode({ 1, "x", json.null }))
    end)

    it("json.array marks and returns its table", function()
      local t = {}
      assert.equal(t, json.array(t))
      assert.equal(json.array_mt, getmetatable(t))
      assert.has_error(function() json.array("x") end)
    end)

    it("round-trips values, including empty arrays and NUL", function()
      for _, text in ipairs({
        '{"a":[],"b":{},"c":[[]],"d":"x\\u0000y","e":-1.25,"f":[true,false,null]}',
        '[{"k":"\xe2\x9c\x93"},[1,[2,[3]]]]',
        '"\\u0000"', "[]", "{}", "0",
      }) do
        assert.equal(text, json.encode(dec(text), { canonical = true }))
      end
    end)

    it("refuses what JSON cannot hold, without raising", function()
      local cases = {
        { "\xff\xfe", "string is not valid UTF-8" },
        { { a = "ok", b = { "\xc3" } }, "string is not valid UTF-8" },
        { 0 / 0, "number is NaN or infinite" },
        { math.huge, "number is NaN or infinite" },
        { { x = -math.huge }, "number is NaN or infinite" },
        { { 1, 2, x = 3 }, "table mixes list items and keys, or has a key that is not a string" },
        { { [1] = 1, [3] = 3 }, "table mixes list items and keys, or has a key that is not a string" },
        { { [1.5] = 1 }, "table mixes list items and keys, or has a key that is not a string" },
        { { [true] = 1 }, "table mixes list items and keys, or has a key that is not a string" },
        { { ["\xff"] = 1 }, "object key is not valid UTF-8" },
        { print, "cannot encode a function" },
        { { f = print }, "cannot encode a function" },
        { coroutine.create(print), "cannot encode a userdata or thread" },
        { io.stdout, "cannot encode a userdata or thread" },
      }
      for i, c in ipairs(cases) do
        local s, err = json.encode(c[1])
        assert.is_nil(s, i)
        assert.equal(c[2], err)
      end
    end)

    it("never quotes the bad string in its message", function()
      local s, err = json.encode({ token = "s3cret\xff" })
      assert.is_nil(s)
      assert.is_nil(err:find("s3cret", 1, true))
    end)

    it("refuses reference cycles and nesting over 200 levels", function()
      local t = {}
      t.self = t
      local s, err = json.encode(t)
      assert.is_nil(s)
      assert.equal("nested more than 200 levels deep (or a table contains itself)", err)
      local deep = {}
      local cur = deep
      for _ = 1, 200 do cur[1] = {} cur = cur[1] end
      assert.is_string(json.encode(deep))
      cur[1] = {}
      assert.is_nil(json.encode(deep))
    end)

    it("checks its options", function()
      assert.has_error(function() json.encode({}, { indent = 2 }) end)
      assert.has_error(function() json.encode({}, "pretty") end)
      assert.has_error(function() json.encode({}, { pretty = true, canonical = true }) end)
      assert.has_error(function() json.encode() end)
    end)

    it("frees jansson's trees on every path", function()
      local f = assert(io.open("/proc/self/statm", "r"))
      local function rss() f:seek("set") return tonumber(f:read("l"):match("^%d+ (%d+)")) * 4 end
      local big = {}
      for i = 1, 2000 do big[i] = { name = ("n%d"):format(i), v = i } end
      big[2001] = "\xff"
      for _ = 1, 20 do json.encode(big) json.decode(("[1,"):rep(3000) .. "x") end
      collectgarbage("collect")
      local before = rss()
      for _ = 1, 200 do
        assert.is_nil(json.encode(big))
        assert.is_nil(json.decode(("[1,"):rep(3000) .. "x"))
      end
      collectgarbage("collect")
      local grown = rss() - before
      f:close()
      assert.is_true(grown < 32 * 1024)
    end)
  end)
end)
