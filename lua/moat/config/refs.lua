-- Spotting secret values that look like a reference someone mistyped (DESIGN §4): such a value
-- would otherwise go into the container as a plain string and nobody would notice.
local M = {}

-- The schemes of the built-in backends; callers pass their own list when users add backends.
M.BUILTIN = { "op", "ssm", "env", "awssm" }

-- Schemes whose body is [region]/path: a slash lost after the colon belongs to the path, so
-- ssm:/x means ssm:///x.
local REGIONAL = { ssm = true, awssm = true }

-- What the body of a bare "scheme:body" must look like to count as a reference at all; other
-- schemes are never guessed from this form, so host:port values (redis:6379) stay plain.
local BARE = {
  env = "^[A-Za-z_][A-Za-z0-9_]*$",
  op = "^[^/%s][^/]*/[^/]+/[^/]",
}

local function _scheme(head, known)
  local lower = head:lower()
  for _, s in ipairs(known) do
    if s:lower() == lower then return s end
  end
  return nil
end

-- Builds the corrected reference for `scheme`, the separator written (`sep`) and the rest.
local function _fix(scheme, sep, body)
  if body == "" then return nil end
  if sep == ":" then
    if BARE[scheme] and body:match(BARE[scheme]) then return scheme .. "://" .. body end
    return nil
  end
  if sep ~= ":/" and sep ~= "//" and sep ~= "///" then return nil end
  if not REGIONAL[scheme] then return scheme .. "://" .. body end
  -- ssm//eu-west-1/x names a region; ssm//x, ssm:/x and ssm///x name a path.
  if sep == "//" and body:match("^%l%l%-%l+%-%d+/") then return scheme .. "://" .. body end
  return scheme .. ":///" .. body
end

-- Returns the corrected form when `value` looks like a broken reference for one of
-- `known_schemes` (array of scheme names; default the built-in ones), else nil. Broken means:
-- "scheme:/x", "scheme//x" or "scheme///x" instead of "scheme://x"; "env:VAR"; "op:v/i/f";
-- whitespace before or after an otherwise good reference. Values that merely contain a colon
-- (postgres:5432, a:b) and well-formed references return nil.
function M.suspicious_ref(value, known_schemes)
  if type(value) ~= "string" then return nil end
  local trimmed = value:match("^%s*(.-)%s*$")
  local head, sep, body = trimmed:match("^([A-Za-z][A-Za-z0-9+.-]*)(:?/*)(.*)$")
  if not head or sep == "" then return nil end
  local scheme = _scheme(head, known_schemes or M.BUILTIN)
  if not scheme then return nil end
  if sep:sub(1, 3) == "://" then
    -- A well-formed separator: only surrounding whitespace can be wrong here; the backend
    -- judges the rest when the plan is built.
    if trimmed == value or body == "" then return nil end
    return scheme .. sep .. body
  end
  return _fix(scheme, sep, body)
end

return M
