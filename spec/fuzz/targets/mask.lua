-- Fuzz target: moat.c.mask against a naive reference masker written here from SECURITY.md
-- item 7 and the mask module's documented rules. The input chooses the secrets, the minimum
-- length, the replacement, the stream and the points where it is split into feeds:
--   byte 1: min = 1 + b % 8, replacement = REPLACEMENTS[(b >> 3) % 4 + 1]
--   byte 2: number of secrets (b % 4); each secret: a length byte (b % 32), then its bytes
--   next byte: number of split points (b % 8), then one byte per point (scaled to the stream)
--   the rest: the stream.
local mask = require("moat.c.mask")

local M = {}

local REPLACEMENTS = { false, "", "*", "<concealed by moat>" }
local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

local function _base64(s, urlsafe, pad)
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = s:byte(i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    local quad = {}
    for k = 1, 4 do
      local v = (n >> (6 * (4 - k))) & 63
      quad[k] = B64:sub(v + 1, v + 1)
    end
    local keep = c and 4 or b and 3 or 2
    out[#out + 1] = table.concat(quad, "", 1, keep) .. (pad and ("="):rep(4 - keep) or "")
  end
  local r = table.concat(out)
  if urlsafe then r = r:gsub("[+/]", { ["+"] = "-", ["/"] = "_" }) end
  return r
end

local function _percent(s)
  return (s:gsub("[^A-Za-z0-9%-._~]", function(c) return ("%%%02X"):format(c:byte()) end))
end

local JSON_ESC = { ['"'] = '\\"', ["\\"] = "\\\\", ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t" }

local function _json(s)
  return (s:gsub('[%z\1-\31"\\]', function(c) return JSON_ESC[c] or ("\\u%04x"):format(c:byte()) end))
end

-- Returns the set of patterns a masker must look for, derived independently of the C code.
function M.patterns(values, min)
  local set = {}
  local function add(p) if #p >= min then set[p] = true end end
  for _, v in ipairs(values) do
    add(v)
    if v:find("\n", 1, true) then
      for line in (v .. "\n"):gmatch("([^\n]*)\n") do add((line:gsub("\r$", ""))) end
    end
    add(_base64(v, false, true))
    add(_base64(v, false, false))
    add(_base64(v, true, true))
    add(_base64(v, true, false))
    add(_percent(v))
    add(_json(v))
  end
  return set
end

-- The reference: at each position replace the longest pattern that starts there.
function M.reference(input, set, repl)
  local lens = {}
  for p in pairs(set) do lens[#p] = true end
  local sizes = {}
  for n in pairs(lens) do sizes[#sizes + 1] = n end
  table.sort(sizes, function(a, b) return a > b end)
  local out, i = {}, 1
  while i <= #input do
    local hit = nil
    for _, n in ipairs(sizes) do
      if set[input:sub(i, i + n - 1)] and i + n - 1 <= #input then hit = n break end
    end
    if hit then
      out[#out + 1] = repl
      i = i + hit
    else
      out[#out + 1] = input:sub(i, i)
      i = i + 1
    end
  end
  return table.concat(out)
end

-- Splits the fuzz input into its parts (see the header).
function M.decode(data)
  local pos = 1
  local function byte()
    local b = data:byte(pos) or 0
    pos = pos + 1
    return b
  end
  local b = byte()
  local min, repl = 1 + b % 8, REPLACEMENTS[(b >> 3) % 4 + 1]
  local values = {}
  for i = 1, byte() % 4 do
    local len = byte() % 32
    values[i] = data:sub(pos, pos + len - 1)
    pos = pos + len
  end
  local points = {}
  for i = 1, byte() % 8 do points[i] = byte() end
  return { min = min, repl = repl, values = values, points = points, stream = data:sub(pos) }
end

local function _chunks(stream, points)
  local cuts = { 0 }
  for _, p in ipairs(points) do cuts[#cuts + 1] = (p * #stream) // 255 end
  cuts[#cuts + 1] = #stream
  table.sort(cuts)
  local chunks = {}
  for i = 2, #cuts do chunks[#chunks + 1] = stream:sub(cuts[i - 1] + 1, cuts[i]) end
  return chunks
end

-- Checks one input; raises on any broken property.
function M.check(data)
  local c = M.decode(data)
  local opts = { min = c.min, replacement = c.repl or nil }
  local want = M.patterns(c.values, c.min)
  local got, longest = {}, 0
  for _, p in ipairs(mask.patterns(c.values, opts)) do
    assert(want[p], "mask.patterns derived a pattern the reference does not")
    assert(not got[p], "mask.patterns listed a pattern twice")
    got[p] = true
    longest = math.max(longest, #p)
  end
  for p in pairs(want) do assert(got[p], "mask.patterns missed a pattern the reference derives") end
  local expect = M.reference(c.stream, want, c.repl or "<concealed by moat>")
  local m <close> = mask.new(c.values, opts)
  local out = {}
  for _, chunk in ipairs(_chunks(c.stream, c.points)) do
    out[#out + 1] = m:feed(chunk)
    local so_far = table.concat(out)
    assert(expect:sub(1, #so_far) == so_far, "masker output differs from the reference")
    assert(m:held() <= math.max(longest - 1, 0), "masker holds back more than the longest pattern - 1")
  end
  out[#out + 1] = m:finish()
  assert(m:held() == 0, "masker holds bytes after finish")
  assert(table.concat(out) == expect, "masker output differs from the reference at the end")
  if next(want) == nil then assert(expect == c.stream, "output without patterns is not the input") end
end

return M
