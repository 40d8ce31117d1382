-- pass, the standard unix password manager.
--   pass://PATH           the password: the first line of the entry, without its newline
--   pass://PATH#KEY       the value of a "KEY: value" line further down (pass's convention for
--                         logins, URLs, …), e.g. pass://work/db#login
-- Install: copy to ~/.config/moat/lua/moat/backends/pass.lua.
-- One `pass show` per distinct entry, all concurrent (gpg-agent serves them).
local M = { scheme = "pass", description = "pass, the standard unix password manager (pass show)" }

-- Parses a reference; returns { path, key = string|nil } | nil, why.
function M.parse(ref)
  local rest = ref:match("^pass://(.*)$")
  if not rest then return nil, "a pass reference looks like pass://PATH[#KEY]" end
  local path, key = rest:match("^([^#]*)#(.*)$")
  path = path or rest
  if key == "" then return nil, "the key after # is empty" end
  if path == "" then return nil, "the entry path is empty" end
  if path:sub(1, 1) == "-" or path:sub(1, 1) == "/" then return nil, "the entry path must not start with - or /" end
  for seg in path:gmatch("[^/]+") do
    if seg == ".." or seg == "." then return nil, "the entry path must not contain . or .. segments" end
  end
  if path:find("//", 1, true) or path:sub(-1) == "/" then return nil, "the entry path has an empty segment" end
  return { path = path, key = key }
end

-- Readiness: is pass installed?
function M.check(ctx)
  local r = ctx.run({ "pass", "version" })
  if not r then return nil, "pass is not installed", "install pass: https://www.passwordstore.org/" end
  if r.code ~= 0 then return nil, "`pass version` failed", "check the pass installation" end
  return true
end

local function _failure(r, path)
  local err = r.stderr or ""
  if err:find("is not in the password store", 1, true) then
    return { kind = "not_found", reason = path .. " is not in the password store", fix = "check the entry: `pass ls`" }
  end
  if err:find("password store is empty", 1, true) then
    return { kind = "unavailable", reason = "the password store is not initialized",
      fix = "run `pass init GPG-ID` or set PASSWORD_STORE_DIR" }
  end
  if err:find("decryption failed", 1, true) or err:find("No secret key", 1, true) then
    return { kind = "auth", reason = "gpg cannot decrypt " .. path,
      fix = "unlock or import the GPG key the store is encrypted to (gpg-agent)" }
  end
  return { kind = "backend_error", reason = ("pass show failed (exit %s)"):format(tostring(r.code)),
    fix = "run `pass show " .. path .. "` by hand to see the error" }
end

-- Picks the value out of an entry's text.
local function _pick(text, key)
  if not key then return (text:match("^([^\n]*)")) end
  local first = true
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do
    if not first then
      local k, v = line:match("^([^:]+):%s?(.*)$")
      if k and k == key then return v end
    end
    first = false
  end
  return nil
end

local function _show(ctx, path)
  local r = ctx.run({ "pass", "show", "--", path })
  if not r then
    return nil, { kind = "unavailable", reason = "pass is not installed",
      fix = "install pass: https://www.passwordstore.org/" }
  end
  if r.timed_out then
    return nil, { kind = "timeout", reason = "pass did not finish in time", fix = "is gpg waiting for a passphrase?" }
  end
  if r.code ~= 0 then return nil, _failure(r, path) end
  return r.stdout
end

-- Resolves requests: one `pass show` per distinct entry, all concurrent.
function M.resolve(requests, ctx)
  local seen, order = {}, {}
  for _, req in ipairs(requests) do
    local path = req.parsed.path
    if not seen[path] then
      seen[path] = {}
      order[#order + 1] = path
    end
    table.insert(seen[path], req)
  end
  local fns = {}
  for i, path in ipairs(order) do fns[i] = function() return { _show(ctx, path) } end end
  local gather = ctx.gather or function(list)
    local out = {}
    for i, fn in ipairs(list) do out[i] = fn() end
    return out
  end
  for i, res in ipairs(gather(fns)) do
    local path = order[i]
    for _, req in ipairs(seen[path]) do
      if not res[1] then
        ctx.fail(req, res[2])
      else
        local v = _pick(res[1], req.parsed.key)
        if v then
          ctx.ok(req, v)
        else
          ctx.fail(req, { kind = "not_found", reason = ("%s has no line '%s: …'"):format(path, req.parsed.key),
            fix = "check the key: `pass show " .. path .. "`" })
        end
      end
    end
  end
end

return M
