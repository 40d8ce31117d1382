-- Fuzz target: moat.c.yaml's load. Any input gives either a well-formed node tree within
-- the documented limits or nil and a "chunk:line:col: message" without control bytes.
local yaml = require("moat.c.yaml")

local M = {}

local CHUNK = "fuzz.yaml"
local KINDS = { scalar = true, map = true, seq = true }

local function _mark(n)
  assert(math.type(n.line) == "integer" and n.line >= 1, "node line is not a positive integer")
  assert(math.type(n.col) == "integer" and n.col >= 1, "node col is not a positive integer")
end

-- Walks the tree below `n`; returns the number of nodes in it.
local function _walk(n, depth)
  assert(type(n) == "table" and KINDS[n.kind], "bad node kind " .. tostring(n and n.kind))
  _mark(n)
  if n.kind == "scalar" then
    assert(type(n.value) == "string", "scalar without a string value")
    assert(type(n.plain) == "boolean", "scalar without a boolean plain")
    return 1
  end
  assert(depth < yaml.LIMITS.depth, "nested deeper than the limit")
  local count = 1
  if n.kind == "seq" then
    assert(type(n.items) == "table", "seq without items")
    for i, item in ipairs(n.items) do
      assert(i <= #n.items)
      count = count + _walk(item, depth + 1)
    end
    return count
  end
  assert(type(n.pairs) == "table", "map without pairs")
  local seen = {}
  for _, p in ipairs(n.pairs) do
    assert(type(p) == "table" and p.key and p.value, "map pair without key or value")
    assert(p.key.kind == "scalar", "map key is not a scalar")
    assert(not seen[p.key.value], "duplicate key accepted")
    assert(p.key.value ~= "<<" or not p.key.plain, "merge key accepted")
    seen[p.key.value] = true
    count = count + _walk(p.key, depth + 1) + _walk(p.value, depth + 1)
  end
  return count
end

-- Checks one input; raises on any broken property.
function M.check(data)
  local root, err = yaml.load(data, CHUNK)
  if root == nil then
    assert(type(err) == "string", "nil without a message")
    assert(err:find("^fuzz%.yaml:%d+:%d+: %S"), "message without file:line:col: " .. err)
    assert(not err:find("[%z\1-\31\127]"), "control bytes in the message")
    return
  end
  assert(#data <= yaml.LIMITS.bytes, "input over the size limit accepted")
  if root.kind == "empty" then return end
  local count = _walk(root, 0)
  assert(count <= yaml.LIMITS.nodes, "more nodes than the limit accepted")
  -- Anything that loads must load again to the same shape (no hidden state between calls).
  local again = assert(yaml.load(data, CHUNK))
  assert(again.kind == root.kind and again.line == root.line and again.col == root.col)
end

return M
