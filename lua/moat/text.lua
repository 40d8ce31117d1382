-- Text for people: escaping control characters, capping length, quoting words for a shell.
-- Every message that shows something moat did not write itself goes through here.
local M = {}

M.CAP = 200   -- characters of a reference or name shown in a message

local function _hex(c)
  return ("\\x%02x"):format(c:byte())
end

local function _c1(c)
  return ("\\u%04x"):format(c:byte())
end

-- Returns `s` with control characters written out so text from a file or a backend cannot
-- drive a terminal: C0 and DEL as \xNN (ESC is \x1b), UTF-8 C1 controls as \uNNNN;
-- `keep_newlines` leaves \n alone.
function M.escape(s, keep_newlines)
  s = tostring(s)
  s = s:gsub(keep_newlines and "[%z\1-\9\11-\31\127]" or "[%z\1-\31\127]", _hex)
  return (s:gsub("\194([\128-\159])", _c1))
end

-- Returns `s` escaped and capped to `cap` characters (default M.CAP): safe in a one-line message.
function M.show(s, cap)
  s = M.escape(s)
  cap = cap or M.CAP
  if #s > cap then s = s:sub(1, cap) .. "..." end
  return s
end

-- Returns one word quoted for a POSIX shell when it needs it, control characters escaped.
function M.quote_word(s)
  if s:match("^[%w_./@:+,=%%-]+$") then return s end
  return "'" .. M.escape(s:gsub("'", "'\\''")) .. "'"
end

-- Returns argv as one line a person can read (and paste into a shell).
function M.quote(argv)
  local out = {}
  for i, a in ipairs(argv) do out[i] = M.quote_word(a) end
  return table.concat(out, " ")
end

-- Returns "N thing" or "N things".
function M.count(n, word)
  return ("%d %s%s"):format(n, word, n == 1 and "" or "s")
end

return M
