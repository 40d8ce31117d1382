-- The shape the code keeps (STYLE 16-17, the architecture issue): no Lua file over 400 lines,
-- no function (Lua or C) over 60 lines, so every module stays readable in one sitting.
local lfs = require("lfs")

local MAX_FILE, MAX_FUNCTION = 400, 60

local function files(dir, ext, out)
  out = out or {}
  for f in lfs.dir(dir) do
    local p = dir .. "/" .. f
    if f ~= "." and f ~= ".." then
      if lfs.attributes(p, "mode") == "directory" then
        files(p, ext, out)
      elseif f:sub(-#ext) == ext then
        out[#out + 1] = p
      end
    end
  end
  table.sort(out)
  return out
end

-- Returns { {name, first, last} } for the functions of a Lua file: a `function` line ends at
-- the first later line that is `end` at the same indentation.
local function lua_functions(path)
  local out, open, n = {}, nil, 0
  for line in io.lines(path) do
    n = n + 1
    if open and line == open.indent .. "end" or open and line:match("^" .. open.indent .. "end[%),]") then
      out[#out + 1] = { name = open.name, first = open.first, last = n }
      open = nil
    elseif not open then
      local indent, name = line:match("^(%s*)[%w_.]*%s*=?%s*local function ([%w_.:]+)")
      if not name then indent, name = line:match("^(%s*)function ([%w_.:]+)") end
      if not name then indent, name = line:match("^(%s*)[%w_.%[%]\"]+%s*=%s*function%(") , "(anonymous)" end
      if name and indent and not line:match("end%s*$") then open = { indent = indent, name = name, first = n } end
    end
  end
  return out
end

-- C: a function body opens with "{" alone at column 0 and closes with "}" at column 0.
local function c_functions(path)
  local out, first, n, prev = {}, nil, 0, ""
  for line in io.lines(path) do
    n = n + 1
    if line == "{" then first = { name = prev, line = n }
    elseif line == "}" and first then
      out[#out + 1] = { name = first.name, first = first.line, last = n }
      first = nil
    end
    prev = line
  end
  return out
end

describe("code shape", function()
  it("keeps every Lua file at most " .. MAX_FILE .. " lines", function()
    local long = {}
    for _, p in ipairs(files(MOAT_ROOT .. "/lua", ".lua")) do
      local n = 0
      for _ in io.lines(p) do n = n + 1 end
      if n > MAX_FILE then long[#long + 1] = ("%s: %d lines"):format(p:sub(#MOAT_ROOT + 2), n) end
    end
    assert.same({}, long)
  end)

  it("keeps every function at most " .. MAX_FUNCTION .. " lines (Lua and C)", function()
    local long = {}
    for _, p in ipairs(files(MOAT_ROOT .. "/lua", ".lua")) do
      for _, f in ipairs(lua_functions(p)) do
        if f.last - f.first + 1 > MAX_FUNCTION then
          long[#long + 1] = ("%s:%d %s: %d lines"):format(p:sub(#MOAT_ROOT + 2), f.first, f.name, f.last - f.first + 1)
        end
      end
    end
    for _, dir in ipairs({ "/src", "/init", "/tools" }) do
      for _, p in ipairs(files(MOAT_ROOT .. dir, ".c")) do
        for _, f in ipairs(c_functions(p)) do
          if f.last - f.first + 1 > MAX_FUNCTION then
            local n = f.last - f.first + 1
            long[#long + 1] = ("%s:%d %s: %d lines"):format(p:sub(#MOAT_ROOT + 2), f.first, f.name, n)
          end
        end
      end
    end
    assert.same({}, long)
  end)
end)
