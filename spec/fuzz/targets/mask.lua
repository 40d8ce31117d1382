-- Fuzz target: moat.scrub's patterns and the moat.c.mask matcher built from them, against an
-- independent derivation and a naive reference masker written here from SECURITY.md item 7
-- and the documented rules. The input chooses the secrets, the minimum length (set as
-- scrub.MIN for the check), the replacement, the stream and the points where it is split:
--   byte 1: min = 1 + b % 8, replacement = REPLACEMENTS[(b >> 3) % 4 + 1]
--   byte 2: number of secrets (b % 4); each secret: a length byte (b % 32), then its bytes
--   next byte: number of split points (b % 8), then one byte per point (scaled to the stream)
--   the rest: the stream.
local mask = require("moat.c.mask")
local scrub = require("moat.scrub")

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

-- Returns the set of patterns a masker must look for, derived independently of moat.scrub:
-- for each value of at least `min` bytes, the value, its lines of at least `min` bytes, its
-- four base64 forms, its URL and JSON escapes.
function M.patterns(values, min)
  local set = {}
  for _, v in ipairs(values) do
    if #v >= min then
      set[v] = true
      if v:find("\n", 1, true) then
        for line in (v .. "\n"):gmatch("([^\n]*)\n") do
          line = line:gsub("\r$", "")
          if #line >= min then set[line] = true end
        end
      end
      set[_base64(v, false, true)] = true
      set[_base64(v, false, false)] = true
      set[_base64(v, true, true)] = true
      set[_base64(v, true, false)] = true
      set[_percent(v)] = true
      set[_json(v)] = true
    end
  end
  return set
end

-- The reference: at each position replace the longest pattern that starts there. Returns the
-- output and, per output token, its input start (0-based) and the output length after it.
function M.reference(input, set, repl)
  local lens = {}
  for p in pairs(set) do lens[#p] = true end
  local sizes = {}
  for n in pairs(lens) do sizes[#sizes + 1] = n end
  table.sort(sizes, function(a, b) return a > b end)
  local out, marks, len, i = {}, {}, 0, 1
  while i <= #input do
    local hit = nil
    for _, n in ipairs(sizes) do
      if i + n - 1 <= #input and set[input:sub(i, i + n - 1)] then hit = n break end
    end
    local tok = hit and repl or input:sub(i, i)
    out[#out + 1] = tok
    len = len + #tok
    marks[#marks + 1] = { start = i - 1, len = len }
    i = i + (hit or 1)
  end
  return table.concat(out), marks
end

-- How much output must be out after n input bytes when at most `bound` may be held back:
-- every token that starts before n - bound is decided by then.
local function _due(marks, n, bound)
  local need = 0
  for _, mk in ipairs(marks) do
    if mk.start >= n - bound then break end
    need = mk.len
  end
  return need
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

-- scrub.patterns with scrub.MIN set to `min` for the call.
local function _scrub_patterns(values, min)
  local saved = scrub.MIN
  scrub.MIN = min
  local ok, res = pcall(scrub.patterns, values)
  scrub.MIN = saved
  if not ok then error(res, 0) end
  return res
end

-- Checks one input; raises on any broken property.
function M.check(data)
  local c = M.decode(data)
  local want = M.patterns(c.values, c.min)
  local list, got, longest = _scrub_patterns(c.values, c.min), {}, 0
  for _, p in ipairs(list) do
    assert(want[p], "scrub.patterns derived a pattern the reference does not")
    assert(not got[p], "scrub.patterns listed a pattern twice")
    got[p] = true
    longest = math.max(longest, #p)
  end
  for p in pairs(want) do assert(got[p], "scrub.patterns missed a pattern the reference derives") end
  local repl = c.repl or scrub.PLACEHOLDER
  local expect, marks = M.reference(c.stream, want, repl)
  local bound = math.max(longest - 1, 0)
  local m <close> = mask.new(list, repl)
  local out, fed = {}, 0
  for _, chunk in ipairs(_chunks(c.stream, c.points)) do
    out[#out + 1] = m:feed(chunk)
    fed = fed + #chunk
    local so_far = table.concat(out)
    assert(expect:sub(1, #so_far) == so_far, "masker output differs from the reference")
    assert(#so_far >= _due(marks, fed, bound), "masker holds back more than the longest pattern - 1")
  end
  out[#out + 1] = m:finish()
  assert(table.concat(out) == expect, "masker output differs from the reference at the end")
  if next(want) == nil then assert(expect == c.stream, "output without patterns is not the input") end
end

return M
