-- Puts libyaml's most common complaints in plain words. The C loader (moat.c.yaml) reports
-- "file:line:col: <libyaml problem> (<context> that starts at L:C)"; the position stays, and
-- where the fix belongs at the start of the construct (an unclosed quote, a key without ':'),
-- the message points there instead of where libyaml gave up.
local M = {}

-- Returns the character at `line`:`col` (1-based, bytes) of `text`, or nil.
local function _char_at(text, line, col)
  local n = 1
  for l in (text .. "\n"):gmatch("([^\n]*)\n") do
    if n == line then return l:sub(col, col) end
    n = n + 1
  end
  return nil
end

local TAB = "tab used for indentation; YAML indents with spaces"

-- Each rule: a pattern over libyaml's message (captures: the context's line and column) and
-- a function(text, line, col, captures...) -> message, line, col (nil keeps the original).
local RULES = {
  { "^found character that cannot start any token", function(text, line, col)
    if _char_at(text, line, col) == "\t" then return TAB end
  end },
  { "^found a tab character that violates indentation", function() return TAB end },
  { "^did not find expected key %(while parsing a block mapping that starts at (%d+):(%d+)%)",
    function(_, _, _, cl, cc)
      return ("bad indentation: this line does not line up with the keys of the mapping that starts"
        .. " at %d:%d; indent it exactly like the key above it"):format(cl, cc)
    end },
  { "^did not find expected '%-' indicator %(while parsing a block collection that starts at (%d+):(%d+)%)",
    function(_, _, _, cl, cc)
      return ("bad indentation: this line does not line up with the items of the list that starts at %d:%d")
        :format(cl, cc)
    end },
  { "^found unexpected end of stream %(while scanning a quoted scalar that starts at (%d+):(%d+)%)",
    function(_, _, _, cl, cc)
      return "unclosed quote: this quoted value has no closing quote", tonumber(cl), tonumber(cc)
    end },
  { "^could not find expected ':' %(while scanning a simple key that starts at (%d+):(%d+)%)",
    function(_, _, _, cl, cc)
      return "missing ':' after this key (write key: value)", tonumber(cl), tonumber(cc)
    end },
  { "^mapping values are not allowed in this context", function()
    return "unexpected ':' here: this line is indented too far, or a value holds ': ' and needs quotes"
  end },
  { "^did not find expected ',' or '([%]}])' %(while parsing a flow %a+ that starts at (%d+):(%d+)%)",
    function(_, _, _, close, cl, cc)
      return ("unclosed %s: the %s that starts at %s:%s needs a ',' between items or a closing '%s'")
        :format(close == "]" and "list" or "mapping", close == "]" and "list" or "mapping", cl, cc, close)
    end },
}

-- Returns `err` (a message from moat.c.yaml about `text` read from `file`) in plain words.
function M.translate(err, file, text)
  if type(err) ~= "string" or err:sub(1, #file + 1) ~= file .. ":" then return err end
  local line, col, msg = err:sub(#file + 2):match("^(%d+):(%d+): (.*)$")
  if not line then return err end
  line, col = tonumber(line), tonumber(col)
  for _, rule in ipairs(RULES) do
    local found = { msg:match(rule[1]) }
    if #found > 0 then
      local text_out, l, c = rule[2](text, line, col, table.unpack(found))
      if text_out then return ("%s:%d:%d: %s"):format(file, l or line, c or col, text_out) end
      return err
    end
  end
  return err
end

return M
