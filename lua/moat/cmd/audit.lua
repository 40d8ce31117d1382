-- `moat audit [RUN | NAME | --last] [--verify [--all] [--key FINGERPRINT|FILE]] [--json]`,
-- `moat audit [RUN] --export FILE`, `moat audit --verify BUNDLE`: show a run's audit log,
-- verify it (with the cross-run chain in runs.jsonl), or export and check portable bundles.
local args = require("moat.args")
local auditlog = require("moat.auditlog")
local cli = require("moat.cli")
local core = require("moat.auditlog.core")
local exit = require("moat.exit")
local json = require("moat.c.json")
local text = require("moat.text")

local M = {}

local SPEC = {
  ["--last"] = "flag", ["--verify"] = "flag", ["--json"] = "flag", ["--all"] = "flag",
  ["--key"] = "value", ["--export"] = "value",
}
M.SPEC = SPEC

-- One line of help per SPEC option (moat help audit, the man page and completion read it).
M.OPTIONS = {
  { "--last", "the newest run (the default when no RUN is given)" },
  { "--json", "print the records as JSON lines" },
  { "--verify", "check the hash chain, the signature and runs.jsonl; exit 1 unless valid" },
  { "--all", "with --verify: every recorded run" },
  { "--key FINGERPRINT|FILE", "with --verify: the public key to trust (fingerprint or key file)" },
  { "--export FILE", "write a portable bundle of the run to FILE" },
}

-- Fields shown first for each type; any others follow in key order.
M.order = {
  ["run.started"] = { "name", "profile", "runtime", "image", "command", "workspace", "version" },
  ["policy.denied"] = { "denials" },
  ["secret.resolved"] = { "name", "backend", "reference", "ms", "outcome" },
  ["secret.failed"] = { "name", "backend", "reference", "ms", "outcome", "kind" },
  ["secret.skipped"] = { "name", "backend", "reference", "ms", "outcome", "kind" },
  ["secret.defaulted"] = { "name", "backend", "reference", "ms", "outcome", "kind" },
  ["container.started"] = { "runtime", "image", "container" },
  ["container.exited"] = { "status", "signal", "ms" },
  ["run.finished"] = { "outcome", "exit", "kind", "ms" },
}

local function _quote(s)
  if s:match("^[%w_./@:+%-]+$") then return s end
  return '"' .. text.escape((s:gsub('[\\"]', "\\%0"))) .. '"'
end

local function _show(v)
  if type(v) == "string" then return _quote(v) end
  if type(v) == "table" then
    if getmetatable(v) == json.array_mt then
      local parts = {}
      for i, x in ipairs(v) do parts[i] = _show(x) end
      return "[" .. table.concat(parts, " ") .. "]"
    end
    return text.escape((json.encode(v, { canonical = true })) or "{...}")
  end
  if v == json.null then return "null" end
  return text.escape(tostring(v))
end

-- Returns "k=v k=v ..." for a record's data, the type's key fields first; control
-- characters from the log are escaped as \xNN.
function M.fields(rtype, data)
  if type(data) ~= "table" then return "" end
  local out, seen = {}, {}
  for _, k in ipairs(M.order[rtype] or {}) do
    if data[k] ~= nil then
      out[#out + 1] = k .. "=" .. _show(data[k])
      seen[k] = true
    end
  end
  local rest = {}
  for k in pairs(data) do
    if type(k) == "string" and not seen[k] then rest[#rest + 1] = k end
  end
  table.sort(rest)
  for _, k in ipairs(rest) do out[#out + 1] = text.escape(k) .. "=" .. _show(data[k]) end
  return table.concat(out, " ")
end

-- Returns the one-line verdict for people on a verify report of run `id`.
function M.verdict(id, rep)
  id = text.escape(id)
  if rep.status == "valid" then
    return ("run %s: valid: %d records, chain intact, last record (seq %d) signed"):format(
      id, rep.records, rep.signed_seq or rep.records)
  elseif rep.status == "unfinished" then
    return ("run %s: unfinished: no signature — the run did not finish (%d records, chain intact%s)"):format(
      id, rep.records, rep.torn and "; the last line is torn and was ignored" or "")
  end
  return ("run %s: invalid at seq %s: %s"):format(id, tostring(rep.bad_seq or "?"), text.escape(rep.reason or "?"))
end

-- Returns the lines for people on the cross-run chain's report.
function M.chain_verdict(rep)
  if rep.ok then
    return { ("%s: %d lines, chain intact, one signing key"):format(core.RUNS, rep.lines) }
  end
  local out = {}
  for _, p in ipairs(rep.problems) do out[#out + 1] = core.RUNS .. ": " .. text.escape(p) end
  return out
end

local function _listing(id, dir)
  local recs, torn = auditlog.read(dir)
  if not recs then exit.fail(exit.IOERR, torn) end
  local out = { "run " .. text.escape(id), "log " .. text.escape(dir .. "/" .. auditlog.LOG) }
  for _, r in ipairs(recs) do
    if r.bad then
      out[#out + 1] = ("%-24s %4d %s"):format("?", r.seq, "(not a JSON object)")
    else
      out[#out + 1] = ("%-24s %4s %-17s %s"):format(text.escape(tostring(r.ts)), text.escape(tostring(r.seq)),
        text.escape(tostring(r.type)), M.fields(r.type, r.data))
    end
  end
  if torn then out[#out + 1] = "(the last line is torn: a write was cut off)" end
  out[#out + 1] = M.verdict(id, auditlog.verify(dir))
  return table.concat(out, "\n") .. "\n"
end

local function _json_lines(dir)
  local body = core.read_file(dir .. "/" .. auditlog.LOG)
  if not body then exit.fail(exit.IOERR, "cannot read " .. dir .. "/" .. auditlog.LOG) end
  -- Only complete lines: a torn last line is not a record, nor is the signature line.
  return (core.split_signature(body:match("^(.*\n)") or ""))
end

-- Parses --key: a fingerprint, or a FILE holding a public key (as in $MOAT_HOME/keys/) or a
-- fingerprint. Returns { key = fingerprint, public_key = raw | nil } | nil, message.
function M.pin(value)
  local fp = core.parse_fingerprint(value)
  if fp then return { key = fp } end
  local body = core.read_file(value)
  local pk = core.parse_public_key(body)
  if pk then return { key = core.fingerprint(pk), public_key = pk } end
  fp = core.parse_fingerprint(body)
  if fp then return { key = fp } end
  return nil, ("--key %s is neither a fingerprint (%s<64 hex digits>) nor a file holding a public key or a fingerprint")
    :format(text.show(value), core.FP_PREFIX)
end

local function _report_json(id, rep)
  return {
    run = id, ok = rep.ok, status = rep.status, bad_seq = rep.bad_seq, reason = rep.reason, torn = rep.torn,
    records = rep.records, signed_seq = rep.signed_seq, key = rep.key,
  }
end

local function _write_json(v)
  io.stdout:write(assert(json.encode(v, { canonical = true })), "\n")
end

-- Verifies a bundle file; returns the exit status.
local function _verify_bundle(path, opts, pin)
  local body = core.read_file(path)
  if not body then exit.fail(exit.USAGE, "cannot read the bundle " .. text.show(path)) end
  local rep, err = require("moat.auditlog.bundle").verify(body, pin or {})
  if not rep then exit.fail(exit.USAGE, text.show(path) .. ": " .. err) end
  if opts.json then
    _write_json(_report_json(rep.run, rep))
  else
    io.stdout:write(M.verdict(rep.run, rep), "\n", "key ", rep.key or "(none checked)", "\n")
  end
  return rep.ok and 0 or 1
end

-- Checks runs.jsonl of the moat home against the key in use and the pin.
local function _chain(pin)
  local home = assert(auditlog.home())
  local pk = auditlog.public_key()
  return require("moat.auditlog.chain").verify(home, {
    key = pin and pin.key, current = pk and core.fingerprint(pk),
  })
end

-- Verifies the runs in `ids` (directories under runs/) and the cross-run chain; returns the exit status.
local function _verify_runs(ids, opts, pin)
  local root = assert(auditlog.runs_dir())
  local chain_rep = _chain(pin)
  local reps, ok, key = {}, chain_rep.ok, nil
  for i, id in ipairs(ids) do
    reps[i] = auditlog.verify(root .. "/" .. id, pin or {})
    ok = ok and reps[i].ok
    key = key or reps[i].key
  end
  key = key or chain_rep.key
  if opts.json then
    local list = {}
    for i, id in ipairs(ids) do list[i] = _report_json(id, reps[i]) end
    local out = { ok = ok, key = key, chain = chain_rep, runs = json.array(list) }
    if not opts.all then
      -- One run: its report, with `ok` covering the chain as well (as the exit status does).
      out = list[1] or {}
      out.ok, out.chain = ok, chain_rep
    end
    _write_json(out)
  else
    local out = {}
    for i, id in ipairs(ids) do out[#out + 1] = M.verdict(id, reps[i]) end
    out[#out + 1] = "key " .. (key or "(none)")
    for _, l in ipairs(M.chain_verdict(chain_rep)) do out[#out + 1] = l end
    io.stdout:write(table.concat(out, "\n"), "\n")
  end
  return ok and 0 or 1
end

-- Writes the bundle of run `id`; returns the exit status.
local function _export(dir, id, file)
  local bundle = require("moat.auditlog.bundle")
  local b, err = bundle.build(assert(auditlog.home()), dir, id)
  if not b then exit.fail(exit.IOERR, err) end
  local ok, werr = bundle.write(file, b)
  if not ok then exit.fail(exit.IOERR, "cannot export the audit bundle: " .. text.escape(werr)) end
  io.stdout:write(("exported run %s to %s\n"):format(id, text.escape(file)))
  return 0
end

-- Finds the run named by `spec`; a run runs.jsonl lists whose directory is gone is
-- reported as deleted. Returns dir, id.
local function _find(spec)
  local home, herr = auditlog.home()
  if not home then exit.fail(exit.CONFIG, herr) end
  local dir, id = auditlog.find(spec)
  if dir then return dir, id end
  local loaded = spec and require("moat.auditlog.chain").load(home .. "/" .. core.RUNS)
  if loaded and loaded.by_run[spec] then
    io.stdout:write(("run %s: invalid: run %s deleted: it is listed in %s but its directory is gone\n")
      :format(spec, spec, core.RUNS))
    exit.fail(1, "run " .. spec .. " deleted")
  end
  exit.fail(exit.USAGE, text.escape(id))
end

local function _check(ctx, opts, pos)
  if #pos > 1 then cli.usage_error(ctx, "give at most one RUN") end
  if pos[1] and opts.last then cli.usage_error(ctx, "give RUN or --last, not both") end
  if opts.all and (pos[1] or opts.last or not opts.verify) then
    cli.usage_error(ctx, "--all goes with --verify and no RUN")
  end
  if opts.export and opts.verify then cli.usage_error(ctx, "give --export or --verify, not both") end
  if opts.key and not opts.verify then cli.usage_error(ctx, "--key goes with --verify") end
  if opts.export == "" then cli.usage_error(ctx, "--export needs a file name") end
end

-- Runs `moat audit`; returns the exit status (verify: 0 valid, 1 unfinished or invalid).
function M.main(argv, ctx)
  local opts, pos = args.parse(argv, SPEC)
  if not opts then cli.usage_error(ctx, pos) end
  _check(ctx, opts, pos)
  local pin
  if opts.key then
    local err
    pin, err = M.pin(opts.key)
    if not pin then cli.usage_error(ctx, err) end
  end
  if opts.verify and pos[1] and require("lfs").attributes(pos[1], "mode") == "file" then
    return _verify_bundle(pos[1], opts, pin)
  end
  if opts.all then
    local home, herr = auditlog.home()
    if not home then exit.fail(exit.CONFIG, herr) end
    local ids = auditlog.ids()
    table.sort(ids)
    return _verify_runs(ids, opts, pin)
  end
  local dir, id = _find(pos[1])
  if opts.export then return _export(dir, id, opts.export) end
  if opts.verify then return _verify_runs({ id }, opts, pin) end
  io.stdout:write(opts.json and _json_lines(dir) or _listing(id, dir))
  return 0
end

return M
