-- Which container image a config's `dependencies:` pick when it names no `image:`.
-- A site or user replaces this module (moat/images.lua on the search path) to use its own images.
local M = {}

-- The image used when neither image: nor dependencies: say anything.
M.default = "docker.io/library/debian:bookworm-slim"

-- lang -> function(version) returning the image. Names are fully qualified so that podman,
-- which resolves no short names on Debian, pulls the same image docker would.
M.table = {
  python = function(v) return "docker.io/library/python:" .. v .. "-slim" end,
  node = function(v) return "docker.io/library/node:" .. v .. "-slim" end,
  go = function(v) return "docker.io/library/golang:" .. v end,
  golang = function(v) return "docker.io/library/golang:" .. v end,
  ruby = function(v) return "docker.io/library/ruby:" .. v .. "-slim" end,
  rust = function(v) return "docker.io/library/rust:" .. v .. "-slim" end,
  java = function(v) return "docker.io/library/eclipse-temurin:" .. v end,
  php = function(v) return "docker.io/library/php:" .. v .. "-cli" end,
  deno = function(v) return "docker.io/denoland/deno:" .. v end,
  bun = function(v) return "docker.io/oven/bun:" .. v end,
}

-- Picks the image for `dependencies` (array of "lang@version").
-- Returns image, warnings (array of strings for people).
function M.pick(dependencies)
  local warnings = {}
  local image
  for _, dep in ipairs(dependencies or {}) do
    local lang, version = dep:match("^([^@]+)@(.+)$")
    local f = lang and M.table[lang]
    if not f then
      warnings[#warnings + 1] = ("dependency '%s' has no image in moat's table (known: %s); set image: instead")
        :format(dep, M.known())
    elseif image then
      warnings[#warnings + 1] = ("dependency '%s' ignored: the image comes from the first dependency (%s);"
        .. " set image: to one that has both"):format(dep, image)
    else
      image = f(version)
    end
  end
  return image or M.default, warnings
end

-- Returns the known language names, sorted and comma-separated.
function M.known()
  local names = {}
  for k in pairs(M.table) do names[#names + 1] = k end
  table.sort(names)
  return table.concat(names, ", ")
end

return M
