-- Hostile YAML (SECURITY.md 10): every input is refused with a named error, quickly.
local yaml = require("moat.c.yaml")
local hostile = require("fixtures.yaml.hostile")

local function names()
  local out = {}
  for k, v in pairs(hostile) do
    if type(v) == "function" then out[#out + 1] = k end
  end
  table.sort(out)
  return out
end

-- Loads `text`, returning root, err and the CPU seconds spent.
local function timed(text)
  local t0 = os.clock()
  local root, err = yaml.load(text, "hostile.yaml")
  return root, err, os.clock() - t0
end

describe("hostile YAML", function()
  it("has an expected message for every fixture", function()
    local list = names()
    assert.is_true(#list >= 20)
    for _, name in ipairs(list) do
      assert.is_string(hostile.expect[name], name)
    end
  end)

  for _, name in ipairs(names()) do
    it("refuses " .. name .. " with a named error in under a second", function()
      local text = hostile[name]()
      assert.is_string(text)
      local root, err, secs = timed(text)
      assert.is_nil(root, name)
      assert.matches("^hostile%.yaml:%d+:%d+: ", err)
      assert.matches(hostile.expect[name], err)
      assert.is_true(secs < 1.0, ("%s took %.3f s"):format(name, secs))
    end)
  end

  it("stops billion laughs at the first anchor", function()
    local _, err = timed(hostile.billion_laughs())
    assert.equal("hostile.yaml:1:4: anchors and aliases are not allowed", err)
  end)

  it("refuses 10 000-deep flow and block nesting at level 65", function()
    assert.equal("hostile.yaml:1:65: nested more than 64 levels deep; the limit is 64",
      select(2, timed(hostile.deep_flow())))
    assert.equal("hostile.yaml:1:129: nested more than 64 levels deep; the limit is 64",
      select(2, timed(hostile.deep_block())))
    assert.equal("hostile.yaml:65:65: nested more than 64 levels deep; the limit is 64",
      select(2, timed(hostile.deep_block_map())))
  end)

  it("refuses a 5 MiB file by its size", function()
    local text = hostile.huge_file()
    assert.is_true(#text >= 5 * 1048576)
    assert.equal(("hostile.yaml:1:1: file is %d bytes; the limit is 1 MiB"):format(#text), select(2, timed(text)))
  end)

  it("refuses 20 000 items at the 10 001st node", function()
    assert.equal("hostile.yaml:10000:3: more than 10000 nodes (every key, value and list item counts);"
      .. " that is the limit", select(2, timed(hostile.many_items())))
  end)

  it("refuses random bytes from other seeds too", function()
    local x = 7
    for _ = 1, 50 do
      local bytes = {}
      for i = 1, 4096 do
        x = (x * 1103515245 + 12345) % 2147483648
        bytes[i] = string.char((x >> 16) % 256)
      end
      local root, err, secs = timed(table.concat(bytes))
      assert.is_nil(root)
      assert.matches("^hostile%.yaml:%d+:%d+: ", err)
      assert.is_true(secs < 1.0)
    end
  end)

  it("parses any 1 MiB of one repeated pattern in under a second", function()
    local limit = yaml.LIMITS.bytes
    for _, unit in ipairs({ "[", "{", "- ", "? ", "a: ", "'", '"', "#", " ", "\n", "\t", ":", ",", "a b ", "--- " }) do
      local text = unit:rep(limit // #unit)
      local root, err, secs = timed(text)
      assert.is_true(root ~= nil or type(err) == "string", unit)
      assert.is_true(secs < 1.0, ("%q took %.3f s"):format(unit, secs))
    end
  end)

  it("keeps memory small on a large accepted file", function()
    collectgarbage("collect")
    local before = collectgarbage("count")
    local out = {}
    for i = 1, 4000 do out[i] = ("k%d: %s"):format(i, ("v"):rep(200)) end
    local root = assert(yaml.load(table.concat(out, "\n"), "big.yaml"))
    assert.equal(4000, #root.pairs)
    assert.is_true(collectgarbage("count") - before < 64 * 1024)
  end)

  -- Resident set size in KiB, from /proc (Linux).
  local function rss_kib()
    local f = assert(io.open("/proc/self/statm", "r"))
    local pages = tonumber(f:read("l"):match("^%d+ (%d+)"))
    f:close()
    return pages * 4
  end

  it("frees libyaml's state on every path (no growth over thousands of refusals)", function()
    local texts = { "a: 1\nb: [x, {c: &d 1}]\n", "a: [1, 2\n", "a: \xff\n", "---\n---\n", ("["):rep(100) }
    for _ = 1, 200 do
      for _, t in ipairs(texts) do yaml.load(t, "x.yaml") end
    end
    collectgarbage("collect")
    local before = rss_kib()
    for _ = 1, 2000 do
      for _, t in ipairs(texts) do assert.is_nil(yaml.load(t, "x.yaml")) end
    end
    collectgarbage("collect")
    -- libyaml allocates tens of KiB per parser: a leak would add hundreds of MiB here.
    assert.is_true(rss_kib() - before < 32 * 1024)
  end)
end)

-- The same inputs through config.parse: the plain-words translation of libyaml's messages
-- keeps every refusal named, positioned and free of control characters.
describe("hostile YAML through config.parse", function()
  local config = require("moat.config")

  for _, name in ipairs(names()) do
    it("refuses " .. name .. " with file:line:col", function()
      local cfg, errs = config.parse(hostile[name](), "hostile.yaml", "/w")
      assert.is_nil(cfg)
      assert.matches("^hostile%.yaml:%d+:%d+: ", errs[1])
      assert.matches(hostile.expect[name], errs[1])
      assert.is_nil(errs[1]:find("[%z\1-\31\127]"))
    end)
  end

  it("translates random bytes without raising", function()
    local x = 11
    for _ = 1, 50 do
      local bytes = {}
      for i = 1, 2048 do
        x = (x * 1103515245 + 12345) % 2147483648
        bytes[i] = string.char((x >> 16) % 128)
      end
      local ok, cfg, errs = pcall(config.parse, table.concat(bytes), "hostile.yaml", "/w")
      assert.is_true(ok, tostring(cfg))
      if not cfg then assert.matches("^hostile%.yaml:%d+:%d+: ", errs[1]) end
    end
  end)
end)
