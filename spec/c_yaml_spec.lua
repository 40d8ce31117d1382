local yaml = require("moat.c.yaml")

local function load(text)
  return yaml.load(text, "config.yaml")
end

-- The refusal message for `text`, asserting that it is one.
local function refusal(text)
  local root, err = load(text)
  assert.is_nil(root)
  assert.is_string(err)
  return err
end

describe("moat.c.yaml", function()
  describe("shapes", function()
    it("builds a mapping of scalars with 1-based positions", function()
      local root = assert(load("name: demo\nimage: 'alpine:3'\n"))
      assert.same({
        kind = "map", line = 1, col = 1,
        pairs = {
          { key = { kind = "scalar", value = "name", plain = true, line = 1, col = 1 },
            value = { kind = "scalar", value = "demo", plain = true, line = 1, col = 7 } },
          { key = { kind = "scalar", value = "image", plain = true, line = 2, col = 1 },
            value = { kind = "scalar", value = "alpine:3", plain = false, line = 2, col = 8 } },
        },
      }, root)
    end)

    it("keeps mapping pairs in document order", function()
      local root = assert(load("z: 1\na: 2\nm: 3\n"))
      local keys = {}
      for i, p in ipairs(root.pairs) do keys[i] = p.key.value end
      assert.same({ "z", "a", "m" }, keys)
    end)

    it("builds block sequences with item positions", function()
      local root = assert(load("list:\n  - one\n  - \"two\"\n"))
      local seq = root.pairs[1].value
      assert.equal("seq", seq.kind)
      assert.same({ 2, 3 }, { seq.line, seq.col })
      assert.same({ kind = "scalar", value = "one", plain = true, line = 2, col = 5 }, seq.items[1])
      assert.same({ kind = "scalar", value = "two", plain = false, line = 3, col = 5 }, seq.items[2])
    end)

    it("builds flow sequences and mappings", function()
      local root = assert(load("command: [python, -m, 'app']\nenv: {A: 1, B: \"x y\"}\n"))
      local cmd = root.pairs[1].value
      assert.equal("seq", cmd.kind)
      assert.same({ 1, 10 }, { cmd.line, cmd.col })
      assert.same({ "python", "-m", "app" }, { cmd.items[1].value, cmd.items[2].value, cmd.items[3].value })
      assert.same({ true, true, false }, { cmd.items[1].plain, cmd.items[2].plain, cmd.items[3].plain })
      assert.same({ 1, 19 }, { cmd.items[2].line, cmd.items[2].col })
      local env = root.pairs[2].value
      assert.equal("map", env.kind)
      assert.same({ 2, 6 }, { env.line, env.col })
      assert.equal("B", env.pairs[2].key.value)
      assert.same({ 2, 13 }, { env.pairs[2].key.line, env.pairs[2].key.col })
      assert.same({ kind = "scalar", value = "x y", plain = false, line = 2, col = 16 }, env.pairs[2].value)
    end)

    it("nests mappings in sequences", function()
      local root = assert(load("- a: 1\n  b: 2\n- c\n"))
      assert.equal("seq", root.kind)
      assert.equal("map", root.items[1].kind)
      assert.same({ 1, 3 }, { root.items[1].line, root.items[1].col })
      assert.equal("b", root.items[1].pairs[2].key.value)
      assert.same({ 2, 3 }, { root.items[1].pairs[2].key.line, root.items[1].pairs[2].key.col })
      assert.equal("c", root.items[2].value)
    end)

    it("does no type resolution: plain true, 42 and null stay strings", function()
      local root = assert(load("[true, 42, null, ~, 1.5, '42']"))
      local got = {}
      for i, n in ipairs(root.items) do got[i] = { n.value, n.plain } end
      assert.same({ { "true", true }, { "42", true }, { "null", true }, { "~", true },
        { "1.5", true }, { "42", false } }, got)
    end)

    it("gives a missing value as an empty plain scalar", function()
      local root = assert(load("a:\nb: 1\n"))
      assert.same({ kind = "scalar", value = "", plain = true, line = 1, col = 3 }, root.pairs[1].value)
    end)

    it("keeps literal block scalars exact", function()
      local root = assert(load("key: |\n  -----BEGIN-----\n  abc  \n\n  def\nnext: x\n"))
      local v = root.pairs[1].value
      assert.equal("-----BEGIN-----\nabc  \n\ndef\n", v.value)
      assert.is_false(v.plain)
      assert.same({ 1, 6 }, { v.line, v.col })
    end)

    it("keeps chomping indicators of block scalars", function()
      local root = assert(load("a: |-\n  x\n  y\n\nb: |+\n  z\n\n\nc: >-\n  p\n  q\n"))
      assert.equal("x\ny", root.pairs[1].value.value)
      assert.equal("z\n\n\n", root.pairs[2].value.value)
      assert.equal("p q", root.pairs[3].value.value)
    end)

    it("folds folded block scalars", function()
      local root = assert(load("a: >\n  one\n  two\n\n  three\n    indented\n"))
      assert.equal("one two\nthree\n  indented\n", root.pairs[1].value.value)
    end)

    it("decodes escapes in double-quoted scalars and keeps single quotes literal", function()
      local root = assert(load("a: \"tab\\there \\u00e9 \\x41\"\nb: 'it''s \\n'\n"))
      assert.equal("tab\there \xc3\xa9 A", root.pairs[1].value.value)
      assert.equal("it's \\n", root.pairs[2].value.value)
    end)

    it("keeps UTF-8 text byte for byte and counts columns in characters", function()
      local root = assert(load("café: naïve ✓\n"))
      assert.equal("café", root.pairs[1].key.value)
      assert.equal("naïve ✓", root.pairs[1].value.value)
      assert.equal(7, root.pairs[1].value.col)
    end)

    it("folds multi-line plain and quoted scalars", function()
      local root = assert(load("a: one\n  two\nb: \"x\n  y\"\n"))
      assert.equal("one two", root.pairs[1].value.value)
      assert.equal("x y", root.pairs[2].value.value)
    end)

    it("gives a top-level scalar", function()
      assert.same({ kind = "scalar", value = "hello", plain = true, line = 1, col = 1 }, load("hello\n"))
      assert.same({ kind = "scalar", value = "", plain = false, line = 1, col = 5 }, load('--- ""\n'))
    end)

    it("gives an empty node for empty input, comments only, or an empty document", function()
      for _, text in ipairs({ "", "\n\n", "# just a comment\n", "---\n", "--- # c\n...\n" }) do
        assert.same({ kind = "empty", line = 1, col = 1 }, load(text))
      end
    end)

    it("accepts one explicit document, a %YAML directive and a UTF-8 BOM", function()
      assert.equal("map", load("%YAML 1.1\n---\na: 1\n...\n").kind)
      assert.equal("a", load("\xef\xbb\xbfa: 1\n").pairs[1].key.value)
    end)

    it("uses 'yaml' as the chunk name by default", function()
      local _, err = yaml.load("a: 1\na: 2\n")
      assert.equal("yaml:2:1: duplicate key 'a' (first at 1:1)", err)
    end)

    it("raises on a non-string argument", function()
      assert.has_error(function() yaml.load({}) end)
      assert.has_error(function() yaml.load(nil) end)
    end)
  end)

  describe("limits", function()
    it("publishes its limits", function()
      assert.same({ bytes = 1048576, depth = 64, nodes = 10000 }, yaml.LIMITS)
    end)

    it("accepts exactly 1 MiB and refuses one byte more before parsing", function()
      local text = "a: " .. ("b"):rep(1048576 - 4) .. "\n"
      assert.equal(1048576, #text)
      assert.equal("map", assert(load(text)).kind)
      -- the extra byte would be a syntax error, but the size is reported first
      assert.equal("config.yaml:1:1: file is 1048577 bytes; the limit is 1 MiB", refusal(text .. "["))
    end)

    it("accepts 64 levels of nesting and refuses 65", function()
      local ok = assert(load(("["):rep(64) .. ("]"):rep(64)))
      local depth, n = 0, ok
      while n and n.kind == "seq" do depth, n = depth + 1, n.items[1] end
      assert.equal(64, depth)
      assert.equal("config.yaml:1:65: nested more than 64 levels deep; the limit is 64",
        refusal(("["):rep(65) .. ("]"):rep(65)))
    end)

    it("counts block nesting too", function()
      local lines = {}
      for i = 0, 64 do lines[#lines + 1] = ("  "):rep(i) .. "k:" end
      assert.equal("config.yaml:65:129: nested more than 64 levels deep; the limit is 64",
        refusal(table.concat(lines, "\n") .. " x\n"))
    end)

    it("accepts 10 000 nodes and refuses the 10 001st", function()
      -- the sequence itself is one node
      assert.equal(9999, #assert(load(("- x\n"):rep(9999))).items)
      assert.equal("config.yaml:10000:3: more than 10000 nodes (every key, value and list item counts);"
        .. " that is the limit", refusal(("- x\n"):rep(10000)))
    end)

    it("counts keys and values as nodes", function()
      local out = {}
      for i = 1, 5000 do out[i] = ("k%d: v"):format(i) end
      assert.matches("^config.yaml:5000:%d+: more than 10000 nodes", refusal(table.concat(out, "\n")))
    end)
  end)

  describe("refusals", function()
    it("refuses anchors and aliases", function()
      assert.equal("config.yaml:1:7: anchors and aliases are not allowed", refusal("base: &b {a: 1}\n"))
      assert.equal("config.yaml:2:8: anchors and aliases are not allowed", refusal("a: 1\nb: [1, *x]\n"))
      assert.equal("config.yaml:1:3: anchors and aliases are not allowed", refusal("- &s\n  a: 1\n"))
    end)

    it("refuses explicit tags", function()
      assert.equal("config.yaml:3:7: tags (like !!str or !name) are not allowed",
        refusal("a: 1\nb: 2\nc:    !!str 3\n"))
      assert.equal("config.yaml:1:4: tags (like !!str or !name) are not allowed", refusal("a: !foo\n  b: 1\n"))
      assert.equal("config.yaml:1:1: tags (like !!str or !name) are not allowed", refusal("!!seq [1]\n"))
      assert.equal("config.yaml:1:4: tags (like !!str or !name) are not allowed", refusal("a: ! x\n"))
      assert.matches("tags %(%%TAG directives%) are not allowed", refusal("%TAG ! tag:x.org,2000:\n--- a\n"))
    end)

    it("refuses merge keys", function()
      assert.equal("config.yaml:2:3: merge keys (<<) are not allowed", refusal("env:\n  <<: {A: 1}\n"))
    end)

    it("allows a quoted '<<' key, which is not a merge", function()
      local root = assert(load("'<<': 1\n"))
      assert.equal("<<", root.pairs[1].key.value)
    end)

    it("refuses duplicate keys, naming the key and where it first was", function()
      assert.equal("config.yaml:4:3: duplicate key 'A' (first at 2:3)",
        refusal("env:\n  A: 1\n  B: 2\n  A: 3\n"))
      assert.equal("config.yaml:1:8: duplicate key 'a' (first at 1:2)", refusal("{a: 1, \"a\": 2}"))
    end)

    it("allows the same key in different mappings", function()
      local root = assert(load("x: {a: 1}\ny: {a: 2}\n"))
      assert.equal(2, #root.pairs)
    end)

    it("keeps control characters and long keys out of the duplicate message", function()
      local long = ("k"):rep(100)
      local err = refusal(long .. ": 1\n" .. long .. ": 2\n")
      assert.matches("duplicate key '" .. ("k"):rep(64) .. "%.%.%.' %(first at 1:1%)$", err)
      err = refusal('"a\\tb": 1\n"a\\tb": 2\n')
      assert.equal("config.yaml:2:1: duplicate key 'a?b' (first at 1:1)", err)
    end)

    it("refuses complex keys", function()
      assert.equal("config.yaml:1:3: complex mapping keys (a list or mapping used as a key) are not allowed",
        refusal("? [a, b]\n: 1\n"))
      assert.matches("^config.yaml:1:2: complex mapping keys", refusal("{{a: 1}: 2}"))
    end)

    it("refuses a second document", function()
      assert.equal("config.yaml:3:1: more than one document (---) in the file; keep one",
        refusal("a: 1\n...\n---\nb: 2\n"))
      assert.equal("config.yaml:2:1: more than one document (---) in the file; keep one", refusal("---\n---\n"))
    end)

    it("reports syntax errors with libyaml's problem and mark", function()
      assert.equal("config.yaml:2:8: mapping values are not allowed in this context",
        refusal("name: demo\n  image: alpine\n"))
      assert.equal("config.yaml:2:1: did not find expected ',' or ']'"
        .. " (while parsing a flow sequence that starts at 1:4)", refusal("a: [1, 2\n"))
      assert.matches("^config.yaml:1:6: found unexpected end of stream", refusal("a: \"x"))
    end)

    it("refuses invalid UTF-8 at its position", function()
      assert.equal("config.yaml:2:11: invalid text: invalid trailing UTF-8 octet"
        .. " (the file must be UTF-8 without control characters)", refusal("a: 1\nname: caf\xc3\x28\n"))
      assert.matches("^config.yaml:1:1: invalid text: ", refusal("\xff\xfea\0:\0"))
    end)

    it("refuses NUL and other control characters", function()
      assert.equal("config.yaml:1:5: invalid text: control characters are not allowed"
        .. " (the file must be UTF-8 without control characters)", refusal("a: b\0c\n"))
      assert.matches("control characters are not allowed", refusal("a: \27[31m\n"))
    end)

    it("never puts a value into a refusal", function()
      local err = refusal("token: s3cr3t-value\nx: [s3cr3t-value\n")
      assert.is_nil(err:find("s3cr3t", 1, true))
    end)
  end)
end)
