-- Test support: reading busted's TAP output of a nested run (make test-asan, make valgrind) so
-- that a failure there names the failing tests instead of showing only the end of the output.
local M = {}

-- Returns the failing tests in TAP `text`: array of { name, where = "file @ line", message =
-- array of the failure message's lines }, from its "not ok N - name" lines and the comments
-- after them.
function M.failures(text)
  local out, cur = {}, nil
  for line in text:gmatch("[^\n]*") do
    local name = line:match("^not ok %d+ %- (.*)$")
    if name then
      cur = { name = name, message = {} }
      out[#out + 1] = cur
    elseif cur and line:sub(1, 1) == "#" then
      local first = line:match("^# Failure message: (.*)$")
      if first then
        cur.message[#cur.message + 1] = first
      elseif #cur.message > 0 then
        cur.message[#cur.message + 1] = line:sub(3)
      elseif not cur.where then
        cur.where = line:match("^# (.- @ %d+)$")
      end
    else
      cur = nil
    end
  end
  return out
end

-- Returns the sanitizer and memcheck report lines in `text` ("==PID== …", UBSan's
-- "runtime error:"), at most `max` of them.
function M.findings(text, max)
  local out = {}
  for line in text:gmatch("[^\n]*") do
    if #out >= max then break end
    if line:match("^==%d+==") or line:find("runtime error:", 1, true) then out[#out + 1] = line end
  end
  return out
end

-- Returns a failure message for nested run `title` whose output is `text`: the failing tests
-- by name, where and why (up to 12 lines of each message), any sanitizer findings, then the
-- last `n` lines of the output, each quoted with "| " so that none reads as a result of the
-- suite running this one.
function M.explain(title, text, n)
  local msg = { title .. " failed" }
  local failed = M.failures(text)
  if #failed > 0 then
    msg[#msg + 1] = ("%d failing test%s:"):format(#failed, #failed == 1 and "" or "s")
    for _, f in ipairs(failed) do
      msg[#msg + 1] = "  - " .. f.name .. (f.where and (" (" .. f.where .. ")") or "")
      for i = 1, math.min(#f.message, 12) do msg[#msg + 1] = "      " .. f.message[i] end
      if #f.message > 12 then msg[#msg + 1] = "      …" end
    end
  else
    msg[#msg + 1] = "no test failed (a sanitizer finding, a crash or a build error: see below)"
  end
  local found = M.findings(text, 30)
  if #found > 0 then
    msg[#msg + 1] = "findings:"
    for _, l in ipairs(found) do msg[#msg + 1] = "| " .. l end
  end
  local lines = {}
  for line in text:gmatch("[^\n]*") do lines[#lines + 1] = line end
  while #lines > 0 and lines[#lines] == "" do lines[#lines] = nil end
  msg[#msg + 1] = ("last %d lines of its output:"):format(math.min(n, #lines))
  for i = math.max(1, #lines - n + 1), #lines do msg[#msg + 1] = "| " .. lines[i] end
  return table.concat(msg, "\n")
end

return M
