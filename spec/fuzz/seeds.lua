-- Writes the seed corpora under spec/fuzz/corpus/<target>/ (run from the repo root:
-- `lua5.4 spec/fuzz/seeds.lua`). Inputs the fuzzers find are added beside these by hand.
package.path = "lua/?.lua;spec/?.lua;" .. package.path
package.cpath = (os.getenv("MOAT_BUILD") or "build") .. "/lib/?.so;" .. package.cpath

local auditlog = require("moat.auditlog")
local json = require("moat.c.json")
local sys = require("moat.c.system")
local target = require("fuzz.targets.audit")

-- Secret half of the fuzz-only key whose public half is in spec/fuzz/targets/audit.lua.
-- It signs nothing but these seeds.
local FUZZ_SK = "1a301fc8ac4bd004a74e138e4e285f57394eade7b3b964b60e9ba1d14081992a"
  .. target.PUBLIC_KEY

local function write(dir, name, data)
  local f = assert(io.open("spec/fuzz/corpus/" .. dir .. "/" .. name, "wb"))
  f:write(data)
  f:close()
end

local function slurp(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

local YAML = {
  ["example-agent.yaml"] = slurp("examples/agent/moat.yaml"),
  ["example-hello.yaml"] = slurp("examples/hello/moat.yaml"),
  ["flow.yaml"] = "name: x\ncommand: [sh, -c, 'echo hi']\nenv: {A: 1, B: \"two\"}\nmounts: []\n",
  ["block-scalars.yaml"] = "a: |\n  line 1\n  line 2\nb: >-\n  folded\n  text\nc: 'it''s'\n",
  ["anchor.yaml"] = "a: &x 1\nb: *x\n",
  ["merge.yaml"] = "base: {a: 1}\nother:\n  <<: {b: 2}\n",
  ["tags.yaml"] = "a: !!str 1\nb: !custom x\n",
  ["tag-directive.yaml"] = "%TAG ! tag:example.com,2000:\n---\na: 1\n",
  ["duplicate.yaml"] = "a: 1\nb: 2\na: 3\n",
  ["documents.yaml"] = "a: 1\n---\nb: 2\n",
  ["empty-doc.yaml"] = "---\n",
  ["deep.yaml"] = ("[" ):rep(70) .. ("]"):rep(70) .. "\n",
  ["complex-key.yaml"] = "? [a, b]\n: c\n",
  ["bad-utf8.yaml"] = "a: \xff\xfe\n",
  ["control.yaml"] = "a: \1\n",
  ["unclosed.yaml"] = "a: [1, 2\n",
  ["tabs.yaml"] = "a:\n\tb: 1\n",
  ["many.yaml"] = ("- x\n"):rep(200),
  ["quoted-keys.yaml"] = "\"a\\tb\": 1\n'c d': 2\n? e\n: 3\n",
  ["secrets.yaml"] = "secrets:\n  DB: op://vault/item/field\n  KEY: ssm:///app/key\n  HOME_X: env://HOME\n",
}

local REFS = {
  ["op.txt"] = "op://vault/item/field",
  ["op-section.txt"] = "op://Private Vault/My Item/section/password",
  ["op-query.txt"] = "op://v/i/f?attribute=otp&ssh-format=openssh",
  ["op-utf8.txt"] = "op://caf\xc3\xa9/it\xc3\xa9m/f",
  ["op-bad.txt"] = "op://v//f",
  ["ssm.txt"] = "ssm:///app/db/password",
  ["ssm-region.txt"] = "ssm://eu-west-1/app/key:3",
  ["ssm-label.txt"] = "ssm://us-gov-west-1/a/b:prod_1",
  ["ssm-bad.txt"] = "ssm://EU/a::b",
  ["env.txt"] = "env://HOME",
  ["env-bad.txt"] = "env://1X\1",
  ["awssm.txt"] = "awssm:///prod/db#password",
  ["awssm-arn.txt"] = "awssm://us-east-1/arn:aws:secretsmanager:us-east-1:123456789012:secret:db-AbCdEf",
  ["dash.txt"] = "-op://v/i/f",
  ["bare.txt"] = "vault/item/field",
  ["space.txt"] = " op://v/i/f ",
}

-- Encodes a mask input (see spec/fuzz/targets/mask.lua for the layout).
local function mask_input(min, repl_index, values, points, stream)
  local parts = { string.char((min - 1) | (repl_index << 3)), string.char(#values) }
  for _, v in ipairs(values) do parts[#parts + 1] = string.char(#v) .. v end
  parts[#parts + 1] = string.char(#points)
  for _, p in ipairs(points) do parts[#parts + 1] = string.char(p) end
  parts[#parts + 1] = stream
  return table.concat(parts)
end

local MASK = {
  ["plain.bin"] = mask_input(6, 0, { "hunter2pass" }, { 10, 100, 200 },
    "user=bob password=hunter2pass ok\nhunter2pas then hunter2pass\n"),
  ["encodings.bin"] = mask_input(6, 3, { "p@ss w/rd\"x" }, { 3, 128 },
    "raw p@ss w/rd\"x b64 cEBzcyB3L3JkIng= url p%40ss%20w%2Frd%22x json p@ss w/rd\\\"x end"),
  ["lines.bin"] = mask_input(4, 1, { "-----BEGIN\r\nabcdefgh\nEND-----" }, { 50, 51, 52 },
    "key:\n-----BEGIN\r\nabcdefgh\nEND-----\nand abcdefgh alone\n"),
  ["overlap.bin"] = mask_input(1, 2, { "aab", "abab", "b" }, { 1, 2, 3, 4, 5, 6, 7 },
    "aababababbaabab"),
  ["prefix.bin"] = mask_input(3, 0, { "abc", "abcdef" }, { 128 }, "abcde abcdef abcabcdef"),
  ["none.bin"] = mask_input(6, 0, {}, { 7 }, "nothing to hide here\0\255"),
  ["short.bin"] = mask_input(8, 0, { "tiny" }, {}, "tiny tiny"),
}

local function record(seq, prev, rtype, data)
  local rec = { seq = seq, ts = ("2026-01-01T00:00:%02d.000Z"):format(seq), type = rtype,
    data = data, prev = prev }
  rec.hash = assert(auditlog.hash(rec))
  return rec
end

-- Returns the log text and the signature's text (a line) of a run with `n` records, signed at
-- the last.
local function signed_log(n)
  local sk = sys.from_hex(FUZZ_SK)
  local lines, prev, last = {}, auditlog.ZERO, nil
  local types = { "run.started", "secret.resolved", "secret.failed", "container.started",
    "container.exited" }
  for seq = 1, n do
    local rtype = seq == n and "run.finished" or types[(seq - 1) % #types + 1]
    last = record(seq, prev, rtype, { name = "fuzz", n = seq, ok = seq % 2 == 0,
      command = json.array({ "sh", "-c", "true" }) })
    lines[#lines + 1] = assert(auditlog.serialize(last)) .. "\n"
    prev = last.hash
  end
  local sig = sys.sign(auditlog.signed_message(target.RUN_ID, last.seq, last.hash), sk)
  local sigtext = assert(json.encode({ run = target.RUN_ID, seq = last.seq, hash = last.hash,
    sig = sys.to_hex(sig) }, { canonical = true })) .. "\n"
  return table.concat(lines), sigtext, lines
end

local log3, sig3, lines3 = signed_log(3)
local log1, sig1 = signed_log(1)
local AUDIT = {
  ["valid-3.bin"] = log3 .. "\0" .. sig3,
  ["valid-1.bin"] = log1 .. "\0" .. sig1,
  ["unsigned.bin"] = log3,
  ["truncated.bin"] = lines3[1] .. lines3[2] .. "\0" .. sig3,
  ["torn.bin"] = log3 .. lines3[1]:sub(1, 20) .. "\0" .. sig3,
  ["swapped.bin"] = lines3[2] .. lines3[1] .. lines3[3] .. "\0" .. sig3,
  ["edited.bin"] = log3:gsub('"fuzz"', '"fuzZ"', 1) .. "\0" .. sig3,
  ["other-sig.bin"] = log3 .. "\0" .. sig1,
  ["bad-sig.bin"] = log1 .. "\0{\"seq\":1}\n",
  ["not-json.bin"] = "hello\n",
  -- The signature as the log's last line (what moat writes now; audit.sig is an older moat's).
  ["inline-3.bin"] = log3 .. sig3,
  ["inline-1.bin"] = log1 .. sig1,
  ["inline-then-record.bin"] = log3 .. sig3 .. lines3[1],
  ["inline-torn.bin"] = log3 .. sig3:sub(1, 30),
  ["inline-and-file.bin"] = log3 .. sig3 .. "\0" .. sig3,
}

for name, data in pairs(YAML) do write("yaml", name, data) end
for name, data in pairs(REFS) do write("refs", name, data) end
for name, data in pairs(MASK) do write("mask", name, data) end
for name, data in pairs(AUDIT) do write("audit", name, data) end
