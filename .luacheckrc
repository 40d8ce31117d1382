-- luacheck configuration (spec/lint_spec.lua runs it over lua/, examples/ and spec/).
std = "lua54"
max_line_length = 120

-- Specs run under busted; spec/helper.lua sets the repo root and the moat binary.
files["spec"] = {
  std = "+busted",
  globals = { "MOAT_ROOT", "MOAT_BIN" },
}
