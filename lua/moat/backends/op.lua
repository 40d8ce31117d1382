-- 1Password through the `op` CLI: op://vault/item/[section/]field[?attribute=...].
-- One `op inject` resolves a whole batch; when it fails, `op read` per reference (in parallel)
-- finds out which references are bad and why. Written against the public backend API only.
local M = { scheme = "op", description = "1Password through the op CLI (one op inject per batch)" }

M.INSTALL = "install the 1Password CLI: https://developer.1password.com/docs/cli/get-started/"
M.SIGNIN = "sign in with `eval $(op signin)`, or set OP_SERVICE_ACCOUNT_TOKEN for a service account"

-- Characters 1Password documents for names in references, plus UTF-8 bytes.
local SEGMENT = "^[%w _.%-\128-\255]+$"

-- Parses `ref`; returns { vault, item, section|nil, field, query|nil } | nil, why.
function M.parse(ref)
  if type(ref) ~= "string" then return nil, "a reference must be a string" end
  if ref:sub(1, 1) == "-" then return nil, "a reference must not start with '-'" end
  if ref:find("^%s") or ref:find("%s$") then return nil, "whitespace at the start or end" end
  if ref:find("[%z\1-\31\127]") then return nil, "control characters are not allowed" end
  local rest = ref:match("^op://(.*)$")
  if not rest then return nil, "must start with op://" end
  local path, query = rest:match("^([^?]*)%?(.*)$")
  path = path or rest
  if query then
    if query == "" then return nil, "empty query after '?'" end
    for pair in (query .. "&"):gmatch("([^&]*)&") do
      if not pair:match("^[%w_%-]+=[%w_.%-]+$") then
        return nil, ("query '%s' must be key=value pairs such as attribute=otp"):format(pair)
      end
    end
  end
  local parts = {}
  for seg in (path .. "/"):gmatch("([^/]*)/") do parts[#parts + 1] = seg end
  if #parts < 3 or #parts > 4 then
    return nil, "must be op://vault/item/field or op://vault/item/section/field"
  end
  for _, seg in ipairs(parts) do
    if seg == "" then return nil, "empty vault, item, section or field name" end
    if seg:find("^%s") or seg:find("%s$") then return nil, ("name '%s' has spaces at its ends"):format(seg) end
    if not seg:match(SEGMENT) then
      return nil, ("name '%s' has characters op references do not support (letters, digits, space,"
        .. " '-', '_', '.'); use the ID instead"):format(seg)
    end
  end
  return { vault = parts[1], item = parts[2], section = #parts == 4 and parts[3] or nil,
    field = parts[#parts], query = query }
end

-- Extracts the message of op's "[ERROR] 2024/01/01 12:00:00 message" lines (else the text).
local function _message(stderr)
  local msgs = {}
  for line in tostring(stderr or ""):gmatch("[^\n]+") do
    local m = line:match("^%[ERROR%] %d+/%d+/%d+ %d+:%d+:%d+ (.*)$")
    if m then msgs[#msgs + 1] = m end
  end
  if #msgs > 0 then return table.concat(msgs, "; ") end
  local text = tostring(stderr or ""):match("^%s*(.-)%s*$")
  return text ~= "" and text or nil
end

local function _not_installed()
  return { kind = "unavailable", reason = "op (1Password CLI) is not installed (not found on PATH)",
    fix = M.INSTALL }
end

-- op's error classes, tried in order: name, kind, stable fragments of its messages (lower
-- case; any one shows the class, across op 2.x versions and with or without the vault clause),
-- and the fixed reason and fix built from the reference, never from op's wording.
M.CLASSES = {
  { "signed_out", "auth", { "not currently signed in", "not signed in", "account is not signed in",
      "session expired", "no accounts configured", "authorization prompt dismissed",
      "invalid service account token", "you are not signed in" },
    reason = function() return "op is not signed in to a 1Password account" end,
    fix = function() return M.SIGNIN end },
  { "no_field", "not_found", { "isn't a field", "is not a field", "no field matched" },
    reason = function(p) return ("field '%s' not found in item '%s'"):format(p.field or "?", p.item or "?") end,
    fix = function(p)
      return ("list the item's fields with `op item get '%s' --vault '%s'`")
        :format(p.item or "ITEM", p.vault or "VAULT")
    end,
  },
  { "no_item", "not_found", { "isn't an item", "is not an item", "no item found", "no item matched" },
    reason = function(p) return ("item '%s' not found in vault '%s'"):format(p.item or "?", p.vault or "?") end,
    fix = function(p)
      return ("check the item name with `op item get '%s' --vault '%s'` (or `op item list --vault '%s'`)")
        :format(p.item or "ITEM", p.vault or "VAULT", p.vault or "VAULT")
    end,
  },
  { "no_vault", "not_found", { "isn't a vault", "is not a vault", "doesn't seem to be a vault", "no vault matched",
      "vault not found" },
    reason = function(p) return ("vault '%s' not found or not accessible"):format(p.vault or "?") end,
    fix = function()
      return "list the vaults you can use with `op vault list` (a service account sees only the vaults it was granted)"
    end,
  },
  { "forbidden", "permission", { "forbidden", "you do not have permission", "(403)", "access denied" },
    reason = function() return "1Password refused access to this item" end,
    fix = function() return "ask for access to the vault, or use an account or service account that has it" end },
  { "throttled", "throttled", { "too many requests", "rate limit", "(429)" },
    reason = function() return "1Password throttled the requests" end,
    fix = function() return "retry later or lower --jobs" end },
  { "network", "network", { "connection refused", "connection reset", "no such host", "dial tcp", "i/o timeout",
      "network is unreachable", "tls handshake timeout", "could not connect", "couldn't connect",
      "failed to connect", "temporary failure in name resolution" },
    reason = function() return "op could not reach 1Password" end,
    fix = function() return "check the network connection (and any proxy), then try again" end },
}

-- Takes op's message; returns its class entry | nil.
function M.class_of(msg)
  msg = tostring(msg or ""):lower()
  for _, c in ipairs(M.CLASSES) do
    for _, frag in ipairs(c[3]) do
      if msg:find(frag, 1, true) then return c end
    end
  end
  return nil
end

local function _signed_out(msg)
  local c = M.class_of(msg)
  return c and c[1] == "signed_out"
end

-- Takes text; returns it with its quoted stretches ('…', "…") elided: an unrecognised message
-- may quote the value op failed on.
local function _elide(text)
  return require("moat.scrub").elide(text)
end

-- Maps op's stderr for reference `req` to a failure { kind, reason, fix }: a recognised message
-- to fixed text, anything else through ctx.sanitize with its quoted strings elided.
function M.map_error(stderr, req, code, ctx)
  local p = req.parsed or M.parse(req.ref) or {}
  local msg = _message(stderr)
  if not msg then
    return { kind = "backend_error", reason = ("op exited with status %s without an error message")
      :format(tostring(code)), fix = ("run `op read --no-newline '%s'` yourself to see what happens"):format(req.ref) }
  end
  local c = M.class_of(msg)
  if c then return { kind = c[2], reason = c.reason(p), fix = c.fix(p) } end
  local said = _elide((ctx.sanitize or tostring)(msg))
  return { kind = "backend_error", reason = "op failed: " .. said,
    fix = ("run `op read --no-newline '%s'` yourself to see the full error"):format(req.ref) }
end

-- The failure when op cannot be started: not installed, or what moat's ctx.run found (a
-- resource limit such as too many open files names the limit and --jobs).
local function _cannot_start(ctx, errno)
  if errno == 2 then return _not_installed() end
  return ctx.last_failure or { kind = "unavailable", reason = "op cannot be started", fix = M.INSTALL }
end

-- Builds the inject template: each reference framed by markers no value can know in advance.
local function _template(requests, nonce)
  local out = {}
  for i, req in ipairs(requests) do
    out[#out + 1] = ("%s:%d:begin\n{{ %s }}\n%s:%d:end\n"):format(nonce, i, req.ref, nonce, i)
  end
  return table.concat(out)
end

-- Splits op inject's output by the markers; returns { [i] = value } (missing ones absent).
local function _split(out, requests, nonce)
  local values, pos = {}, 1
  for i = 1, #requests do
    local b = ("%s:%d:begin\n"):format(nonce, i)
    local e = ("\n%s:%d:end\n"):format(nonce, i)
    local s1, e1 = out:find(b, pos, true)
    if not s1 then break end
    local s2, e2 = out:find(e, e1 + 1, true)
    if not s2 then break end
    values[i] = out:sub(e1 + 1, s2 - 1)
    pos = e2 + 1
  end
  return values
end

local function _read_one(req, ctx)
  local r, _, errno = ctx.run({ "op", "read", "--no-newline", req.ref })
  if not r then
    return ctx.fail(req, _cannot_start(ctx, errno))
  end
  local f = ctx.run_failure(r, "op")
  if f then return ctx.fail(req, f) end
  if r.code == 0 then return ctx.ok(req, r.stdout) end
  return ctx.fail(req, M.map_error(r.stderr, req, r.code, ctx))
end

-- Resolves `requests` with one `op inject`, falling back to parallel `op read`s.
function M.resolve(requests, ctx)
  if #requests == 0 then return end
  local sys = require("moat.c.system")
  local nonce = "moat-" .. sys.random_hex(16)
  local r, _, errno = ctx.run({ "op", "inject" }, { stdin = _template(requests, nonce) })
  if not r then
    local f = _cannot_start(ctx, errno)
    for _, req in ipairs(requests) do ctx.fail(req, f) end
    return
  end
  local f = ctx.run_failure(r, "op")
  if f and f.kind == "timeout" then
    for _, req in ipairs(requests) do ctx.fail(req, f) end
    return
  end
  local pending = requests
  if r.code == 0 and not f then
    local values = _split(r.stdout, requests, nonce)
    pending = {}
    for i, req in ipairs(requests) do
      if values[i] then ctx.ok(req, values[i]) else pending[#pending + 1] = req end
    end
    if #pending > 0 then ctx.log("op inject output lacked", #pending, "markers; reading those one by one") end
  else
    local msg = _message(r.stderr)
    if msg and _signed_out(msg) then
      local auth = M.map_error(r.stderr, requests[1], r.code, ctx)
      for _, req in ipairs(requests) do ctx.fail(req, auth) end
      return
    end
    ctx.log("op inject failed (status", r.code, "); reading", #requests, "references one by one")
  end
  if #pending == 0 then return end
  local tasks = {}
  for _, req in ipairs(pending) do
    tasks[#tasks + 1] = function() _read_one(req, ctx) end
  end
  ctx.gather(tasks)
end

-- Is op usable? Runs `op --version`, then `op whoami` to see whether it is signed in.
function M.check(ctx)
  local r, _, errno = ctx.run({ "op", "--version" }, { timeout = math.min(ctx.timeout, 15) })
  if not r then
    if errno == 2 then return nil, _not_installed().reason, M.INSTALL end
    return nil, "op cannot be started", M.INSTALL
  end
  if r.code ~= 0 then return nil, "`op --version` failed", M.INSTALL end
  local w = ctx.run({ "op", "whoami" }, { timeout = math.min(ctx.timeout, 15) })
  if w and w.code ~= 0 then
    local msg = _message(w.stderr)
    if msg and _signed_out(msg) then return nil, "op is not signed in to a 1Password account", M.SIGNIN end
  end
  return true
end

return M
