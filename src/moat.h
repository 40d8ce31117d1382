/* Shared declarations of the C core: each src/<name>.c is the Lua module moat.c.<name>. */
#ifndef MOAT_H
#define MOAT_H

#include <errno.h>
#include <string.h>

#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>

/* The one way an expected failure reaches Lua: nil, message[, errno]. */
static inline int moat_fail(lua_State *L, const char *what, int err)
{
    lua_pushnil(L);
    if (err) {
        lua_pushfstring(L, "%s: %s", what, strerror(err));
        lua_pushinteger(L, err);
        return 3;
    }
    lua_pushstring(L, what);
    return 2;
}

/* What moat.c.signal lends moat.c.proc, whose wait must return when a caught signal
 * arrives. The two may be separate shared objects loaded RTLD_LOCAL, so nothing is shared
 * by symbol: moat.c.signal puts a pointer to its one instance in the registry under
 * MOAT_SIGNALS_KEY (a light userdata), and moat.c.proc requires moat.c.signal to get it. */
struct moat_signals {
    int fd;                          /* readable while a caught signal waits to be collected */
    int (*collect)(void);            /* queues what arrived for pending(); true if anything did */
    int (*number)(const char *name); /* "TERM" or "SIGTERM" -> 15; -1 when unknown */
};
#define MOAT_SIGNALS_KEY "moat.c.signal.shared"

#define MOAT_MOD(name) int luaopen_moat_c_##name(lua_State *L);

#endif
