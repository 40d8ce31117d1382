-- Command-line option parsing: options and positionals in any order before "--".
local M = {}

-- Parses `argv` (array) against `spec`: { ["--name"] = "flag" | "value" | "list", ["-x"] = "--name" (alias) }.
-- Returns opts (keyed by long name without dashes, "-" turned into "_"), positionals, rest (after "--")
-- or nil, message.
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
      local name, inline = a:match("^(%-%-[^=]+)=(.*)$")
      name = name or a
      local kind = spec[name]
      if type(kind) == "string" and kind:sub(1, 2) == "--" then
        name, kind = kind, spec[kind]
      end
      if not kind then return nil, "unknown option " .. name end
      local key = name:gsub("^%-+", ""):gsub("%-", "_")
      if kind == "flag" then
        if inline then return nil, "option " .. name .. " takes no value" end
        opts[key] = true
      else
        local v = inline
        if not v then
          i = i + 1
          v = argv[i]
          if v == nil then return nil, "option " .. name .. " needs a value" end
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

return M
