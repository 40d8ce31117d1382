-- Messages for people on stderr: errors, warnings, progress. Never given secret values.
local sys = require("moat.c.system")

local M = { verbose = 0 }

local function _color()
  if M._color ~= nil then return M._color end
  local nc = os.getenv("NO_COLOR")
  M._color = (nc == nil or nc == "") and sys.isatty(2) and os.getenv("TERM") ~= "dumb"
  return M._color
end

local function _paint(code, s)
  if _color() then return "\27[" .. code .. "m" .. s .. "\27[0m" end
  return s
end

-- Writes "moat: error: <msg>" to stderr.
function M.error(msg)
  io.stderr:write(_paint("1;31", "moat: error: "), msg, "\n")
end

-- Writes "moat: warning: <msg>" to stderr.
function M.warn(msg)
  io.stderr:write(_paint("33", "moat: warning: "), msg, "\n")
end

-- Writes "moat: hint: <msg>" to stderr.
function M.hint(msg)
  io.stderr:write(_paint("36", "moat: hint: "), msg, "\n")
end

-- True when progress lines should be shown: stderr is a terminal, or -v was given.
function M.progress_on()
  return M.verbose > 0 or sys.isatty(2)
end

-- Writes a progress line ("moat: <msg>") when progress is on.
function M.progress(msg)
  if M.progress_on() then io.stderr:write(_paint("2", "moat: " .. msg), "\n") end
end

-- Writes a debug line when -v was given `level` times or more.
function M.debug(level, msg)
  if M.verbose >= level then io.stderr:write("moat: debug: ", msg, "\n") end
end

return M
