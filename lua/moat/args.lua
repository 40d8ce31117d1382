-- Command-line option parsing: options and positionals in any order before "--", and the
-- hints for a command line that went wrong (did-you-mean, a command without "--").
local text = require("moat.text")

local M = {}

-- Returns the name in `words` (array) closest to `word`, or nil when none is close.
function M.suggest(word, words)
  return require("moat.config.check").suggest(word, words)
end

-- Returns the options of `spec` (array of names, aliases included), sorted.
function M.names(spec)
  local out = {}
  for name in pairs(spec) do
    if type(name) == "string" then out[#out + 1] = name end
  end
  table.sort(out)
  return out
end

local function _unknown(name, spec)
  local msg = "unknown option " .. text.show(name)
  local near = name:match("^%-%-") and M.suggest(name, M.names(spec))
  if near then msg = msg .. "; did you mean " .. near .. "?" end
  return msg
end

-- Returns the long name and kind of option `name` in `spec`, following an alias.
local function _lookup(spec, name)
  local kind = spec[name]
  if type(kind) == "string" and kind:sub(1, 2) == "--" then return kind, spec[kind] end
  return name, kind
end

-- Parses `argv` (array) against `spec`: { ["--name"] = "flag" | "value" | "list", ["-x"] = "--name" (alias) }.
-- Returns opts (keyed by long name without dashes, "-" turned into "_"), positionals, rest (after "--")
-- or nil, message, the index in `argv` of the offending word.
function M.parse(argv, spec)
  local opts, pos, rest = {}, {}, nil
  local i = 1
  while i <= #argv do
    local a = argv[i]
    if a == "--" then
      rest = table.move(argv, i + 1, #argv, 1, {})
      break
    end
    if a:sub(1, 1) == "-" and a ~= "-" then
      local given, inline = a:match("^(%-%-[^=]+)=(.*)$")
      local name, kind = _lookup(spec, given or a)
      if not kind then return nil, _unknown(given or a, spec), i end
      local key = name:gsub("^%-+", ""):gsub("%-", "_")
      if kind == "flag" then
        if inline then return nil, "option " .. name .. " takes no value", i end
        opts[key] = true
      else
        local v = inline
        if not v then
          i = i + 1
          v = argv[i]
          if v == nil then return nil, "option " .. name .. " needs a value", i - 1 end
        end
        if kind == "list" then
          opts[key] = opts[key] or {}
          table.insert(opts[key], v)
        else
          opts[key] = v
        end
      end
    else
      pos[#pos + 1] = a
    end
    i = i + 1
  end
  return opts, pos, rest
end

-- Splits `argv` for a command that runs a command after "--" (moat run): `spec`'s options
-- stay options; the first positional stays DIR when `is_dir(it)`; every other positional,
-- and everything from the first unknown option on, belongs to the command.
-- Returns options (array of words), dir | nil, command (array of words).
function M.split_command(argv, spec, is_dir)
  local options, dir, command = {}, nil, {}
  local i = 1
  while i <= #argv and argv[i] ~= "--" do
    local a = argv[i]
    local _, kind = _lookup(spec, a:match("^(%-%-[^=]+)=") or a)
    if a:sub(1, 1) == "-" and a ~= "-" and not kind then
      table.move(argv, i, #argv, #command + 1, command)
      return options, dir, command
    elseif kind then
      options[#options + 1] = a
      if kind ~= "flag" and not a:find("=", 1, true) and argv[i + 1] then
        i = i + 1
        options[#options + 1] = argv[i]
      end
    elseif #command == 0 and not dir and is_dir(a) then
      dir = a
    else
      command[#command + 1] = a
    end
    i = i + 1
  end
  table.move(argv, i + 1, #argv, #command + 1, command)
  return options, dir, command
end

local function _is_dir(path)
  return require("lfs").attributes(path, "mode") == "directory"
end

-- Returns "put the command after --: <prog … -- COMMAND>" for `argv` that holds a command
-- word before "--" (see split_command; `is_dir` defaults to an existing directory), or nil
-- when no command word starts it (an unknown option first is a typo, not a command).
function M.forgot_dashdash(prog, argv, spec, is_dir)
  local options, dir, command = M.split_command(argv, spec, is_dir or _is_dir)
  if #command == 0 or command[1]:sub(1, 1) == "-" and command[1] ~= "-" then return nil end
  local words = { prog }
  if #options > 0 then words[#words + 1] = text.quote(options) end
  if dir then words[#words + 1] = text.quote_word(dir) end
  words[#words + 1] = "--"
  words[#words + 1] = text.quote(command)
  return "put the command after --: " .. table.concat(words, " ")
end

return M
