local dotenv = require("moat.dotenv")

-- Returns name -> value for `text`; fails the test on a parse error.
local function values(text)
  local entries, errs = dotenv.parse(text, ".env")
  assert.is_nil(errs and table.concat(errs, "\n"))
  local out = {}
  for _, e in ipairs(entries) do out[e.name] = e.value end
  return out
end

describe("moat.dotenv", function()
  local CASES = {
    { "plain", "A=b\n", { A = "b" } },
    { "no final newline", "A=b", { A = "b" } },
    { "empty value", "A=\nB=''\nC=\"\"\n", { A = "", B = "", C = "" } },
    { "= inside a value", "URL=postgres://u@h/db?x=1&y=2\n", { URL = "postgres://u@h/db?x=1&y=2" } },
    { "references stay references", "DB=op://vault/item/password\n", { DB = "op://vault/item/password" } },
    { "export prefix", "export A=1\nexport\tB=2\n", { A = "1", B = "2" } },
    { "a key named export", "export=x\n", { export = "x" } },
    { "spaces around =", "A = b\n", { A = "b" } },
    { "blank lines and comments", "\n  \n# c\n  # indented\nA=1\n\n", { A = "1" } },
    { "comment after an unquoted value", "A=b # note\nB=c\t# tab\n", { A = "b", B = "c" } },
    { "# without a space is part of the value", "A=b#c\nB=#x\n", { A = "b#c", B = "#x" } },
    { "only a comment after =", "A= # nothing\n", { A = "" } },
    { "trailing spaces trimmed", "A=b  \t\n", { A = "b" } },
    { "inner spaces kept", "A=two words\n", { A = "two words" } },
    { "single quotes are literal", [[A='x\ny $HOME "q"']] .. "\n", { A = [[x\ny $HOME "q"]] } },
    { "double-quote escapes", [[A="l1\nl2\tt \"q\" \\ \$HOME"]] .. "\n", { A = 'l1\nl2\tt "q" \\ $HOME' } },
    { "unknown escapes keep the backslash", [[A="C:\dir\x"]] .. "\n", { A = [[C:\dir\x]] } },
    { "no variable expansion", "A=$HOME\nB=\"${HOME}\"\n", { A = "$HOME", B = "${HOME}" } },
    { "comment after a quoted value", "A='x' # c\nB=\"y\"# c\n", { A = "x", B = "y" } },
    { "# inside quotes", "A='x # y'\nB=\"a #b\"\n", { A = "x # y", B = "a #b" } },
    { "multi-line quoted value", "KEY=\"-----BEGIN-----\nabc\n-----END-----\"\nB=1\n",
      { KEY = "-----BEGIN-----\nabc\n-----END-----", B = "1" } },
    { "CRLF line ends", "A=b\r\nB='c'\r\n\r\n# x\r\nC=\"d\"\r\n", { A = "b", B = "c", C = "d" } },
    { "a UTF-8 byte order mark", "\239\187\191A=1\n", { A = "1" } },
    { "quotes inside an unquoted value", "A=it's\n", { A = "it's" } },
  }
  for _, c in ipairs(CASES) do
    it("parses: " .. c[1], function()
      assert.same(c[3], values(c[2]))
    end)
  end

  local BAD = {
    { "a line without =", "A=1\nJUSTTEXT\n", ".env:2:9: expected = after JUSTTEXT" },
    { "a name starting with a digit", "1A=x\n", ".env:1:1: expected KEY=VALUE" },
    { "a name with a dash", "MY-VAR=x\n", ".env:1:3: expected = after MY" },
    { "an unclosed single quote", "A=1\nB='oops\n", ".env:2:3: the single quote is never closed" },
    { "an unclosed double quote", "B=\"oops\n", ".env:1:3: the double quote is never closed" },
    { "text after the closing quote", "A='x' y\n", ".env:1:6: unexpected text after the closing quote" },
    { "a duplicate name", "A=1\nA=2\n", ".env:2:1: A is already set at .env:1:1" },
    { "a NUL byte", "A=x\0y\n", ".env:1:3: A must not contain NUL bytes" },
    { "an export without a value", "export A\n", ".env:1:9: expected = after A" },
  }
  for _, c in ipairs(BAD) do
    it("refuses with file:line:col: " .. c[1], function()
      local entries, errs = dotenv.parse(c[2], ".env")
      assert.is_nil(entries)
      assert.matches(c[3], table.concat(errs, "\n"), 1, true)
    end)
  end

  it("reports every bad line at once", function()
    local _, errs = dotenv.parse("1=a\nB\nC=ok\n-D=x\n", ".env")
    assert.equal(3, #errs)
  end)

  it("gives each entry the position of its value and its key", function()
    local entries = assert(dotenv.parse("# head\nexport TOKEN = op://v/i/f\n", "dir/.env"))
    assert.equal("dir/.env:2:16", entries[1].where)
    assert.equal("dir/.env:2:8", entries[1].key_at)
  end)

  it("never puts a value in an error message", function()
    local _, errs = dotenv.parse("A='hunter2-secret-value\n", ".env")
    assert.is_nil(table.concat(errs, "\n"):find("hunter2", 1, true))
  end)

  it("parses a large file quickly", function()
    local lines = {}
    for i = 1, 20000 do lines[i] = ("K%d=value-%d # c"):format(i, i) end
    local t0 = os.clock()
    local entries = assert(dotenv.parse(table.concat(lines, "\n"), ".env"))
    assert.equal(20000, #entries)
    assert.is_true(os.clock() - t0 < 2)
  end)

  it("reads only regular files, capped", function()
    local t = require("support.moat")
    local dir = t.tmpdir()
    t.write(dir .. "/.env", "A=1\n")
    assert.equal("A=1\n", dotenv.read(dir .. "/.env"))
    assert.is_nil(dotenv.read(dir))
    assert.is_nil(dotenv.read(dir .. "/missing"))
    t.write(dir .. "/big.env", ("x"):rep(dotenv.MAX_BYTES + 10))
    assert.is_nil(dotenv.read(dir .. "/big.env"))
    t.rmtree(dir)
  end)
end)
