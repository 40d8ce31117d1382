-- `moat runs [--name NAME] [--json]`: the recorded runs, newest first, with status and verification.
local args = require("moat.args")
local auditlog = require("moat.auditlog")
local cli = require("moat.cli")
local exit = require("moat.exit")
local text = require("moat.text")

local M = {}

local SPEC = { ["--json"] = "flag", ["--name"] = "value" }
M.SPEC = SPEC

-- One line of help per SPEC option (moat help runs, the man page and completion read it).
M.OPTIONS = {
  { "--name NAME", "only the runs named NAME" },
  { "--json", "print JSON" },
}

-- Returns the status text of a run summary: "finished (exit N)", "failed (...)" or "unfinished".
function M.status(e)
  if e.status == "finished" then return ("finished (exit %s)"):format(tostring(e.exit or "?")) end
  if e.status == "failed" then
    return ("failed (%s%s)"):format(tostring(e.outcome or "?"), e.exit and (", exit " .. e.exit) or "")
  end
  return "unfinished"
end

-- Returns "yes", or "no (why)" for a run summary.
function M.verifies(e)
  local v = e.verify
  if v.ok then return "yes" end
  if v.status == "unfinished" then return "no (unfinished)" end
  return "no (seq " .. tostring(v.bad_seq or "?") .. ")"
end

local function _json(list)
  local json = require("moat.c.json")
  local out = {}
  for i, e in ipairs(list) do
    out[i] = {
      id = e.id, name = e.name, started = e.started, finished = e.finished, status = e.status,
      exit = e.exit, outcome = e.outcome, path = e.path, verifies = e.verifies,
      verify = { status = e.verify.status, bad_seq = e.verify.bad_seq, reason = e.verify.reason },
    }
  end
  return assert(json.encode(json.array(out), { canonical = true })) .. "\n"
end

local function _table(list, name)
  if #list == 0 then
    local where = "no runs recorded under " .. text.escape(auditlog.runs_dir())
    return (name and ("no runs named %s; %s"):format(text.show(name), where) or where) .. "\n"
  end
  local rows = { { "RUN", "NAME", "STARTED", "STATUS", "VERIFIES" } }
  for _, e in ipairs(list) do
    rows[#rows + 1] = { text.escape(e.id), text.show(e.name or "?"), text.escape(e.started or "?"),
      text.escape(M.status(e)), M.verifies(e) }
  end
  local width = {}
  for _, r in ipairs(rows) do
    for i, c in ipairs(r) do width[i] = math.max(width[i] or 0, utf8.len(c) or #c) end
  end
  local lines = {}
  for _, r in ipairs(rows) do
    local cells = {}
    for i, c in ipairs(r) do
      cells[i] = i < #r and c .. string.rep(" ", width[i] - (utf8.len(c) or #c)) or c
    end
    lines[#lines + 1] = table.concat(cells, "  ")
  end
  return table.concat(lines, "\n") .. "\n"
end

-- Runs `moat runs`; returns the exit status.
function M.main(argv, ctx)
  local opts, pos = args.parse(argv, SPEC)
  if not opts then cli.usage_error(ctx, pos) end
  if #pos > 0 then cli.usage_error(ctx, "moat runs takes no arguments") end
  local _, herr = auditlog.home()
  if herr then exit.fail(exit.CONFIG, herr) end
  local list = auditlog.list({ name = opts.name })
  io.stdout:write(opts.json and _json(list) or _table(list, opts.name))
  return 0
end

return M
