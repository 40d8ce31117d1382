/* moat.c.proc: spawn processes without a shell, wait on many at once. A wait also returns
 * when a signal caught through moat.c.signal arrives. */
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <linux/close_range.h>

#include <sodium.h>

#include "moat.h"

#define PROC_MT "moat.proc"
#define SENTINEL_KEY "moat.proc.sentinel"
#define DEFAULT_CAP ((lua_Integer)16 << 20)
#define DEFAULT_GRACE 2000
#define CHUNK 65536
#define READS_PER_WAKE 16
#define STREAM_PIPE (256 << 10) /* stream mode's stdout and stderr pipes (1 MiB was no faster) */
/* Children are also noticed through SIGCHLD; the tick only guards against someone
 * else taking that signal over. */
#define TICK_MS 250
#define DEFAULT_PATH "/usr/local/bin:/usr/bin:/bin"

extern char **environ;

enum { MODE_PIPE, MODE_INHERIT, MODE_NULL };
enum { STAGE_EXEC = 1, STAGE_CWD = 2 };

struct stream {
    int fd;
    int fresh; /* bytes arrived since the last report to a streaming waiter */
    char *buf;
    size_t len, size;
};

typedef struct Proc {
    struct Proc *prev, *next; /* in the list of handles whose child is not reaped yet */
    int listed;
    pid_t pid;
    int reaped, have_status, status, closed;
    int group, stream;
    int outlive; /* a watchdog: moat's exit (moat_proc_end_all) leaves it running */
    int in_fd;
    const char *in_data; /* pinned by the userdata's user value */
    size_t in_len, in_off;
    struct stream out, err;
    size_t cap;
    int64_t start, end, deadline, kill_at, grace;
    int64_t linger, let_go_at; /* group mode: how long pipes may outlive the child; when */
    int timed_out, truncated, held;
    int reported; /* a wait has returned it as done */
} Proc;

/* Open handles whose child has not been reaped: their pids are not strays (see l_reap). */
static Proc *tracked;

static void track(Proc *p)
{
    p->prev = NULL;
    p->next = tracked;
    if (tracked)
        tracked->prev = p;
    tracked = p;
    p->listed = 1;
}

static void untrack(Proc *p)
{
    if (!p->listed)
        return;
    if (p->prev)
        p->prev->next = p->next;
    else
        tracked = p->next;
    if (p->next)
        p->next->prev = p->prev;
    p->prev = p->next = NULL;
    p->listed = 0;
}

/* SIGCHLD's handler writes a byte here so that wait wakes when a child exits. */
static int chld_pipe[2] = { -1, -1 };

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void close_fd(int *fd)
{
    if (*fd >= 0) {
        close(*fd);
        *fd = -1;
    }
}

static void on_chld(int sig)
{
    moat_wake(chld_pipe[1], sig);
}

/* moat.c.signal's shared part, which luaopen made sure is in the registry. */
static const struct moat_signals *shared_signals(lua_State *L)
{
    lua_getfield(L, LUA_REGISTRYINDEX, MOAT_SIGNALS_KEY);
    const struct moat_signals *s = lua_touserdata(L, -1);
    lua_pop(L, 1);
    if (s == NULL)
        luaL_error(L, "moat.c.proc: moat.c.signal is not loaded");
    return s;
}

/* A signal argument: a number or a name like "TERM"; misuse raises. */
static int check_signal(lua_State *L, int arg, int def)
{
    if (lua_isnoneornil(L, arg))
        return def;
    if (lua_type(L, arg) == LUA_TNUMBER) {
        lua_Integer n = luaL_checkinteger(L, arg);
        luaL_argcheck(L, n > 0 && n < NSIG, arg, "no such signal");
        return (int)n;
    }
    int n = shared_signals(L)->number(luaL_checkstring(L, arg));
    luaL_argcheck(L, n > 0, arg, "no such signal");
    return n;
}

static void wipe_free(struct stream *s)
{
    if (s->buf) {
        sodium_memzero(s->buf, s->size);
        free(s->buf);
    }
    s->buf = NULL;
    s->len = s->size = 0;
}

/* Grows by copying, never realloc, so no stale copy of child output is left behind. */
static void reserve(lua_State *L, struct stream *s, size_t need, size_t cap)
{
    if (need <= s->size)
        return;
    size_t size = s->size ? s->size : 4096;
    while (size < need)
        size *= 2;
    if (size > cap)
        size = cap;
    char *buf = malloc(size);
    if (buf == NULL)
        luaL_error(L, "not enough memory for process output");
    if (s->len)
        memcpy(buf, s->buf, s->len);
    size_t len = s->len;
    wipe_free(s);
    s->buf = buf;
    s->len = len;
    s->size = size;
}

static void signal_target(Proc *p, int sig)
{
    if (p->pid > 0 && !p->reaped)
        kill(p->group ? -p->pid : p->pid, sig);
}

/* The cap bounds what is held between drains; past it the group is killed. */
static void append(lua_State *L, Proc *p, struct stream *s, const char *data, size_t n)
{
    size_t take = n;
    if (s->len + n > p->cap) {
        take = p->cap - s->len;
        if (!p->truncated) {
            p->truncated = 1;
            signal_target(p, SIGKILL);
        }
    }
    if (take == 0)
        return;
    reserve(L, s, s->len + take, p->cap);
    memcpy(s->buf + s->len, data, take);
    s->len += take;
    s->fresh = 1;
}

static void pump_read(lua_State *L, Proc *p, struct stream *s)
{
    char chunk[CHUNK];
    size_t used = 0;
    for (int i = 0; i < READS_PER_WAKE && s->fd >= 0; i++) {
        /* Below the cap a read goes straight into the buffer (one copy less); near it,
         * into chunk, so that append sees what goes past the cap. */
        int direct = s->len + CHUNK <= p->cap;
        if (direct)
            reserve(L, s, s->len + CHUNK, p->cap);
        ssize_t n = read(s->fd, direct ? s->buf + s->len : chunk, CHUNK);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            break;
        if (n <= 0) {
            close_fd(&s->fd);
            break;
        }
        if (direct) {
            s->len += (size_t)n;
            s->fresh = 1;
            continue;
        }
        if ((size_t)n > used)
            used = (size_t)n;
        append(L, p, s, chunk, (size_t)n);
    }
    sodium_memzero(chunk, used);
}

static void pump_write(Proc *p)
{
    while (p->in_fd >= 0 && p->in_off < p->in_len) {
        size_t n = p->in_len - p->in_off;
        ssize_t w = write(p->in_fd, p->in_data + p->in_off, n > CHUNK ? CHUNK : n);
        if (w > 0)
            p->in_off += (size_t)w;
        else if (w < 0 && errno == EAGAIN)
            return;
        else if (!(w < 0 && errno == EINTR))
            break; /* EPIPE: the child stopped reading its input */
    }
    close_fd(&p->in_fd);
}

/* Reads what is in the pipes now and closes them. */
static void drain_and_close(lua_State *L, Proc *p)
{
    close_fd(&p->in_fd);
    while (p->out.fd >= 0) {
        pump_read(L, p, &p->out);
        close_fd(&p->out.fd);
    }
    while (p->err.fd >= 0) {
        pump_read(L, p, &p->err);
        close_fd(&p->err.fd);
    }
}

static void exited(lua_State *L, Proc *p, int status, int have_status)
{
    p->reaped = 1;
    untrack(p);
    p->status = status;
    p->have_status = have_status;
    close_fd(&p->in_fd);
    /* A grandchild still holding the pipes must not keep the wait hanging. */
    if (p->group) {
        kill(-p->pid, SIGKILL);
        if (p->linger >= 0)
            p->let_go_at = now_ms() + p->linger;
    } else {
        drain_and_close(L, p);
    }
}

/* Pipes that outlived the child and its group by the linger are held by a process that left
 * the group (setsid): what the child printed is all it printed. */
static void let_go(lua_State *L, Proc *p, int64_t now)
{
    if (!p->reaped || p->let_go_at < 0 || now < p->let_go_at)
        return;
    p->let_go_at = -1;
    if (p->out.fd >= 0 || p->err.fd >= 0) {
        p->held = 1;
        drain_and_close(L, p);
    }
}

static void reap(lua_State *L, Proc *p, int flags)
{
    if (p->reaped || p->pid <= 0)
        return;
    int st = 0;
    pid_t r;
    do
        r = waitpid(p->pid, &st, flags);
    while (r < 0 && errno == EINTR);
    if (r == p->pid)
        exited(L, p, st, 1);
    else if (r < 0) /* ECHILD: someone else reaped it */
        exited(L, p, 0, 0);
}

static void enforce(lua_State *L, Proc *p, int64_t now)
{
    if (p->deadline < 0 || now < p->deadline)
        return;
    if (p->reaped) {
        /* Past the deadline nothing outside our group may hold the pipes open. */
        if (p->out.fd >= 0 || p->err.fd >= 0) {
            p->timed_out = 1;
            drain_and_close(L, p);
        }
        return;
    }
    if (!p->timed_out) {
        p->timed_out = 1;
        signal_target(p, SIGTERM);
        p->kill_at = now + p->grace;
    }
    if (p->kill_at >= 0 && now >= p->kill_at) {
        signal_target(p, SIGKILL);
        p->kill_at = -1;
    }
}

static int is_done(Proc *p)
{
    int done = p->reaped && p->in_fd < 0 && p->out.fd < 0 && p->err.fd < 0;
    if (done && p->end < 0)
        p->end = now_ms();
    return done;
}

static Proc *check_proc(lua_State *L, int idx)
{
    Proc *p = luaL_checkudata(L, idx, PROC_MT);
    if (p->closed)
        luaL_error(L, "process handle is closed");
    return p;
}

static void push_result(lua_State *L, Proc *p)
{
    lua_createtable(L, 0, 7);
    if (p->have_status && WIFEXITED(p->status)) {
        lua_pushinteger(L, WEXITSTATUS(p->status));
        lua_setfield(L, -2, "code");
    }
    if (p->have_status && WIFSIGNALED(p->status)) {
        lua_pushinteger(L, WTERMSIG(p->status));
        lua_setfield(L, -2, "signal");
    }
    lua_pushlstring(L, p->out.buf ? p->out.buf : "", p->out.len);
    lua_setfield(L, -2, "stdout");
    lua_pushlstring(L, p->err.buf ? p->err.buf : "", p->err.len);
    lua_setfield(L, -2, "stderr");
    lua_pushboolean(L, p->timed_out);
    lua_setfield(L, -2, "timed_out");
    lua_pushboolean(L, p->truncated);
    lua_setfield(L, -2, "truncated");
    lua_pushboolean(L, p->held);
    lua_setfield(L, -2, "held");
    lua_pushinteger(L, p->end - p->start);
    lua_setfield(L, -2, "ms");
}

/* Kills a running child (its group when it leads one) and reaps it. */
static void end_child(Proc *p)
{
    if (p->pid > 0 && !p->reaped) {
        signal_target(p, SIGKILL);
        int st;
        while (waitpid(p->pid, &st, 0) < 0 && errno == EINTR)
            ;
        p->reaped = 1;
    }
}

void moat_proc_end_all(void)
{
    while (tracked) {
        Proc *p = tracked;
        if (!p->outlive)
            end_child(p);
        untrack(p);
        wipe_free(&p->out);
        wipe_free(&p->err);
    }
}

/* Kills and reaps a running child, closes the pipes, wipes the buffers. Idempotent. */
static int m_close(lua_State *L)
{
    Proc *p = luaL_checkudata(L, 1, PROC_MT);
    if (p->closed)
        return 0;
    end_child(p);
    untrack(p);
    close_fd(&p->in_fd);
    close_fd(&p->out.fd);
    close_fd(&p->err.fd);
    wipe_free(&p->out);
    wipe_free(&p->err);
    p->closed = 1;
    return 0;
}

static int m_pid(lua_State *L)
{
    lua_pushinteger(L, check_proc(L, 1)->pid);
    return 1;
}

/* p:kill([sig]) -> true | nil, msg, errno; false when already reaped. */
static int m_kill(lua_State *L)
{
    Proc *p = check_proc(L, 1);
    int sig = check_signal(L, 2, SIGTERM);
    if (p->reaped) {
        lua_pushboolean(L, 0);
        return 1;
    }
    if (kill(p->group ? -p->pid : p->pid, sig) < 0)
        return moat_fail(L, "kill", errno);
    lua_pushboolean(L, 1);
    return 1;
}

/* Polls this process's pipes for up to ms, moving data into the buffers. */
static void pump_once(lua_State *L, Proc *p, int ms)
{
    struct pollfd fds[2];
    struct stream *ss[2];
    int n = 0;
    if (p->out.fd >= 0) {
        fds[n] = (struct pollfd){ .fd = p->out.fd, .events = POLLIN };
        ss[n++] = &p->out;
    }
    if (p->err.fd >= 0) {
        fds[n] = (struct pollfd){ .fd = p->err.fd, .events = POLLIN };
        ss[n++] = &p->err;
    }
    if (n == 0) {
        poll(NULL, 0, ms);
        return;
    }
    if (poll(fds, (nfds_t)n, ms) > 0)
        for (int i = 0; i < n; i++)
            if (fds[i].revents)
                pump_read(L, p, ss[i]);
}

/* Durations and sizes beyond this (about 35 years of ms, 1 TiB) mean "no limit" anyway;
 * clamping keeps deadline arithmetic from overflowing. */
#define MAX_AMOUNT ((lua_Integer)1 << 40)

static lua_Integer clamp_amount(lua_Integer v)
{
    return v > MAX_AMOUNT ? MAX_AMOUNT : v;
}

/* p:terminate([grace_ms]) -> result: TERM the group, KILL after grace, reap, close pipes. */
static int m_terminate(lua_State *L)
{
    Proc *p = check_proc(L, 1);
    lua_Integer grace = clamp_amount(luaL_optinteger(L, 2, p->grace));
    luaL_argcheck(L, grace >= 0, 2, "grace must be >= 0");
    close_fd(&p->in_fd);
    if (!p->reaped) {
        signal_target(p, SIGTERM);
        int64_t until = now_ms() + grace;
        for (reap(L, p, WNOHANG); !p->reaped; reap(L, p, WNOHANG)) {
            if (now_ms() >= until) {
                signal_target(p, SIGKILL);
                reap(L, p, 0);
                break;
            }
            pump_once(L, p, 10);
        }
    }
    drain_and_close(L, p);
    is_done(p);
    push_result(L, p);
    return 1;
}

/* p:exited() -> true once the child itself has been reaped, pipes it shared open or not. */
static int m_exited(lua_State *L)
{
    Proc *p = check_proc(L, 1);
    reap(L, p, WNOHANG);
    lua_pushboolean(L, p->reaped);
    return 1;
}

static int m_done(lua_State *L)
{
    lua_pushboolean(L, is_done(check_proc(L, 1)));
    return 1;
}

/* p:result() -> nil until done, then { code, signal, stdout, stderr, timed_out, truncated, ms }. */
static int m_result(lua_State *L)
{
    Proc *p = check_proc(L, 1);
    if (!is_done(p))
        return 0;
    push_result(L, p);
    return 1;
}

static void push_drained(lua_State *L, struct stream *s)
{
    lua_pushlstring(L, s->buf ? s->buf : "", s->len);
    if (s->buf)
        sodium_memzero(s->buf, s->len);
    s->len = 0;
    s->fresh = 0;
}

/* p:drain() -> stdout_chunk, stderr_chunk captured since the last drain. */
static int m_drain(lua_State *L)
{
    Proc *p = check_proc(L, 1);
    push_drained(L, &p->out);
    push_drained(L, &p->err);
    return 2;
}

static const char *const spawn_keys[] = {
    "env", "stdin", "stdout", "stderr", "cwd", "cap", "timeout", "grace", "group", "stream",
    "pdeathsig", "restore_limits", "linger", "outlive", NULL,
};

static void check_keys(lua_State *L, int t)
{
    lua_pushnil(L);
    while (lua_next(L, t)) {
        lua_pop(L, 1);
        int known = 0;
        if (lua_type(L, -1) == LUA_TSTRING)
            for (int i = 0; spawn_keys[i] && !known; i++)
                known = strcmp(lua_tostring(L, -1), spawn_keys[i]) == 0;
        if (!known)
            luaL_error(L, "spawn: unknown option '%s'", luaL_tolstring(L, -1, NULL));
    }
}

static lua_Integer opt_int(lua_State *L, const char *k, lua_Integer def, lua_Integer min)
{
    lua_getfield(L, 2, k);
    lua_Integer v = def;
    if (!lua_isnil(L, -1)) {
        if (!lua_isinteger(L, -1))
            luaL_error(L, "spawn: option '%s' must be an integer", k);
        v = clamp_amount(lua_tointeger(L, -1));
        if (v < min)
            luaL_error(L, "spawn: option '%s' must be >= %d", k, (int)min);
    }
    lua_pop(L, 1);
    return v;
}

static int opt_bool(lua_State *L, const char *k, int def)
{
    lua_getfield(L, 2, k);
    int v = def;
    if (!lua_isnil(L, -1)) {
        if (!lua_isboolean(L, -1))
            luaL_error(L, "spawn: option '%s' must be a boolean", k);
        v = lua_toboolean(L, -1);
    }
    lua_pop(L, 1);
    return v;
}

static int opt_mode(lua_State *L, const char *k)
{
    static const char *const modes[] = { "pipe", "inherit", "null", NULL };
    lua_getfield(L, 2, k);
    int mode = MODE_PIPE;
    if (!lua_isnil(L, -1)) {
        const char *s = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "";
        for (mode = 0; modes[mode] && strcmp(modes[mode], s) != 0; mode++)
            ;
        if (!modes[mode])
            luaL_error(L, "spawn: option '%s' must be \"pipe\", \"inherit\" or \"null\"", k);
    }
    lua_pop(L, 1);
    return mode;
}

/* A NULL-terminated array of the strings in the table at idx, in Lua memory. The
 * strings stay pinned by that table. */
static char **string_array(lua_State *L, int idx, const char *what, int need_eq)
{
    /* Raw access only: a metamethod could hand back strings nothing keeps alive. */
    lua_Integer n = (lua_Integer)lua_rawlen(L, idx);
    if (n < 0 || n > INT_MAX / 2)
        luaL_error(L, "spawn: %s is too long", what);
    char **a = lua_newuserdatauv(L, ((size_t)n + 1) * sizeof *a, 0);
    for (lua_Integer i = 1; i <= n; i++) {
        size_t len;
        if (lua_rawgeti(L, idx, i) != LUA_TSTRING)
            luaL_error(L, "spawn: %s[%d] must be a string", what, (int)i);
        a[i - 1] = (char *)lua_tolstring(L, -1, &len);
        if (strlen(a[i - 1]) != len)
            luaL_error(L, "spawn: %s[%d] contains a NUL byte", what, (int)i);
        if (need_eq && !strchr(a[i - 1], '='))
            luaL_error(L, "spawn: %s[%d] is not NAME=value", what, (int)i);
        lua_pop(L, 1);
    }
    a[n] = NULL;
    return a;
}

/* Resolves a program name without '/' along path, leaving the found path on the stack.
 * Only absolute PATH entries count: the current directory (the workspace) is never searched. */
static const char *find_program(lua_State *L, const char *prog, const char *path, int *err)
{
    *err = ENOENT;
    if (strchr(prog, '/'))
        return prog;
    if (*prog == '\0')
        return NULL;
    for (const char *p = path;; p++) {
        const char *colon = strchrnul(p, ':');
        if (colon > p && *p == '/') {
            luaL_Buffer b;
            luaL_buffinit(L, &b);
            luaL_addlstring(&b, p, (size_t)(colon - p));
            luaL_addchar(&b, '/');
            luaL_addstring(&b, prog);
            luaL_pushresult(&b);
            const char *cand = lua_tostring(L, -1);
            struct stat st;
            if (stat(cand, &st) == 0 && S_ISREG(st.st_mode)) {
                if (access(cand, X_OK) == 0)
                    return cand;
                *err = EACCES;
            }
            lua_pop(L, 1);
        }
        if (*colon == '\0')
            return NULL;
        p = colon;
    }
}

static const char *env_path(char **env)
{
    for (; env && *env; env++)
        if (strncmp(*env, "PATH=", 5) == 0)
            return *env + 5;
    return NULL;
}

/* Keeps fds 0-2 free so the child's dup2 onto them cannot clobber another pipe. */
static int above_stdio(int fd)
{
    if (fd < 0 || fd > 2)
        return fd;
    int nfd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    close(fd);
    return nfd;
}

/* A pipe with both ends close-on-exec and above 2; the parent's end (if any) non-blocking. */
static int make_pipe(int fds[2], int parent_end)
{
    if (pipe2(fds, O_CLOEXEC) < 0)
        return errno;
    fds[0] = above_stdio(fds[0]);
    fds[1] = above_stdio(fds[1]);
    if (fds[0] < 0 || fds[1] < 0 ||
        (parent_end >= 0 && fcntl(fds[parent_end], F_SETFL, O_NONBLOCK) < 0)) {
        int err = errno;
        close_fd(&fds[0]);
        close_fd(&fds[1]);
        return err;
    }
    return 0;
}

static int open_null(int flags)
{
    return above_stdio(open("/dev/null", flags | O_CLOEXEC));
}

struct child {
    int fd[3]; /* what becomes 0, 1, 2; -1 = inherit */
    int report; /* close-on-exec pipe that carries {stage, errno} on failure */
    int group;
    int pdeathsig; /* sent to the child when moat dies; 0: none */
    pid_t parent;
    const struct moat_saved *restore; /* limits and umask to give back; NULL: keep moat's */
    const char *cwd, *path;
    char **argv, **envp;
};

static _Noreturn void child_fail(const struct child *c, int stage)
{
    int msg[2] = { stage, errno };
    if (write(c->report, msg, sizeof msg) < 0) {
        /* The parent then sees EOF and a child that exits 127. */
    }
    _exit(127);
}

/* Runs in the vforked child, on moat's memory: only async-signal-safe calls, and no writes
 * outside its own frame but errno's. */
static _Noreturn void child_exec(const struct child *c)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_DFL;
    sigemptyset(&sa.sa_mask);
    for (int s = 1; s < NSIG; s++)
        sigaction(s, &sa, NULL); /* fails harmlessly for KILL, STOP and libc's own */
    if (c->group)
        setpgid(0, 0);
    /* Dies with moat; if moat died before the prctl took effect, nobody would send it. */
    if (c->pdeathsig && prctl(PR_SET_PDEATHSIG, c->pdeathsig) < 0)
        child_fail(c, STAGE_EXEC);
    if (c->pdeathsig && getppid() != c->parent)
        _exit(127);
    if (c->restore) {
        setrlimit(RLIMIT_CORE, &c->restore->core); /* at worst the child keeps no core */
        umask(c->restore->umask);
    }
    for (int i = 0; i < 3; i++)
        if (c->fd[i] >= 0 && dup2(c->fd[i], i) < 0)
            child_fail(c, STAGE_EXEC);
    /* Fds moat itself inherited without close-on-exec must not reach the child either. */
    if (close_range(3, ~0U, CLOSE_RANGE_CLOEXEC) < 0)
        for (int fd = 3; fd < 1024; fd++)
            fcntl(fd, F_SETFD, FD_CLOEXEC);
    if (c->cwd && chdir(c->cwd) < 0)
        child_fail(c, STAGE_CWD);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    execve(c->path, c->argv, c->envp);
    child_fail(c, STAGE_EXEC);
}

/* Opens the child's ends (and the parent's, into p). Returns 0 or an errno. */
static int open_stdio(Proc *p, struct child *c, int *report_rd, int in_mode, int out_mode,
                      int err_mode)
{
    int fds[2];
    int err;
    if (in_mode == MODE_PIPE) {
        if ((err = make_pipe(fds, 1)))
            return err;
        c->fd[0] = fds[0];
        p->in_fd = fds[1];
    } else if (in_mode == MODE_NULL && (c->fd[0] = open_null(O_RDONLY)) < 0) {
        return errno;
    }
    int modes[2] = { out_mode, err_mode };
    struct stream *ss[2] = { &p->out, &p->err };
    for (int i = 0; i < 2; i++) {
        if (modes[i] == MODE_PIPE) {
            if ((err = make_pipe(fds, 0)))
                return err;
            c->fd[i + 1] = fds[1];
            ss[i]->fd = fds[0];
            /* A relayed stream then moves in fewer, larger reads, with fewer wake-ups of
             * either side; where the kernel refuses, the default size still works. */
            if (p->stream && fcntl(fds[0], F_SETPIPE_SZ, STREAM_PIPE) < 0)
                errno = 0;
        } else if (modes[i] == MODE_NULL && (c->fd[i + 1] = open_null(O_WRONLY)) < 0) {
            return errno;
        }
    }
    if ((err = make_pipe(fds, -1)))
        return err;
    *report_rd = fds[0];
    c->report = fds[1];
    return 0;
}

static void close_child_ends(struct child *c)
{
    for (int i = 0; i < 3; i++)
        close_fd(&c->fd[i]);
}

static void close_parent_ends(Proc *p)
{
    close_fd(&p->in_fd);
    close_fd(&p->out.fd);
    close_fd(&p->err.fd);
}

/* Forks and execs; returns 0, or an errno with *stage set, the child reaped. vfork: moat
 * waits for the exec anyway (the report pipe), and not copying its page tables (nor taking
 * the copy-on-write faults after) is most of what a spawn costs. The child only reads c,
 * writes its own stack and makes async-signal-safe calls before it execs or _exits. */
static int fork_exec(lua_State *L, Proc *p, struct child *c, int report_rd, int *stage)
{
    sigset_t all, old;
    sigfillset(&all);
    /* Blocked across fork so no handler runs in the child before the reset. */
    sigprocmask(SIG_SETMASK, &all, &old);
    pid_t pid = vfork();
    if (pid == 0)
        child_exec(c);
    int err = errno;
    sigprocmask(SIG_SETMASK, &old, NULL);
    close_child_ends(c);
    close_fd(&c->report);
    if (pid < 0) {
        *stage = 0;
        return err;
    }
    p->pid = pid; /* vfork: the child has made its group and exec'd (or failed) by now */
    int msg[2];
    ssize_t r;
    do
        r = read(report_rd, msg, sizeof msg);
    while (r < 0 && errno == EINTR);
    if (r != (ssize_t)sizeof msg)
        return 0;
    reap(L, p, 0);
    *stage = msg[0];
    return msg[1];
}

struct spawn_opts {
    int in_mode, in_idx, out_mode, err_mode, group, stream, pdeathsig, restore_limits, outlive;
    const char *cwd;
    lua_Integer cap, timeout, grace, linger;
};

/* pdeathsig: nil or false (none), true (KILL), or a signal name or number. */
static int opt_pdeathsig(lua_State *L)
{
    int t = lua_getfield(L, 2, "pdeathsig");
    int sig = 0;
    if (t == LUA_TBOOLEAN)
        sig = lua_toboolean(L, -1) ? SIGKILL : 0;
    else if (t == LUA_TSTRING || t == LUA_TNUMBER)
        sig = check_signal(L, lua_gettop(L), 0);
    else if (t != LUA_TNIL)
        luaL_error(L, "spawn: option 'pdeathsig' must be a boolean or a signal");
    lua_pop(L, 1);
    return sig;
}

/* What harden changed, when moat.c.system has it (nothing to give back otherwise). */
static const struct moat_saved *saved_limits(lua_State *L)
{
    lua_getfield(L, LUA_REGISTRYINDEX, MOAT_SAVED_KEY);
    const struct moat_saved *s = lua_touserdata(L, -1);
    lua_pop(L, 1);
    return s && s->saved ? s : NULL;
}

/* Reads spawn's options table (at index 2) but env; raises on misuse. Strings it returns
 * stay on the stack. */
static void read_opts(lua_State *L, struct spawn_opts *o)
{
    o->in_mode = MODE_NULL;
    int in_type = lua_getfield(L, 2, "stdin");
    o->in_idx = lua_gettop(L);
    if (in_type == LUA_TSTRING)
        o->in_mode = MODE_PIPE;
    else if (in_type == LUA_TBOOLEAN && lua_toboolean(L, -1))
        o->in_mode = MODE_INHERIT;
    else if (in_type != LUA_TNIL)
        luaL_error(L, "spawn: option 'stdin' must be a string, true or nil");
    o->out_mode = opt_mode(L, "stdout");
    o->err_mode = opt_mode(L, "stderr");
    int cwd_type = lua_getfield(L, 2, "cwd");
    if (cwd_type != LUA_TNIL && cwd_type != LUA_TSTRING)
        luaL_error(L, "spawn: option 'cwd' must be a string");
    o->cwd = lua_tostring(L, -1);
    o->cap = opt_int(L, "cap", DEFAULT_CAP, 1);
    o->timeout = opt_int(L, "timeout", -1, 0);
    o->grace = opt_int(L, "grace", DEFAULT_GRACE, 0);
    o->linger = opt_int(L, "linger", -1, 0);
    o->group = opt_bool(L, "group", 1);
    o->stream = opt_bool(L, "stream", 0);
    o->restore_limits = opt_bool(L, "restore_limits", 0);
    o->outlive = opt_bool(L, "outlive", 0);
    o->pdeathsig = opt_pdeathsig(L);
}

/* Pushes a fresh process handle set up from o; nothing is started yet. */
static Proc *new_proc(lua_State *L, const struct spawn_opts *o)
{
    Proc *p = lua_newuserdatauv(L, sizeof *p, 1);
    memset(p, 0, sizeof *p);
    p->in_fd = p->out.fd = p->err.fd = -1;
    p->end = p->kill_at = p->let_go_at = -1;
    luaL_setmetatable(L, PROC_MT);
    if (o->in_mode == MODE_PIPE) {
        lua_pushvalue(L, o->in_idx);
        lua_setiuservalue(L, -2, 1);
        p->in_data = lua_tolstring(L, o->in_idx, &p->in_len);
    }
    p->cap = (size_t)o->cap;
    p->grace = o->grace;
    p->linger = o->linger;
    p->group = o->group;
    p->stream = o->stream;
    p->outlive = o->outlive;
    p->start = now_ms();
    p->deadline = o->timeout >= 0 ? p->start + o->timeout : -1;
    return p;
}

/* proc.spawn(argv, opts) -> p | nil, msg, errno */
static int l_spawn(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    if (lua_isnoneornil(L, 2)) {
        lua_settop(L, 1);
        lua_newtable(L);
    }
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_settop(L, 2);
    check_keys(L, 2);
    char **argv = string_array(L, 1, "argv", 0);
    if (argv[0] == NULL)
        luaL_argerror(L, 1, "argv is empty");
    char **envp = environ;
    const char *path = NULL;
    if (lua_getfield(L, 2, "env") != LUA_TNIL) {
        if (!lua_istable(L, -1))
            luaL_error(L, "spawn: option 'env' must be an array of NAME=value strings");
        envp = string_array(L, lua_gettop(L), "env", 1);
        path = env_path(envp);
    }
    struct spawn_opts o;
    read_opts(L, &o);
    if (!path)
        path = getenv("PATH");
    int err;
    const char *file = find_program(L, argv[0], path ? path : DEFAULT_PATH, &err);
    if (file == NULL)
        return moat_fail(L, argv[0], err);

    Proc *p = new_proc(L, &o);
    struct child c = { .fd = { -1, -1, -1 }, .report = -1, .group = o.group, .cwd = o.cwd,
                       .pdeathsig = o.pdeathsig, .parent = getpid(),
                       .restore = o.restore_limits ? saved_limits(L) : NULL,
                       .path = file, .argv = argv, .envp = envp };
    int report_rd = -1, stage = 0;
    err = open_stdio(p, &c, &report_rd, o.in_mode, o.out_mode, o.err_mode);
    if (err == 0) {
        err = fork_exec(L, p, &c, report_rd, &stage);
        close(report_rd);
    } else {
        close_child_ends(&c);
        close_fd(&c.report);
        close_fd(&report_rd);
    }
    if (err) {
        close_parent_ends(p);
        return moat_fail(L, stage == STAGE_CWD ? o.cwd : stage ? argv[0]
                            : lua_pushfstring(L, "cannot start %s", argv[0]), err);
    }
    if (p->in_fd >= 0 && p->in_len == 0)
        close_fd(&p->in_fd);
    track(p);
    return 1;
}

/* proc.which(name[, path]) -> file | nil: the program spawn would run for name, searched
 * on the absolute entries of path (default: moat's PATH); a name with "/" when it exists. */
static int l_which(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);
    const char *path = luaL_optstring(L, 2, getenv("PATH"));
    struct stat st;
    int err;
    if (strchr(name, '/')) {
        lua_pushvalue(L, 1);
        return stat(name, &st) == 0;
    }
    if (find_program(L, name, path ? path : DEFAULT_PATH, &err) == NULL)
        return 0;
    return 1;
}

static pid_t check_pid(lua_State *L, int arg)
{
    lua_Integer pid = luaL_checkinteger(L, arg);
    luaL_argcheck(L, pid > 0 && pid <= INT_MAX, arg, "not a process id");
    return (pid_t)pid;
}

static int is_tracked(pid_t pid)
{
    for (Proc *p = tracked; p; p = p->next)
        if (p->pid == pid)
            return 1;
    return 0;
}

/* proc.tracks(pid) -> true when an open handle waits for that child. */
static int l_tracks(lua_State *L)
{
    lua_pushboolean(L, is_tracked(check_pid(L, 1)));
    return 1;
}

/* proc.reap(pid) -> true (reaped) | false (still running) | nil, msg, errno: collects a
 * child of moat that no handle tracks (one re-parented to moat, its subreaper). A tracked
 * one raises: its handle must get its status. */
static int l_reap(lua_State *L)
{
    pid_t pid = check_pid(L, 1);
    if (is_tracked(pid))
        return luaL_error(L, "reap: process %d belongs to an open handle", (int)pid);
    int st;
    pid_t r;
    do
        r = waitpid(pid, &st, WNOHANG);
    while (r < 0 && errno == EINTR);
    if (r < 0)
        return moat_fail(L, "waitpid", errno);
    lua_pushboolean(L, r == pid);
    return 1;
}

/* proc.has_children() -> whether moat has any child, running or not yet reaped. */
static int l_has_children(lua_State *L)
{
    siginfo_t info;
    memset(&info, 0, sizeof info);
    int r;
    do
        r = waitid(P_ALL, 0, &info, WEXITED | WNOHANG | WNOWAIT);
    while (r < 0 && errno == EINTR);
    lua_pushboolean(L, r == 0);
    return 1;
}

/* Polls every pipe of the processes in ps once; handles what is ready. */
static void poll_round(lua_State *L, Proc **ps, int n, struct pollfd *fds, Proc **owner,
                       int *which, int ms)
{
    int k = 0;
    fds[k++] = (struct pollfd){ .fd = chld_pipe[0], .events = POLLIN };
    fds[k++] = (struct pollfd){ .fd = shared_signals(L)->fd, .events = POLLIN };
    for (int i = 0; i < n; i++) {
        Proc *p = ps[i];
        int fd[3] = { p->in_fd, p->out.fd, p->err.fd };
        for (int j = 0; j < 3; j++) {
            if (fd[j] < 0)
                continue;
            fds[k] = (struct pollfd){ .fd = fd[j], .events = j == 0 ? POLLOUT : POLLIN };
            owner[k] = p;
            which[k++] = j;
        }
    }
    int r = poll(fds, (nfds_t)k, ms);
    if (r < 0 && errno != EINTR)
        luaL_error(L, "poll: %s", strerror(errno));
    for (int i = 2; r > 0 && i < k; i++) {
        if (!fds[i].revents)
            continue;
        Proc *p = owner[i];
        if (which[i] == 0)
            pump_write(p);
        else
            pump_read(L, p, which[i] == 1 ? &p->out : &p->err);
    }
}

static int64_t min_wait(int64_t t, int64_t v)
{
    if (v < 0)
        v = 0;
    return t < 0 || v < t ? v : t;
}

/* How long the next poll may sleep: until the caller's limit, the next deadline, or a tick. */
static int next_timeout(Proc **ps, int n, int64_t until, int64_t now)
{
    int64_t t = until >= 0 ? min_wait(-1, until - now) : -1;
    for (int i = 0; i < n; i++) {
        Proc *p = ps[i];
        if (is_done(p))
            continue;
        if (!p->reaped)
            t = min_wait(t, TICK_MS);
        if (p->deadline >= 0 && !p->timed_out)
            t = min_wait(t, p->deadline - now);
        if (p->kill_at >= 0)
            t = min_wait(t, p->kill_at - now);
        if (p->let_go_at >= 0)
            t = min_wait(t, p->let_go_at - now);
    }
    return t > INT_MAX ? INT_MAX : (int)t;
}

/* proc.wait(list, timeout_ms) -> done_list, streaming_list: returns when a process is
 * done, a stream process has new output, a caught signal arrives, or the timeout passes.
 * done_list holds every done process of the list, but one that an earlier wait already
 * returned as done does not end a wait by itself (unless all are done): a caller that
 * leaves it in the list neither spins nor starves the others' pipes. */
static int l_wait(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_Integer limit = clamp_amount(luaL_optinteger(L, 2, -1));
    lua_Integer n = luaL_len(L, 1);
    luaL_argcheck(L, n >= 0 && n < INT_MAX / 4, 1, "too many processes");
    Proc **ps = lua_newuserdatauv(L, (size_t)n * sizeof *ps + 1, 0);
    for (lua_Integer i = 0; i < n; i++) {
        lua_geti(L, 1, i + 1);
        ps[i] = luaL_testudata(L, -1, PROC_MT);
        if (!ps[i] || ps[i]->closed)
            luaL_error(L, "wait: item %d is not an open process", (int)i + 1);
        lua_pop(L, 1);
    }
    size_t nfds = 3 * (size_t)n + 2;
    struct pollfd *fds = lua_newuserdatauv(L, nfds * sizeof *fds, 0);
    Proc **owner = lua_newuserdatauv(L, nfds * sizeof *owner, 0);
    int *which = lua_newuserdatauv(L, nfds * sizeof *which, 0);
    int64_t until = limit >= 0 ? now_ms() + limit : -1;
    const struct moat_signals *signals = shared_signals(L);
    for (;;) {
        moat_drain(chld_pipe[0], NULL);
        int sig = signals->collect(), ready = 0, running = 0;
        int64_t now = now_ms();
        for (int i = 0; i < n; i++) {
            reap(L, ps[i], WNOHANG);
            let_go(L, ps[i], now);
            enforce(L, ps[i], now);
            int done = is_done(ps[i]);
            running |= !done;
            ready |= (done && !ps[i]->reported) || (ps[i]->stream && (ps[i]->out.fresh || ps[i]->err.fresh));
        }
        if (ready || (n > 0 && !running) || sig || (until >= 0 && now >= until))
            break;
        poll_round(L, ps, (int)n, fds, owner, which, next_timeout(ps, (int)n, until, now));
    }
    lua_newtable(L);
    lua_newtable(L);
    for (int i = 0, d = 0, s = 0; i < n; i++) {
        Proc *p = ps[i];
        if (is_done(p)) {
            p->reported = 1;
            lua_geti(L, 1, i + 1);
            lua_rawseti(L, -3, ++d);
        } else if (p->stream && (p->out.fresh || p->err.fresh)) {
            p->out.fresh = p->err.fresh = 0;
            lua_geti(L, 1, i + 1);
            lua_rawseti(L, -2, ++s);
        }
    }
    return 2;
}

/* Runs at lua_close before the shared object can be unloaded: no handler may outlive it. */
static int sentinel_gc(lua_State *L)
{
    (void)L;
    signal(SIGCHLD, SIG_DFL);
    return 0;
}

static const luaL_Reg methods[] = {
    { "pid", m_pid },         { "kill", m_kill },     { "terminate", m_terminate },
    { "done", m_done },       { "result", m_result }, { "drain", m_drain },
    { "exited", m_exited },   { "close", m_close },   { NULL, NULL },
};

static const luaL_Reg metamethods[] = {
    { "__gc", m_close }, { "__close", m_close }, { NULL, NULL },
};

static const luaL_Reg funcs[] = {
    { "spawn", l_spawn },
    { "which", l_which },
    { "wait", l_wait },
    { "tracks", l_tracks },
    { "reap", l_reap },
    { "has_children", l_has_children },
    { NULL, NULL },
};

int luaopen_moat_c_proc(lua_State *L)
{
    if (chld_pipe[0] < 0 && pipe2(chld_pipe, O_CLOEXEC | O_NONBLOCK) < 0)
        return luaL_error(L, "moat.c.proc: pipe: %s", strerror(errno));
    /* Waits watch moat.c.signal's pipe, and kill takes its signal names. */
    lua_getglobal(L, "require");
    lua_pushliteral(L, "moat.c.signal");
    lua_call(L, 1, 0);
    shared_signals(L);
    /* A child that closes its stdin early must not kill moat. */
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_chld;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART | SA_NOCLDSTOP;
    sigaction(SIGCHLD, &sa, NULL);

    moat_sentinel(L, SENTINEL_KEY, sentinel_gc);

    moat_class(L, PROC_MT, metamethods, methods);
    luaL_newlib(L, funcs);
    return 1;
}
