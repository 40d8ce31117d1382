-- The podman runtime: the docker runtime's command line, run by the podman client.
local M = {}

for k, v in pairs(require("moat.runtime.docker").new("podman")) do M[k] = v end

return M
