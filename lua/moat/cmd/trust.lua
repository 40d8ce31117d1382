-- `moat trust [DIR]`: record what the workspace may do — the SHA-256 of every file under
-- DIR/.moat/ (backends, modules, policy.lua) and of each guarded item of its config (secrets,
-- env files, runtime, mounts, network, profiles) — until any of it changes.
local cli = require("moat.cli")
local exit = require("moat.exit")
local text = require("moat.text")
local ui = require("moat.ui")

local M = {}

M.SPEC = { ["--config"] = "value" }

-- One line of help per SPEC option (moat help trust, the man page and completion read it).
M.OPTIONS = {
  { "--config FILE", "the config file to trust instead of DIR/moat.yaml" },
}

local function _mark(before, key, now, field)
  local was = before and before.record and before.record[field]
  if not was then return "" end
  if was[key] == nil then return "  (new)" end
  if was[key] ~= now then return "  (changed)" end
  return ""
end

local function _print(rec, before, real)
  local names = {}
  for rel in pairs(rec.files) do names[#names + 1] = rel end
  table.sort(names)
  for _, rel in ipairs(names) do
    io.stdout:write(("%s  .moat/%s%s\n"):format(rec.files[rel]:sub(1, 12), text.escape(rel),
      _mark(before, rel, rec.files[rel], "files")))
  end
  for _, it in ipairs(rec.items) do
    io.stdout:write(("allow  %s%s\n"):format(it.show, _mark(before, it.key, it.hash, "config")))
  end
  io.stdout:write(("trusted %s under %s/.moat/ and %s of its config\n"):format(text.count(rec.count, "file"),
    text.show(real), text.count(#rec.items, "guarded item")))
end

-- Entry point: returns the exit status.
function M.main(argv, ctx)
  local opts, real = cli.one_dir(ctx, argv, M.SPEC)
  local trust = require("moat.trust")
  -- The config is read to hash its guarded part; a broken config is still reported (exit 78).
  local cfg, cerr, ckind = require("moat.config").load(real, opts.config)
  if not cfg then exit.fail_kind(cerr, ckind) end
  local before = trust.status(real, cfg)
  local rec, terr = trust.trust(real, cfg)
  if not rec then exit.fail(exit.NOPERM, terr) end
  _print(rec, before, real)
  if rec.count == 0 and #rec.items == 0 then
    ui.hint("nothing in this workspace needs trust yet; adding .moat/ Lua or secrets later needs `moat trust` again")
  end
  return 0
end

return M
