/* moat.c.system: hashing, randomness, clocks, process hardening, the audit log's durable
 * append, atomic file replacement, Ed25519 signatures, hex and base64 (libsodium's).
 * Mechanisms only. */
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "moat.h"

#define LOG_MT "moat.system.log"
#define TAIL_CHUNK 4096
#define RANDOM_MAX 1024
#define FD_MT "moat.system.fd"
#define READ_MAX ((lua_Integer)1 << 20)
#define READ_CHUNK 65536

extern char **environ;

typedef struct {
    int fd;
} Log;

/* What harden changed, for moat.c.proc (see struct moat_saved). */
static struct moat_saved saved;

/* Hex goes through scratch memory that is wiped after the copy: to_hex also writes keys. */
static void push_hex(lua_State *L, const unsigned char *bin, size_t len)
{
    luaL_argcheck(L, len < ((size_t)-1 - 1) / 2, 1, "too long");
    size_t cap = 2 * len + 1;
    char *hex = lua_newuserdatauv(L, cap, 0);
    sodium_bin2hex(hex, cap, bin, len);
    lua_pushlstring(L, hex, 2 * len);
    sodium_memzero(hex, cap);
    lua_remove(L, -2);
}

static int l_sha256(lua_State *L)
{
    size_t len;
    const char *data = luaL_checklstring(L, 1, &len);
    unsigned char digest[crypto_hash_sha256_BYTES];
    crypto_hash_sha256(digest, (const unsigned char *)data, len);
    push_hex(L, digest, sizeof digest);
    return 1;
}

static int l_random_hex(lua_State *L)
{
    lua_Integer n = luaL_checkinteger(L, 1);
    luaL_argcheck(L, n >= 0 && n <= RANDOM_MAX, 1, "byte count out of range (0..1024)");
    unsigned char bytes[RANDOM_MAX];
    randombytes_buf(bytes, (size_t)n);
    push_hex(L, bytes, (size_t)n);
    return 1;
}

/* UTC time with milliseconds, or microseconds when asked for (now(6)): run ids made in
 * the same millisecond still sort by time. */
static int l_now(lua_State *L)
{
    int digits = (int)luaL_optinteger(L, 1, 3);
    luaL_argcheck(L, digits == 3 || digits == 6, 1, "3 or 6 digits");
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    long frac = digits == 3 ? ts.tv_nsec / 1000000L : ts.tv_nsec / 1000L;
    char buf[64];
    snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%0*ldZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, digits, frac);
    lua_pushstring(L, buf);
    return 1;
}

static lua_Integer clock_ms(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (lua_Integer)ts.tv_sec * 1000 + ts.tv_nsec / 1000000L;
}

static int l_epoch_ms(lua_State *L)
{
    lua_pushinteger(L, clock_ms(CLOCK_REALTIME));
    return 1;
}

static int l_monotonic_ms(lua_State *L)
{
    lua_pushinteger(L, clock_ms(CLOCK_MONOTONIC));
    return 1;
}

static int l_isatty(lua_State *L)
{
    lua_Integer fd = luaL_checkinteger(L, 1);
    luaL_argcheck(L, fd >= 0 && fd <= INT_MAX, 1, "not a file descriptor");
    lua_pushboolean(L, isatty((int)fd));
    return 1;
}

/* No core dumps and no ptrace-style reads of our memory by same-uid processes, and
 * anything we create is private to us. */
static int l_harden(lua_State *L)
{
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0)
        return moat_fail(L, "prctl(PR_SET_DUMPABLE)", errno);
    struct rlimit core;
    if (getrlimit(RLIMIT_CORE, &core) != 0)
        return moat_fail(L, "getrlimit(RLIMIT_CORE)", errno);
    /* The hard limit stays, so that a child (spawn's restore_limits) can get the user's
     * soft limit back; moat itself is also undumpable. */
    struct rlimit none = { 0, core.rlim_max };
    if (setrlimit(RLIMIT_CORE, &none) != 0)
        return moat_fail(L, "setrlimit(RLIMIT_CORE)", errno);
    mode_t mask = umask(077);
    if (!saved.saved) {
        saved.core = core;
        saved.umask = mask;
        saved.saved = 1;
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* system.getrlimit(name) -> soft, hard (-1: unlimited) | nil, msg, errno; name is "nofile",
 * "nproc", "core" or "as". */
static int l_getrlimit(lua_State *L)
{
    static const char *const names[] = { "nofile", "nproc", "core", "as", NULL };
    static const int res[] = { RLIMIT_NOFILE, RLIMIT_NPROC, RLIMIT_CORE, RLIMIT_AS };
    int i = luaL_checkoption(L, 1, NULL, names);
    struct rlimit rl;
    if (getrlimit(res[i], &rl) != 0)
        return moat_fail(L, "getrlimit", errno);
    lua_pushinteger(L, rl.rlim_cur == RLIM_INFINITY ? -1 : (lua_Integer)rl.rlim_cur);
    lua_pushinteger(L, rl.rlim_max == RLIM_INFINITY ? -1 : (lua_Integer)rl.rlim_max);
    return 2;
}

static int l_environ(lua_State *L)
{
    lua_newtable(L);
    for (char **e = environ; e && *e; e++) {
        const char *eq = strchr(*e, '=');
        if (eq == NULL)
            continue;
        lua_pushlstring(L, *e, (size_t)(eq - *e));
        lua_pushstring(L, eq + 1);
        lua_rawset(L, -3);
    }
    return 1;
}

static int l_getpid(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)getpid());
    return 1;
}

/* system.subreaper([on]) -> true | nil, msg, errno: while on (the default), descendants
 * orphaned by their parents are re-parented to moat instead of init, so moat can end them. */
static int l_subreaper(lua_State *L)
{
    int on = lua_isnoneornil(L, 1) ? 1 : lua_toboolean(L, 1);
    if (prctl(PR_SET_CHILD_SUBREAPER, on ? 1 : 0, 0, 0, 0) != 0)
        return moat_fail(L, "prctl(PR_SET_CHILD_SUBREAPER)", errno);
    lua_pushboolean(L, 1);
    return 1;
}

/* A signal given by number or by name ("TERM", "SIGTERM"); names through moat.c.signal. */
static int signal_arg(lua_State *L, int arg)
{
    if (lua_type(L, arg) == LUA_TNUMBER) {
        lua_Integer n = luaL_checkinteger(L, arg);
        luaL_argcheck(L, n >= 0 && n < NSIG, arg, "no such signal");
        return (int)n;
    }
    const char *name = luaL_checkstring(L, arg);
    lua_getfield(L, LUA_REGISTRYINDEX, MOAT_SIGNALS_KEY);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lua_getglobal(L, "require");
        lua_pushliteral(L, "moat.c.signal");
        lua_call(L, 1, 0);
        lua_getfield(L, LUA_REGISTRYINDEX, MOAT_SIGNALS_KEY);
    }
    const struct moat_signals *s = lua_touserdata(L, -1);
    lua_pop(L, 1);
    int n = s ? s->number(name) : -1;
    luaL_argcheck(L, n > 0, arg, "no such signal");
    return n;
}

/* system.kill(pid, sig) -> true | nil, msg, errno; a negative pid is that process group.
 * 0 and -1 (moat's own group, every process) are refused as misuse. */
static int l_kill(lua_State *L)
{
    lua_Integer pid = luaL_checkinteger(L, 1);
    luaL_argcheck(L, pid != 0 && pid != -1 && pid >= -INT_MAX && pid <= INT_MAX, 1,
                  "not a process or group id");
    int sig = signal_arg(L, 2);
    if (kill((pid_t)pid, sig) != 0)
        return moat_fail(L, "kill", errno);
    lua_pushboolean(L, 1);
    return 1;
}

static int l_getuid(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)getuid());
    return 1;
}

static int l_realpath(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    char buf[PATH_MAX];
    if (realpath(path, buf) == NULL) {
        int err = errno;
        return moat_fail(L, lua_pushfstring(L, "realpath %s", path), err);
    }
    lua_pushstring(L, buf);
    return 1;
}

/* Makes a directory with exactly `mode` (default 0700), whatever the umask. */
static int l_mkdir(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    mode_t mode = (mode_t)luaL_optinteger(L, 2, 0700);
    if (mkdir(path, mode) != 0) {
        int err = errno;
        return moat_fail(L, lua_pushfstring(L, "mkdir %s", path), err);
    }
    if (chmod(path, mode) != 0) {
        int err = errno;
        return moat_fail(L, lua_pushfstring(L, "chmod %s", path), err);
    }
    lua_pushboolean(L, 1);
    return 1;
}

static int fsync_dir(const char *path)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return errno;
    int err = fsync(fd) == 0 ? 0 : errno;
    close(fd);
    return err;
}

static int l_fsync_dir(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    int err = fsync_dir(path);
    if (err)
        return moat_fail(L, lua_pushfstring(L, "fsync %s", path), err);
    lua_pushboolean(L, 1);
    return 1;
}

/* Opens (creating 0600 if absent) for appending; returns the fd or -errno. The file is
 * chmod-ed only when we created it, so an existing log's mode is left to its owner. */
static int log_open(const char *path)
{
    for (int tries = 0; tries < 8; tries++) {
        int fd = open(path, O_RDWR | O_APPEND | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd >= 0) {
            if (fchmod(fd, 0600) != 0) {
                int err = errno;
                close(fd);
                return -err;
            }
            return fd;
        }
        if (errno != EEXIST)
            return -errno;
        fd = open(path, O_RDWR | O_APPEND | O_CLOEXEC);
        if (fd >= 0)
            return fd;
        if (errno != ENOENT) /* ENOENT: removed between the two opens; try again */
            return -errno;
    }
    return -ENOENT;
}

static int log_lock(int fd)
{
    while (flock(fd, LOCK_EX) != 0)
        if (errno != EINTR)
            return errno;
    return 0;
}

/* Raises unless text is one line ending in "\n", or with many, one or more such lines. */
static void check_lines(lua_State *L, int arg, const char *text, size_t len, int many)
{
    luaL_argcheck(L, len > 0 && text[len - 1] == '\n', arg, "text must end in \"\\n\"");
    luaL_argcheck(L, many || memchr(text, '\n', len - 1) == NULL, arg,
                  "line must not contain \"\\n\" before its end");
}

/* One write() of the whole text, then (with sync) fsync; a write cut short by a signal goes
 * on with the rest. When a short write cannot go on, the file is cut back to its old size so
 * no torn line stays behind. Returns 0 or an errno, with *what set. */
static int log_append(int fd, const char *text, size_t len, int sync, const char **what)
{
    struct stat st;
    if (fstat(fd, &st) != 0) {
        *what = "append: fstat";
        return errno;
    }
    size_t done = 0;
    while (done < len) {
        ssize_t n = write(fd, text + done, len - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            int err = n < 0 ? errno : EIO;
            *what = done == 0 ? "append: write" : "append: short write";
            if (done > 0 && ftruncate(fd, st.st_size) != 0)
                *what = "append: short write, and truncating it failed";
            return err;
        }
        done += (size_t)n;
    }
    if (sync && fsync(fd) != 0) {
        *what = "append: fsync";
        return errno;
    }
    return 0;
}

static Log *check_log(lua_State *L)
{
    Log *log = luaL_checkudata(L, 1, LOG_MT);
    if (log->fd < 0)
        luaL_error(L, "log is closed");
    return log;
}

static int l_open_log(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    Log *log = lua_newuserdatauv(L, sizeof *log, 0);
    log->fd = -1;
    luaL_setmetatable(L, LOG_MT);
    int fd = log_open(path);
    if (fd < 0)
        return moat_fail(L, lua_pushfstring(L, "open %s", path), -fd);
    log->fd = fd;
    return 1;
}

static int m_lock(lua_State *L)
{
    Log *log = check_log(L);
    int err = log_lock(log->fd);
    if (err)
        return moat_fail(L, "lock", err);
    lua_pushboolean(L, 1);
    return 1;
}

static int m_unlock(lua_State *L)
{
    Log *log = check_log(L);
    if (flock(log->fd, LOCK_UN) != 0)
        return moat_fail(L, "unlock", errno);
    lua_pushboolean(L, 1);
    return 1;
}

static int pread_all(int fd, char *buf, size_t len, off_t at)
{
    while (len > 0) {
        ssize_t n = pread(fd, buf, len, at);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return errno;
        if (n == 0)
            return EIO; /* the file shrank under us */
        buf += n;
        len -= (size_t)n;
        at += n;
    }
    return 0;
}

/* Offset of the last "\n" before offset `before`, or -1; reads backwards in chunks. */
static int last_newline(int fd, off_t before, off_t *at)
{
    char chunk[TAIL_CHUNK];
    while (before > 0) {
        size_t len = before < TAIL_CHUNK ? (size_t)before : TAIL_CHUNK;
        off_t start = before - (off_t)len;
        int err = pread_all(fd, chunk, len, start);
        if (err)
            return err;
        char *nl = memrchr(chunk, '\n', len);
        if (nl) {
            *at = start + (nl - chunk);
            return 0;
        }
        before = start;
    }
    *at = -1;
    return 0;
}

/* log:tail() -> last complete line (no "\n") | nil, torn; or nil, msg, errno on I/O failure */
static int m_tail(lua_State *L)
{
    Log *log = check_log(L);
    struct stat st;
    if (fstat(log->fd, &st) != 0)
        return moat_fail(L, "tail: fstat", errno);
    if (st.st_size == 0) {
        lua_pushnil(L);
        lua_pushboolean(L, 0);
        return 2;
    }
    char last;
    int err = pread_all(log->fd, &last, 1, st.st_size - 1);
    int torn = last != '\n';
    off_t end = st.st_size - 1, start;
    if (!err && torn)
        err = last_newline(log->fd, st.st_size, &end);
    if (!err && end >= 0)
        err = last_newline(log->fd, end, &start);
    if (err)
        return moat_fail(L, "tail: read", err);
    if (end < 0) {
        lua_pushnil(L);
        lua_pushboolean(L, torn);
        return 2;
    }
    size_t len = (size_t)(end - start - 1);
    luaL_Buffer b;
    char *p = luaL_buffinitsize(L, &b, len);
    err = pread_all(log->fd, p, len, start + 1);
    if (err)
        return moat_fail(L, "tail: read", err);
    luaL_pushresultsize(&b, len);
    lua_pushboolean(L, torn);
    return 2;
}

static int append(lua_State *L, int many)
{
    Log *log = check_log(L);
    size_t len;
    const char *text = luaL_checklstring(L, 2, &len);
    check_lines(L, 2, text, len, many);
    int sync = lua_isnoneornil(L, 3) || lua_toboolean(L, 3);
    const char *what;
    int err = log_append(log->fd, text, len, sync, &what);
    if (err)
        return moat_fail(L, what, err);
    lua_pushboolean(L, 1);
    return 1;
}

/* log:append(line [, sync]) -> true | nil, msg, errno: exactly one line, ending in "\n";
 * sync = false leaves out the fsync (a later fsync of the file makes it durable) */
static int m_append(lua_State *L)
{
    return append(L, 0);
}

/* log:append_lines(text) -> true | nil, msg, errno: one or more whole lines, written with
 * one write() and then fsync-ed (group commit) */
static int m_append_lines(lua_State *L)
{
    return append(L, 1);
}

static int m_close(lua_State *L)
{
    Log *log = luaL_checkudata(L, 1, LOG_MT);
    if (log->fd >= 0) {
        close(log->fd);
        log->fd = -1;
    }
    return 0;
}

static int m_tostring(lua_State *L)
{
    Log *log = luaL_checkudata(L, 1, LOG_MT);
    lua_pushfstring(L, log->fd >= 0 ? "moat.log (fd %d)" : "moat.log (closed)", log->fd);
    return 1;
}

/* An fd held by a userdata whose __gc closes it, so a Lua error (out of memory in a
 * buffer) cannot leak it. */
static int *push_fd(lua_State *L)
{
    int *fd = lua_newuserdatauv(L, sizeof *fd, 0);
    *fd = -1;
    luaL_setmetatable(L, FD_MT);
    return fd;
}

static void close_fd(int *fd)
{
    if (*fd >= 0) {
        close(*fd);
        *fd = -1;
    }
}

static int fd_close(lua_State *L)
{
    close_fd(luaL_checkudata(L, 1, FD_MT));
    return 0;
}

static const char *kind_of(mode_t mode)
{
    return S_ISFIFO(mode)                   ? "a FIFO"
           : S_ISCHR(mode) || S_ISBLK(mode) ? "a device"
           : S_ISDIR(mode)                  ? "a directory"
           : S_ISSOCK(mode)                 ? "a socket"
                                            : "not a regular file";
}

static int over_limit(lua_State *L, const char *path, lua_Integer max)
{
    return moat_fail(L, lua_pushfstring(L, "%s is over the %I-byte limit", path, max), 0);
}

/* Opens path into *fd neither blocking on a FIFO nor taking a terminal, and refuses
 * anything but a regular file (judged on the open fd, so nothing can be swapped in after
 * the check) or one over max bytes. Returns 0, or the count of failure values pushed. */
static int open_regular(lua_State *L, const char *path, lua_Integer max, int *fd, off_t *size)
{
    struct stat st;
    *fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    if (*fd < 0) {
        int err = errno;
        if (err == ENXIO && stat(path, &st) == 0 && S_ISSOCK(st.st_mode))
            return moat_fail(L, lua_pushfstring(L, "%s is a socket, not a regular file", path), 0);
        return moat_fail(L, lua_pushfstring(L, "open %s", path), err);
    }
    if (fstat(*fd, &st) != 0)
        return moat_fail(L, lua_pushfstring(L, "fstat %s", path), errno);
    if (!S_ISREG(st.st_mode))
        return moat_fail(L, lua_pushfstring(L, "%s is %s, not a regular file", path,
                                            kind_of(st.st_mode)), 0);
    if (st.st_size > max)
        return over_limit(L, path, max);
    *size = st.st_size;
    return 0;
}

static lua_Integer check_max(lua_State *L, int arg, lua_Integer def)
{
    lua_Integer max = def < 0 ? luaL_checkinteger(L, arg) : luaL_optinteger(L, arg, def);
    luaL_argcheck(L, max >= 0, arg, "limit must be >= 0");
    return max;
}

/* One read() of up to want bytes, retried on EINTR; -1 with errno on failure. */
static ssize_t read_some(int fd, char *buf, size_t want)
{
    ssize_t n;
    do
        n = read(fd, buf, want);
    while (n < 0 && errno == EINTR);
    return n;
}

/* system.read_file(path[, max]) -> data | nil, msg[, errno]: the whole of a regular file
 * of at most max bytes (default 1 MiB); a FIFO, device, directory or socket is refused. */
static void push_scratch(lua_State *L, unsigned char *scratch, size_t cap, size_t len);

/* A scratch buffer of cap bytes on the Lua stack, holding the len bytes of old (a scratch
 * buffer just below it, wiped and dropped). */
static unsigned char *regrow(lua_State *L, unsigned char *old, size_t oldcap, size_t len, size_t cap)
{
    unsigned char *buf = lua_newuserdatauv(L, cap, 0);
    if (old) {
        memcpy(buf, old, len);
        sodium_memzero(old, oldcap);
        lua_remove(L, -2);
    }
    return buf;
}

/* Reads the whole file into one scratch buffer, grown by copying, every copy left behind
 * wiped: a file read here may hold values (an env file) or a key. */
static int read_whole(lua_State *L, const char *path, lua_Integer max, int fd, off_t size)
{
    /* The size is a hint (a file under /proc says 0); one byte more shows the end. */
    size_t limit = (size_t)max + 1;
    size_t cap = size > 0 ? (size_t)size + 1 : READ_CHUNK, total = 0;
    if (cap > limit)
        cap = limit;
    unsigned char *buf = regrow(L, NULL, 0, 0, cap);
    for (;;) {
        if (total == cap) {
            size_t next = cap * 2 < limit ? cap * 2 : limit;
            buf = regrow(L, buf, cap, total, next);
            cap = next;
        }
        ssize_t n = read_some(fd, (char *)buf + total, cap - total);
        if (n < 0 || (n > 0 && total + (size_t)n > (size_t)max)) {
            int err = errno;
            sodium_memzero(buf, cap);
            return n < 0 ? moat_fail(L, lua_pushfstring(L, "read %s", path), err) : over_limit(L, path, max);
        }
        if (n == 0)
            break;
        total += (size_t)n;
    }
    push_scratch(L, buf, cap, total);
    return 1;
}

/* Opens the file named by argument 1 with open_regular (limit: argument 2, default def;
 * required when def < 0), runs body on it and closes it, whatever body returns. */
static int on_file(lua_State *L, lua_Integer def,
                   int (*body)(lua_State *, const char *, lua_Integer, int, off_t))
{
    const char *path = luaL_checkstring(L, 1);
    lua_Integer max = check_max(L, 2, def);
    int *fd = push_fd(L);
    off_t size;
    int nret = open_regular(L, path, max, fd, &size);
    if (nret == 0)
        nret = body(L, path, max, *fd, size);
    close_fd(fd);
    return nret;
}

static int l_read_file(lua_State *L)
{
    return on_file(L, READ_MAX, read_whole);
}

/* system.sha256_file(path, max) -> hex | nil, msg[, errno]: SHA-256 of a regular file of at
 * most max bytes, read in chunks; the same refusals as read_file. */
static int hash_whole(lua_State *L, const char *path, lua_Integer max, int fd, off_t size)
{
    (void)size;
    crypto_hash_sha256_state st;
    crypto_hash_sha256_init(&st);
    char *chunk = lua_newuserdatauv(L, READ_CHUNK, 0);
    lua_Integer total = 0;
    ssize_t n;
    while ((n = read_some(fd, chunk, READ_CHUNK)) > 0) {
        total += n;
        if (total > max)
            return over_limit(L, path, max);
        crypto_hash_sha256_update(&st, (const unsigned char *)chunk, (unsigned long long)n);
    }
    if (n < 0)
        return moat_fail(L, lua_pushfstring(L, "read %s", path), errno);
    unsigned char digest[crypto_hash_sha256_BYTES];
    crypto_hash_sha256_final(&st, digest);
    push_hex(L, digest, sizeof digest);
    return 1;
}

static int l_sha256_file(lua_State *L)
{
    return on_file(L, -1, hash_whole);
}

static int write_all(int fd, const char *data, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, data, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return errno;
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Writes data to a fresh temp file beside path; returns 0 or an errno with *what set. */
static int write_temp(const char *tmp, const char *data, size_t len, mode_t mode,
                      const char **what)
{
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd < 0) {
        *what = "create temp file";
        return errno;
    }
    int err = 0;
    if (fchmod(fd, mode) != 0) {
        *what = "chmod temp file";
        err = errno;
    } else if ((err = write_all(fd, data, len)) != 0) {
        *what = "write temp file";
    } else if (fsync(fd) != 0) {
        *what = "fsync temp file";
        err = errno;
    }
    if (close(fd) != 0 && !err) {
        *what = "close temp file";
        err = errno;
    }
    return err;
}

static int l_write_file(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    size_t len;
    const char *data = luaL_checklstring(L, 2, &len);
    lua_Integer mode = luaL_optinteger(L, 3, 0600);
    luaL_argcheck(L, mode >= 0 && mode <= 07777, 3, "mode out of range");
    unsigned char rnd[8];
    char hex[2 * sizeof rnd + 1];
    randombytes_buf(rnd, sizeof rnd);
    sodium_bin2hex(hex, sizeof hex, rnd, sizeof rnd);
    const char *tmp = lua_pushfstring(L, "%s.tmp-%s", path, hex);
    const char *slash = strrchr(path, '/');
    const char *dir = slash == NULL ? "."
                      : slash == path ? "/"
                                      : lua_pushlstring(L, path, (size_t)(slash - path));
    const char *what;
    int err = write_temp(tmp, data, len, (mode_t)mode, &what);
    if (!err && rename(tmp, path) != 0) {
        what = "rename temp file";
        err = errno;
    }
    if (err) {
        unlink(tmp);
        return moat_fail(L, lua_pushfstring(L, "write %s: %s", path, what), err);
    }
    err = fsync_dir(dir);
    if (err)
        return moat_fail(L, lua_pushfstring(L, "write %s: fsync directory", path), err);
    lua_pushboolean(L, 1);
    return 1;
}

static int l_sign_keypair(lua_State *L)
{
    unsigned char pk[crypto_sign_PUBLICKEYBYTES], sk[crypto_sign_SECRETKEYBYTES];
    crypto_sign_keypair(pk, sk);
    lua_pushlstring(L, (const char *)pk, sizeof pk);
    lua_pushlstring(L, (const char *)sk, sizeof sk);
    sodium_memzero(sk, sizeof sk);
    return 2;
}

static int l_sign(lua_State *L)
{
    size_t mlen, sklen;
    const char *msg = luaL_checklstring(L, 1, &mlen);
    const char *sk = luaL_checklstring(L, 2, &sklen);
    luaL_argcheck(L, sklen == crypto_sign_SECRETKEYBYTES, 2, "not an Ed25519 secret key");
    unsigned char sig[crypto_sign_BYTES];
    crypto_sign_detached(sig, NULL, (const unsigned char *)msg, mlen,
                         (const unsigned char *)sk);
    lua_pushlstring(L, (const char *)sig, sizeof sig);
    return 1;
}

/* A malformed signature is a failed check (it may come from a tampered file); a malformed
 * public key is a caller's bug. */
static int l_sign_verify(lua_State *L)
{
    size_t slen, mlen, pklen;
    const char *sig = luaL_checklstring(L, 1, &slen);
    const char *msg = luaL_checklstring(L, 2, &mlen);
    const char *pk = luaL_checklstring(L, 3, &pklen);
    luaL_argcheck(L, pklen == crypto_sign_PUBLICKEYBYTES, 3, "not an Ed25519 public key");
    int ok = slen == crypto_sign_BYTES &&
             crypto_sign_verify_detached((const unsigned char *)sig,
                                         (const unsigned char *)msg, mlen,
                                         (const unsigned char *)pk) == 0;
    lua_pushboolean(L, ok);
    return 1;
}

static int l_to_hex(lua_State *L)
{
    size_t len;
    const char *bin = luaL_checklstring(L, 1, &len);
    push_hex(L, (const unsigned char *)bin, len);
    return 1;
}

/* Pushes the first len bytes of scratch (a userdata on top, cap bytes) in its place and wipes
 * it: decoded hex and base64 are keys and secret values. */
static void push_scratch(lua_State *L, unsigned char *scratch, size_t cap, size_t len)
{
    lua_pushlstring(L, (const char *)scratch, len);
    sodium_memzero(scratch, cap);
    lua_remove(L, -2);
}

/* system.from_hex(text) -> bytes | nil, msg: upper or lower case, nothing else allowed */
static int l_from_hex(lua_State *L)
{
    size_t len, n = 0;
    const char *hex = luaL_checklstring(L, 1, &len);
    if (len % 2 != 0)
        return moat_fail(L, "from_hex: odd number of digits", 0);
    size_t cap = len / 2 + 1;
    unsigned char *bin = lua_newuserdatauv(L, cap, 0);
    if (sodium_hex2bin(bin, cap, hex, len, NULL, &n, NULL) != 0) {
        sodium_memzero(bin, cap);
        return moat_fail(L, "from_hex: not a hex digit", 0);
    }
    push_scratch(L, bin, cap, n);
    return 1;
}

static const char *const b64_names[] = { "original", "original_nopad", "urlsafe", "urlsafe_nopad", NULL };
static const int b64_variants[] = {
    sodium_base64_VARIANT_ORIGINAL, sodium_base64_VARIANT_ORIGINAL_NO_PADDING,
    sodium_base64_VARIANT_URLSAFE, sodium_base64_VARIANT_URLSAFE_NO_PADDING,
};

/* system.base64_encode(bytes[, variant]) -> text; variant is "original" (RFC 4648 section 4,
 * the default), "urlsafe" (section 5), or either with "_nopad" (no "=" padding). */
static int l_base64_encode(lua_State *L)
{
    size_t len;
    const char *bin = luaL_checklstring(L, 1, &len);
    int variant = b64_variants[luaL_checkoption(L, 2, "original", b64_names)];
    luaL_argcheck(L, len < ((size_t)-1 - 3) / 4 * 3, 1, "too long");
    size_t cap = sodium_base64_ENCODED_LEN(len, variant);
    unsigned char *out = lua_newuserdatauv(L, cap, 0);
    sodium_bin2base64((char *)out, cap, (const unsigned char *)bin, len, variant);
    push_scratch(L, out, cap, strlen((const char *)out));
    return 1;
}

/* system.base64_decode(text[, variant]) -> bytes | nil, msg: the whole text must be base64
 * of that variant (see base64_encode), with no spaces or line breaks. */
static int l_base64_decode(lua_State *L)
{
    size_t len, n = 0;
    const char *text = luaL_checklstring(L, 1, &len);
    int variant = b64_variants[luaL_checkoption(L, 2, "original", b64_names)];
    size_t cap = len / 4 * 3 + 3;
    unsigned char *bin = lua_newuserdatauv(L, cap, 0);
    if (sodium_base642bin(bin, cap, text, len, NULL, &n, NULL, variant) != 0) {
        sodium_memzero(bin, cap);
        return moat_fail(L, "base64_decode: not valid base64", 0);
    }
    push_scratch(L, bin, cap, n);
    return 1;
}

static const luaL_Reg log_methods[] = {
    { "lock", m_lock },
    { "unlock", m_unlock },
    { "tail", m_tail },
    { "append", m_append },
    { "append_lines", m_append_lines },
    { "close", m_close },
    { NULL, NULL }
};

static const luaL_Reg log_meta[] = {
    { "__gc", m_close },
    { "__close", m_close },
    { "__tostring", m_tostring },
    { NULL, NULL }
};

static const luaL_Reg funcs[] = {
    { "sha256", l_sha256 },
    { "random_hex", l_random_hex },
    { "now", l_now },
    { "epoch_ms", l_epoch_ms },
    { "monotonic_ms", l_monotonic_ms },
    { "isatty", l_isatty },
    { "harden", l_harden },
    { "getrlimit", l_getrlimit },
    { "read_file", l_read_file },
    { "sha256_file", l_sha256_file },
    { "environ", l_environ },
    { "getpid", l_getpid },
    { "getuid", l_getuid },
    { "subreaper", l_subreaper },
    { "kill", l_kill },
    { "realpath", l_realpath },
    { "fsync_dir", l_fsync_dir },
    { "mkdir", l_mkdir },
    { "open_log", l_open_log },
    { "write_file", l_write_file },
    { "sign_keypair", l_sign_keypair },
    { "sign", l_sign },
    { "sign_verify", l_sign_verify },
    { "to_hex", l_to_hex },
    { "from_hex", l_from_hex },
    { "base64_encode", l_base64_encode },
    { "base64_decode", l_base64_decode },
    { NULL, NULL }
};

int luaopen_moat_c_system(lua_State *L)
{
    if (sodium_init() < 0)
        return luaL_error(L, "libsodium failed to initialise");
    moat_class(L, LOG_MT, log_meta, log_methods);
    luaL_newmetatable(L, FD_MT);
    lua_pushcfunction(L, fd_close);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    lua_pushlightuserdata(L, &saved);
    lua_setfield(L, LUA_REGISTRYINDEX, MOAT_SAVED_KEY);
    luaL_newlib(L, funcs);
    return 1;
}
