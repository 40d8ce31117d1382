rockspec_format = "3.0"
package = "moat"
version = "scm-1"
source = {
  url = "git+file://./moat",
}
description = {
  summary = "Run an agent or any command in a container with exactly the secrets it needs",
  detailed = [[
moat resolves secrets on the host (1Password, AWS SSM, environment, your own backends),
launches docker, podman or a bubblewrap sandbox with the values only in its environment,
and keeps a hash-chained, signed audit log of what was resolved.]],
  license = "MIT",
}
dependencies = {
  "lua >= 5.4, < 5.5",
  "luafilesystem",
}
external_dependencies = {
  YAML = { header = "yaml.h" },
  JANSSON = { header = "jansson.h" },
  SODIUM = { header = "sodium.h" },
}
build = {
  type = "make",
  build_target = "all",
  build_variables = {
    BUILD = "build-rock",
  },
  install_target = "rock-install",
  install_variables = {
    BUILD = "build-rock",
    LUADIR = "$(LUADIR)",
    LIBDIR = "$(LIBDIR)",
    BINDIR = "$(BINDIR)",
  },
}
