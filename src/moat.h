/* Shared declarations of the C core: each src/<name>.c is the Lua module moat.c.<name>. */
#ifndef MOAT_H
#define MOAT_H

#include <errno.h>
#include <string.h>
#include <unistd.h>
#include <sys/resource.h>
#include <sys/stat.h>

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

/* What moat.c.system's harden changed in moat and a child may get back before exec
 * (moat.c.proc's restore_limits): the soft core-size limit and the umask as they were.
 * Shared through the registry under MOAT_SAVED_KEY, like moat_signals. */
struct moat_saved {
    int saved; /* harden has run */
    struct rlimit core;
    mode_t umask;
};
#define MOAT_SAVED_KEY "moat.c.system.saved"

/* The write end of a self-pipe as a signal handler uses it: one byte, errno untouched. A
 * full pipe already holds a wake-up, so a failed write loses nothing. */
static inline void moat_wake(int fd, int sig)
{
    int saved = errno;
    unsigned char b = (unsigned char)sig;
    if (write(fd, &b, 1) < 0) {
        /* nothing else can be done in a handler */
    }
    errno = saved;
}

/* Reads a non-blocking self-pipe empty; each byte read goes to took (may be NULL), and
 * the result is true when anything was read. */
static inline int moat_drain(int fd, void (*took)(unsigned char))
{
    unsigned char b[256];
    ssize_t n;
    int got = 0;
    while ((n = read(fd, b, sizeof b)) > 0 || (n < 0 && errno == EINTR)) {
        for (ssize_t i = 0; i < n; i++) {
            if (took)
                took(b[i]);
            got = 1;
        }
    }
    return got;
}

/* Keeps one userdata in the registry under key whose __gc, run at lua_close before the
 * shared object can be unloaded, is gc: no signal handler of the module may outlive it. */
static inline void moat_sentinel(lua_State *L, const char *key, lua_CFunction gc)
{
    if (lua_getfield(L, LUA_REGISTRYINDEX, key) == LUA_TNIL) {
        lua_newuserdatauv(L, 1, 0);
        lua_newtable(L);
        lua_pushcfunction(L, gc);
        lua_setfield(L, -2, "__gc");
        lua_setmetatable(L, -2);
        lua_setfield(L, LUA_REGISTRYINDEX, key);
    }
    lua_pop(L, 1);
}

/* Registers the metatable `name` of a userdata type: its metamethods `meta` and, when given,
 * its `methods` as __index. Leaves the stack as it was. */
static inline void moat_class(lua_State *L, const char *name, const luaL_Reg *meta, const luaL_Reg *methods)
{
    if (luaL_newmetatable(L, name)) {
        luaL_setfuncs(L, meta, 0);
        if (methods) {
            lua_newtable(L);
            luaL_setfuncs(L, methods, 0);
            lua_setfield(L, -2, "__index");
        }
    }
    lua_pop(L, 1);
}

#define MOAT_MOD(name) int luaopen_moat_c_##name(lua_State *L);

/* For moat's exit, which does not free the Lua state (src/main.c): kills and reaps the child
 * of every moat.c.proc handle whose child still runs, as closing the handles would, and wipes
 * their buffers; a child spawned with outlive (the reaper) is left to do its work. */
void moat_proc_end_all(void);

#endif
