-- The one policy for hiding secret values: which strings count as a value showing up (the
-- value, each line of a multi-line one, its base64, URL- and JSON-escaped forms), how short a
-- value may be and still be left alone, and what stands in its place. moat.c.mask only
-- matches; the output masker, text shown to people and the argv check all come here. A site
-- may wrap any function (loader.builtin("moat.scrub")), say patterns to add an encoding: the
-- functions call each other through M, so the others then use the wrapped one.
local M = {}

-- One threshold for every use, in bytes of the value (or of a line of it): shorter ones are
-- left alone everywhere, and so are their encodings. A value that short turns up by chance
-- in ordinary text (a word, a number, a piece of base64), so hiding it would mangle output
-- and, by mangling exactly where it occurs, point at it; masking cannot keep a value that
-- short secret anyway. Six is what SECURITY.md item 7 promises for the output masker, and
-- messages and argv use the same number, so what moat hides in one place it hides in all.
M.MIN = 6

-- What replaces a value, everywhere.
M.PLACEHOLDER = "<concealed by moat>"

-- How many bytes of scrubbed text M.text keeps by default.
M.CAP = 500
M.ELIDED = "<elided>"   -- stands for a quoted stretch of a message moat does not recognise

local _BASE64 = { "original", "original_nopad", "urlsafe", "urlsafe_nopad" }

local _JSON_ESC = { ['"'] = '\\"', ["\\"] = "\\\\", ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t" }

-- Takes a value; returns it URL-escaped (RFC 3986: all but unreserved bytes as %XX).
function M.url_escape(v)
  return (v:gsub("[^A-Za-z0-9%-._~]", function(c) return ("%%%02X"):format(c:byte()) end))
end

-- Takes a value; returns it as it appears inside a JSON string (control bytes as \u00xx).
function M.json_escape(v)
  return (v:gsub('[%z\1-\31"\\]', function(c) return _JSON_ESC[c] or ("\\u%04x"):format(c:byte()) end))
end

-- Takes a value; returns the strings that show it: the value, each line of a multi-line one
-- (without a trailing CR) that is at least M.MIN bytes, its four base64 forms (standard and
-- URL-safe, padded or not), and its URL- and JSON-escaped forms. Nothing for a short value.
function M.forms(v)
  if #v < M.MIN then return {} end
  local sys = require("moat.c.system")
  local out = { v }
  if v:find("\n", 1, true) then
    for line in (v .. "\n"):gmatch("([^\n]*)\n") do
      line = line:gsub("\r$", "")
      if #line >= M.MIN then out[#out + 1] = line end
    end
  end
  for _, variant in ipairs(_BASE64) do out[#out + 1] = sys.base64_encode(v, variant) end
  out[#out + 1] = M.url_escape(v)
  out[#out + 1] = M.json_escape(v)
  return out
end

-- Takes an array of values (strings); returns the array of distinct strings to hide.
function M.patterns(values)
  local seen, out = {}, {}
  for i, v in ipairs(values or {}) do
    if type(v) ~= "string" then
      error(("scrub: values[%d] is a %s, not a string"):format(i, type(v)), 2)
    end
    for _, p in ipairs(M.forms(v)) do
      if not seen[p] then
        seen[p] = true
        out[#out + 1] = p
      end
    end
  end
  return out
end

-- Takes an array of values; returns a moat.c.mask masker (feed, finish, close) that replaces
-- every pattern of them with M.PLACEHOLDER in a stream, however it is split.
function M.masker(values)
  return require("moat.c.mask").new(M.patterns(values), M.PLACEHOLDER)
end

-- Takes text and an array of values; returns the text with every pattern of the values
-- replaced by M.PLACEHOLDER (leftmost first, the longest at a position), nothing else changed.
function M.replace(text, values)
  if not values or #values == 0 then return text end
  local m <close> = M.masker(values)
  return m:feed(text) .. m:finish()
end

-- Takes a string and an array of values; returns true when any pattern of them occurs in it.
function M.contains(s, values)
  for _, p in ipairs(M.patterns(values)) do
    if s:find(p, 1, true) then return true end
  end
  return false
end

-- Takes text (any value, tostring-ed), an array of values and an optional cap (default
-- M.CAP); returns it safe to show to people: every pattern replaced, one trailing newline
-- dropped, control characters but newline escaped as \xNN, continuation lines indented by
-- four spaces, and cut to the cap (plus "...").
function M.text(text, values, cap)
  text = M.replace(tostring(text or ""), values)
  text = require("moat.text").escape(text:gsub("\r?\n$", ""), true)
  -- Continuation lines are indented so a backend's text can never pass for a line of moat's own.
  text = text:gsub("\n", "\n    ")
  cap = cap or M.CAP
  if #text > cap then text = text:sub(1, cap) .. "..." end
  return text
end

-- Takes text; returns it with every quoted stretch ('…', "…", from the first quote to the last
-- of its kind, or to the end when only one) replaced by a placeholder, since a CLI may quote
-- the value it failed on.
function M.elide(text)
  text = tostring(text or "")
  for _, q in ipairs({ '"', "'" }) do
    local first = text:find(q, 1, true)
    if first then
      local last = first
      for i = #text, first + 1, -1 do
        if text:sub(i, i) == q then
          last = i
          break
        end
      end
      local tail = last > first and text:sub(last + 1) or ""
      text = text:sub(1, first - 1) .. q .. M.ELIDED .. q .. tail
    end
  end
  return text
end

return M
