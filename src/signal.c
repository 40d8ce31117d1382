/* moat.c.signal: catch signals by recording them, so the Lua loop decides what each means.
 * A handler only writes the signal's number to a self-pipe, which moat.c.proc's wait also
 * watches (see struct moat_signals in moat.h), so a wait returns as soon as one arrives. */
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <unistd.h>

#include "moat.h"

#define SENTINEL_KEY "moat.c.signal.sentinel"
#define MAX_PENDING 64

static int self_pipe[2] = { -1, -1 };
static int pending[MAX_PENDING];
static int npending;
static uint64_t caught_mask;

static const struct {
    const char *name;
    int num;
} table[] = {
    { "HUP", SIGHUP }, { "INT", SIGINT }, { "QUIT", SIGQUIT }, { "ILL", SIGILL },
    { "TRAP", SIGTRAP }, { "ABRT", SIGABRT }, { "BUS", SIGBUS }, { "FPE", SIGFPE },
    { "KILL", SIGKILL }, { "USR1", SIGUSR1 }, { "SEGV", SIGSEGV }, { "USR2", SIGUSR2 },
    { "PIPE", SIGPIPE }, { "ALRM", SIGALRM }, { "TERM", SIGTERM }, { "CHLD", SIGCHLD },
    { "CONT", SIGCONT }, { "STOP", SIGSTOP }, { "TSTP", SIGTSTP }, { "TTIN", SIGTTIN },
    { "TTOU", SIGTTOU }, { "URG", SIGURG }, { "XCPU", SIGXCPU }, { "XFSZ", SIGXFSZ },
    { "VTALRM", SIGVTALRM }, { "PROF", SIGPROF }, { "WINCH", SIGWINCH }, { "IO", SIGIO },
    { "SYS", SIGSYS },
};

static int number_of(const char *name)
{
    if (strncmp(name, "SIG", 3) == 0)
        name += 3;
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
        if (strcmp(table[i].name, name) == 0)
            return table[i].num;
    return -1;
}

static const char *name_of(int num)
{
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
        if (table[i].num == num)
            return table[i].name;
    return NULL;
}

static void on_signal(int sig)
{
    moat_wake(self_pipe[1], sig);
}

static void queue(unsigned char sig)
{
    if (npending < MAX_PENDING)
        pending[npending++] = sig;
}

/* Moves what the handlers wrote into the pending queue; true when anything arrived. */
static int collect(void)
{
    return moat_drain(self_pipe[0], queue);
}

static struct moat_signals shared = { -1, collect, number_of };

/* The signal named or numbered at the top of the stack; raises unless it can be caught. */
static int catchable(lua_State *L)
{
    int s = -1;
    if (lua_isinteger(L, -1)) {
        lua_Integer n = lua_tointeger(L, -1);
        s = n > 0 && n < 64 ? (int)n : -1;
    } else if (lua_type(L, -1) == LUA_TSTRING) {
        s = number_of(lua_tostring(L, -1));
    }
    luaL_argcheck(L, s > 0, 1, "no such signal");
    luaL_argcheck(L, s != SIGKILL && s != SIGSTOP && s != SIGCHLD && s < 64, 1,
                  "signal cannot be caught here");
    return s;
}

/* signal.catch({"INT", 15, ...}) -> true | nil, msg, errno: from now on each of these
 * signals is only recorded (see pending) and wakes moat.c.proc's wait. */
static int l_catch(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_Integer n = luaL_len(L, 1);
    int sigs[MAX_PENDING];
    luaL_argcheck(L, n <= MAX_PENDING, 1, "too many signals");
    for (lua_Integer i = 1; i <= n; i++) {
        lua_geti(L, 1, i);
        sigs[i - 1] = catchable(L);
        lua_pop(L, 1);
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigfillset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    for (lua_Integer i = 0; i < n; i++) {
        if (sigaction(sigs[i], &sa, NULL) < 0)
            return moat_fail(L, "sigaction", errno);
        caught_mask |= (uint64_t)1 << sigs[i];
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* signal.pending() -> array of the numbers of caught signals received since the last call */
static int l_pending(lua_State *L)
{
    collect();
    lua_createtable(L, npending, 0);
    for (int i = 0; i < npending; i++) {
        lua_pushinteger(L, pending[i]);
        lua_rawseti(L, -2, i + 1);
    }
    npending = 0;
    return 1;
}

static void restore_caught(void)
{
    for (int s = 1; s < 64; s++)
        if (caught_mask & ((uint64_t)1 << s))
            signal(s, SIG_DFL);
    caught_mask = 0;
}

/* signal.restore() -> true: every caught signal gets its default disposition back */
static int l_restore(lua_State *L)
{
    restore_caught();
    lua_pushboolean(L, 1);
    return 1;
}

/* signal.name(15) -> "TERM" | nil */
static int l_name(lua_State *L)
{
    const char *name = name_of((int)luaL_checkinteger(L, 1));
    if (!name)
        return 0;
    lua_pushstring(L, name);
    return 1;
}

/* signal.number("TERM" | "SIGTERM") -> 15 | nil */
static int l_number(lua_State *L)
{
    int n = number_of(luaL_checkstring(L, 1));
    if (n < 0)
        return 0;
    lua_pushinteger(L, n);
    return 1;
}

/* Runs at lua_close before the shared object can be unloaded: no handler may outlive it. */
static int sentinel_gc(lua_State *L)
{
    (void)L;
    restore_caught();
    return 0;
}

static const luaL_Reg funcs[] = {
    { "catch", l_catch },   { "pending", l_pending }, { "restore", l_restore },
    { "name", l_name },     { "number", l_number },   { NULL, NULL },
};

int luaopen_moat_c_signal(lua_State *L)
{
    if (self_pipe[0] < 0) {
        if (pipe2(self_pipe, O_CLOEXEC | O_NONBLOCK) < 0)
            return luaL_error(L, "moat.c.signal: pipe: %s", strerror(errno));
        shared.fd = self_pipe[0];
    }
    lua_pushlightuserdata(L, &shared);
    lua_setfield(L, LUA_REGISTRYINDEX, MOAT_SIGNALS_KEY);
    moat_sentinel(L, SENTINEL_KEY, sentinel_gc);
    luaL_newlib(L, funcs);
    return 1;
}
