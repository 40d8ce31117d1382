-- Parsing dotenv files (.env): KEY=VALUE lines, the form op run, fnox, secretspec, docker and
-- compose read. Supported: blank lines, `#` comments (and ` #` after an unquoted value),
-- an `export ` prefix, spaces around `=`, `=` inside values, empty values, single quotes
-- (literal), double quotes with \n \r \t \" \\ \$ escapes, quoted values over several lines,
-- CRLF line ends. There is no variable expansion: `$HOME` stays `$HOME`. Anything else is an
-- error with file:line:col, never a guess.
local M = {}

M.MAX_BYTES = 1024 * 1024

local ESCAPES = { n = "\n", r = "\r", t = "\t", ['"'] = '"', ["\\"] = "\\", ["$"] = "$" }

local P = {}
P.__index = P

-- Returns the line and column of byte `i` (a binary search over the line starts).
function P:pos(i)
  local starts = self.starts
  local lo, hi = 1, #starts
  while lo < hi do
    local mid = (lo + hi + 1) // 2
    if starts[mid] <= i then lo = mid else hi = mid - 1 end
  end
  return lo, i - starts[lo] + 1
end

function P:where(i)
  local line, col = self:pos(i)
  return ("%s:%d:%d"):format(self.file, line, col)
end

function P:err(i, msg)
  self.errors[#self.errors + 1] = self:where(i) .. ": " .. msg
end

-- Returns the index of the end of the line starting at or after `i` (before "\r\n" or "\n").
function P:eol(i)
  local nl = self.text:find("\n", i, true) or (#self.text + 1)
  if self.text:sub(nl - 1, nl - 1) == "\r" and nl - 1 >= i then return nl - 1, nl + 1 end
  return nl, nl + 1
end

-- After a closing quote at `i`: only spaces and a comment may follow. Returns the next line's start.
function P:after_quote(i)
  local e, nxt = self:eol(i)
  local rest = self.text:sub(i, e - 1)
  if not rest:match("^[ \t]*$") and not rest:match("^[ \t]+#") and not rest:match("^#") then
    self:err(i, "unexpected text after the closing quote (a comment needs a # before it)")
  end
  return nxt
end

-- Reads a single-quoted value whose quote is at `q`; returns value, next line start | nil.
function P:single(q)
  local close = self.text:find("'", q + 1, true)
  if not close then
    self:err(q, "the single quote is never closed")
    return nil
  end
  return self.text:sub(q + 1, close - 1), self:after_quote(close + 1)
end

-- Reads a double-quoted value whose quote is at `q`; returns value, next line start | nil.
function P:double(q)
  local out, i, text = {}, q + 1, self.text
  while i <= #text do
    local c = text:sub(i, i)
    if c == '"' then return table.concat(out), self:after_quote(i + 1) end
    if c == "\\" and i < #text then
      local n = text:sub(i + 1, i + 1)
      -- An unknown escape keeps its backslash, as python-dotenv and compose do (C:\dir stays).
      out[#out + 1] = ESCAPES[n] or (c .. n)
      i = i + 2
    else
      out[#out + 1] = c
      i = i + 1
    end
  end
  self:err(q, "the double quote is never closed")
  return nil
end

-- Reads an unquoted value from `i` to the end of the line; ` #` starts a comment.
function P:bare(i)
  local e, nxt = self:eol(i)
  local raw = self.text:sub(i, e - 1)
  local cut = raw:find("[ \t]#")
  if cut then raw = raw:sub(1, cut - 1) end
  return (raw:gsub("[ \t]+$", "")), nxt
end

-- Parses the entry whose first non-blank byte is at `i`; returns the next line's start.
function P:entry(i)
  local text = self.text
  local s = text:match("^export[ \t]+()", i) or i
  local key_end = text:match("^[A-Za-z_][A-Za-z0-9_]*()", s)
  if not key_end then
    self:err(s, "expected KEY=VALUE (a name of letters, digits and _, not starting with a digit)")
    return select(2, self:eol(i))
  end
  local eq = text:match("^[ \t]*()=", key_end)
  if not eq then
    self:err(key_end, ("expected = after %s (KEY=VALUE)"):format(text:sub(s, key_end - 1)))
    return select(2, self:eol(i))
  end
  local v = text:match("^[ \t]*()", eq + 1)
  local c = text:sub(v, v)
  local value, nxt
  if c == "'" then
    value, nxt = self:single(v)
  elseif c == '"' then
    value, nxt = self:double(v)
  elseif c == "#" and v > eq + 1 then
    -- "KEY= # note": the " #" starts a comment and the value is empty.
    value, nxt = "", select(2, self:eol(v))
  else
    value, nxt = self:bare(v)
  end
  if not value then return #text + 1 end
  local name = text:sub(s, key_end - 1)
  if value:find("%z") then
    self:err(v, ("%s must not contain NUL bytes"):format(name))
  elseif self.seen[name] then
    self:err(s, ("%s is already set at %s; keep one"):format(name, self.seen[name]))
  else
    self.seen[name] = self:where(s)
    self.entries[#self.entries + 1] = { name = name, value = value, where = self:where(v), key_at = self:where(s) }
  end
  return nxt
end

-- Parses dotenv `text` read from `file` (the name used in messages). Returns entries
-- { {name, value, where = "file:line:col" of the value, key_at} } in file order
-- | nil, errors (array of "file:line:col: message").
function M.parse(text, file)
  local self = setmetatable({ text = text, file = file, errors = {}, entries = {}, seen = {}, starts = { 1 } }, P)
  for nl in text:gmatch("()\n") do self.starts[#self.starts + 1] = nl + 1 end
  local i = 1
  if text:sub(1, 3) == "\239\187\191" then i = 4 end
  while i <= #text do
    local s = text:match("^[ \t]*()", i)
    local c = text:sub(s, s)
    if c == "\n" then
      i = s + 1
    elseif c == "\r" and text:sub(s + 1, s + 1) == "\n" then
      i = s + 2
    elseif c == "#" or c == "" then
      i = select(2, self:eol(s))
    else
      i = self:entry(s)
    end
  end
  if #self.errors > 0 then return nil, self.errors end
  return self.entries
end

-- Reads dotenv file `path` (a regular file, at most M.MAX_BYTES) through the safe reader.
-- Returns text | nil, why.
function M.read(path)
  local sys = require("moat.c.system")
  if sys.read_file then
    local text, err = sys.read_file(path, M.MAX_BYTES)
    if text then return text end
    -- Refusals start with the path, which the caller names already.
    err = tostring(err)
    if err:sub(1, #path + 1) == path .. " " then return nil, err:sub(#path + 2) end
    return nil, "cannot be read: " .. err
  end
  local cfile = require("moat.config.file")
  local attr, why = cfile.check(path)
  if not attr then return nil, why end
  local text, rerr = cfile.read(path, attr, M.MAX_BYTES)
  if not text then return nil, rerr end
  if #text > M.MAX_BYTES then return nil, "is over the 1 MiB limit for a dotenv file" end
  return text
end

return M
