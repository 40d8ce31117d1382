/* moat-init: the small helper moat runs around its runtimes. One static binary, five modes:
 *
 *   moat-init --from FIFO -- PROG [ARG...]   inside a container: read NAME=value records from
 *                                           FIFO, setenv each, exec PROG (the image's
 *                                           entrypoint and command); no value is ever in the
 *                                           container's config, only in this process's environ
 *   moat-init --feed FIFO                    on the host, beside the runtime client: copy the
 *                                           records from stdin into FIFO, then exit
 *   moat-init --mkfifo PATH                  make the FIFO (mode 0644 inside moat's 0700 dir)
 *   moat-init --slirp SLIRP -- BWRAP [ARG...] run bubblewrap in its own network namespace with
 *                                           outbound networking through slirp4netns, which
 *                                           never reaches the host's loopback
 *   moat-init --reap MOAT_PID -- [CLEANUP...] on the host: moat's watchdog, which cleans up
 *                                           if moat dies without doing so (see reap.c)
 *
 * Records are netstrings, "LEN:NAME=VALUE," with LEN the decimal byte count of NAME=VALUE,
 * ended by "0:,". A stream without that end is refused: a half-written set of values never
 * starts the command. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <net/route.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <poll.h>
#include <time.h>
#include <unistd.h>

#include "reap.h"

#define MAX_INPUT (64u * 1024u * 1024u)
#define WAIT_VALUES_S 120
#define SLIRP_READY_MS 20000
#define FAILED 125

struct buf {
    char *data;
    size_t len, cap;
};

static void die(const char *what, const char *detail)
{
    fprintf(stderr, "moat-init: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
    exit(FAILED);
}

static void wipe(struct buf *b)
{
    if (b->data) {
        explicit_bzero(b->data, b->cap);
        free(b->data);
    }
    b->data = NULL;
    b->len = b->cap = 0;
}

/* Reads fd to its end into b; returns 0 or an errno value. */
static int read_all(int fd, struct buf *b)
{
    for (;;) {
        if (b->cap - b->len < 4096) {
            size_t cap = b->cap ? b->cap * 2 : 65536;
            if (cap > MAX_INPUT)
                return EFBIG;
            char *p = malloc(cap);
            if (p == NULL)
                return ENOMEM;
            if (b->data) {
                memcpy(p, b->data, b->len);
                explicit_bzero(b->data, b->cap);
                free(b->data);
            }
            b->data = p;
            b->cap = cap;
        }
        ssize_t n = read(fd, b->data + b->len, b->cap - b->len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return errno;
        if (n == 0)
            return 0;
        b->len += (size_t)n;
    }
}

static int write_all(int fd, const char *p, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return n < 0 ? errno : EIO;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static int valid_name(const char *s, size_t len)
{
    if (len == 0 || (s[0] >= '0' && s[0] <= '9'))
        return 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!(c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')))
            return 0;
    }
    return 1;
}

/* Parses one netstring at *pos; returns its length (0 for the end record) and sets *rec,
 * or -1 when the stream is malformed. */
static long next_record(struct buf *b, size_t *pos, char **rec)
{
    size_t i = *pos, len = 0;
    if (i >= b->len || b->data[i] < '0' || b->data[i] > '9')
        return -1;
    while (i < b->len && b->data[i] >= '0' && b->data[i] <= '9' && len <= MAX_INPUT)
        len = len * 10 + (size_t)(b->data[i++] - '0');
    if (i >= b->len || b->data[i] != ':' || len > b->len - i - 1 || i + 1 + len >= b->len)
        return -1;
    *rec = b->data + i + 1;
    if ((*rec)[len] != ',')
        return -1;
    *pos = i + 2 + len;
    return (long)len;
}

/* Sets every record of b in the environment; dies on a malformed stream. */
static void apply_records(struct buf *b)
{
    size_t pos = 0;
    for (;;) {
        char *rec;
        long len = next_record(b, &pos, &rec);
        if (len < 0)
            die("the values from moat are incomplete or malformed", NULL);
        if (len == 0)
            break;
        char *eq = memchr(rec, '=', (size_t)len);
        if (eq == NULL || !valid_name(rec, (size_t)(eq - rec)) || memchr(rec, '\0', (size_t)len))
            die("the values from moat are malformed", NULL);
        *eq = '\0';
        rec[len] = '\0';
        if (setenv(rec, eq + 1, 1) != 0)
            die("setenv", strerror(errno));
    }
    if (pos != b->len)
        die("the values from moat are followed by garbage", NULL);
}

static void on_alarm(int sig)
{
    static const char msg[] = "moat-init: no values arrived from moat in time\n";
    (void)sig;
    ssize_t n = write(2, msg, sizeof msg - 1);
    (void)n;
    _exit(FAILED);
}

/* --from FIFO -- PROG [ARG...] */
static int run_from(const char *fifo, char **argv)
{
    signal(SIGALRM, on_alarm);
    alarm(WAIT_VALUES_S);
    int fd = open(fifo, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        die(fifo, strerror(errno));
    struct buf b = { 0 };
    int err = read_all(fd, &b);
    close(fd);
    alarm(0);
    signal(SIGALRM, SIG_DFL);
    if (err)
        die("reading the values from moat", strerror(err));
    apply_records(&b);
    wipe(&b);
    execvp(argv[0], argv);
    err = errno;
    fprintf(stderr, "moat-init: %s: %s\n", argv[0], err == ENOENT ? "command not found" : strerror(err));
    return err == ENOENT || err == ENOTDIR ? 127 : 126;
}

/* Dies with the parent (moat): a helper must not outlive the run it serves. It holds the
 * values (in memory, in its environ), so like moat it is not dumpable: no core file, no
 * /proc/<pid>/environ for other processes of the same user. */
static void tie_to_parent(void)
{
    pid_t parent = getppid();
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent || prctl(PR_SET_DUMPABLE, 0) != 0)
        exit(FAILED);
}

/* --feed FIFO: stdin -> FIFO. The open blocks until the container's shim opens it. */
static int run_feed(const char *fifo)
{
    tie_to_parent();
    signal(SIGPIPE, SIG_IGN);
    struct buf b = { 0 };
    int err = read_all(0, &b);
    if (err)
        die("reading the values", strerror(err));
    int fd = open(fifo, O_WRONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0 || !S_ISFIFO(st.st_mode)) {
        wipe(&b);
        die(fifo, fd < 0 ? strerror(errno) : "not a FIFO");
    }
    err = write_all(fd, b.data, b.len);
    wipe(&b);
    close(fd);
    return err ? FAILED : 0;
}

/* --mkfifo PATH */
static int run_mkfifo(const char *path)
{
    umask(0);
    if (mkfifo(path, 0644) != 0)
        die(path, strerror(errno));
    return 0;
}

/* Returns the exit status that mirrors wait status st: the code, or the same signal. */
static int mirror(int st)
{
    if (WIFSIGNALED(st)) {
        struct rlimit none = { 0, 0 };
        setrlimit(RLIMIT_CORE, &none);
        signal(WTERMSIG(st), SIG_DFL);
        kill(getpid(), WTERMSIG(st));
        return 128 + WTERMSIG(st);
    }
    return WEXITSTATUS(st);
}

static volatile sig_atomic_t child_pid;

/* Signals to the wrapper go on to bubblewrap (as they went to it before the wrapper). */
static void forward(int sig)
{
    if (child_pid > 0)
        kill((pid_t)child_pid, sig);
}

/* Starts bwrap (argv) with --info-fd and --block-fd; returns its pid. */
static pid_t start_bwrap(char **argv, int argc, int info_w, int block_r)
{
    char **args = calloc((size_t)argc + 6, sizeof *args);
    char info[16], block[16];
    if (args == NULL)
        die("out of memory", NULL);
    snprintf(info, sizeof info, "%d", info_w);
    snprintf(block, sizeof block, "%d", block_r);
    args[0] = argv[0];
    args[1] = "--info-fd";
    args[2] = info;
    args[3] = "--block-fd";
    args[4] = block;
    for (int i = 1; i < argc; i++)
        args[i + 4] = argv[i];
    pid_t pid = fork();
    if (pid == 0) {
        execvp(args[0], args);
        fprintf(stderr, "moat-init: %s: %s\n", args[0], strerror(errno));
        _exit(errno == ENOENT ? 127 : 126);
    }
    free(args);
    if (pid < 0)
        die("fork", strerror(errno));
    return pid;
}

/* Reads bwrap's info JSON from fd; returns the sandbox's pid, or 0 when bwrap gave none. */
static long sandbox_pid(int fd)
{
    char text[1024];
    size_t len = 0;
    while (len < sizeof text - 1) {
        ssize_t n = read(fd, text + len, sizeof text - 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        len += (size_t)n;
        text[len] = '\0';
        if (strchr(text, '}'))
            break;
    }
    text[len] = '\0';
    const char *p = strstr(text, "\"child-pid\"");
    p = p ? strchr(p, ':') : NULL;
    return p ? strtol(p + 1, NULL, 10) : 0;
}

/* Starts slirp4netns on the sandbox's network namespace, in its own process group (so that
 * the signals moat forwards to the run do not take the network down), with an empty environ
 * (the run's values stay out of it) and its chatter sent to /dev/null. It ends when exit_r's other end closes, that
 * is when this wrapper ends, however it ends. Returns its pid. */
static pid_t start_slirp(const char *slirp, long target, int ready_w, int exit_r)
{
    char pid[32], ready[32], ex[32];
    snprintf(pid, sizeof pid, "%ld", target);
    snprintf(ready, sizeof ready, "--ready-fd=%d", ready_w);
    snprintf(ex, sizeof ex, "--exit-fd=%d", exit_r);
    char *args[] = { (char *)slirp, "--configure", "--mtu=65520", "--disable-host-loopback",
                     "--enable-sandbox", "--enable-seccomp", ready, ex, pid, "tap0", NULL };
    char *env[] = { NULL };
    pid_t p = fork();
    if (p == 0) {
        setpgid(0, 0);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int null = open("/dev/null", O_RDWR);
        if (null >= 0) {
            dup2(null, 0);
            dup2(null, 1);
            dup2(null, 2);
        }
        execve(slirp, args, env);
        fprintf(stderr, "moat-init: %s: %s\n", slirp, strerror(errno));
        _exit(127);
    }
    if (p < 0)
        die("fork", strerror(errno));
    return p;
}

/* Waits up to SLIRP_READY_MS for slirp's ready byte; returns 1 when it came. */
static int slirp_ready(int fd)
{
    struct pollfd pfd = { .fd = fd, .events = POLLIN };
    int r;
    do
        r = poll(&pfd, 1, SLIRP_READY_MS);
    while (r < 0 && errno == EINTR);
    char c;
    return r > 0 && read(fd, &c, 1) == 1;
}

/* Waits until the sandbox's loopback is up: bwrap sets it up right after it reports the pid,
 * and slirp4netns brings lo up too; the two racing make bwrap fail. The netns's local routing
 * table shows 127.0.0.1 once lo is up. Returns 1 when it is, 0 when bwrap ended or 10 s passed. */
static int loopback_ready(long target, pid_t bwrap)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%ld/net/fib_trie", target);
    for (int i = 0; i < 2000; i++) {
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            return 0;
        char text[4096];
        ssize_t n = read(fd, text, sizeof text - 1);
        close(fd);
        text[n > 0 ? n : 0] = '\0';
        if (strstr(text, "127.0.0.1"))
            return 1;
        siginfo_t info;
        memset(&info, 0, sizeof info);
        if (waitid(P_PID, (id_t)bwrap, &info, WEXITED | WNOHANG | WNOWAIT) == 0 && info.si_pid == bwrap)
            return 0;
        struct timespec pause = { 0, 5 * 1000 * 1000 };
        nanosleep(&pause, NULL);
    }
    return 0;
}

static int wait_for(pid_t pid)
{
    int st = 0;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR)
            return -1;
    return st;
}

/* Joins namespace `kind` (user, net) of process `target`, unless it is already ours. */
static int join_ns(long target, const char *kind, int nstype)
{
    char path[64], self[64];
    struct stat a, b;
    snprintf(path, sizeof path, "/proc/%ld/ns/%s", target, kind);
    snprintf(self, sizeof self, "/proc/self/ns/%s", kind);
    if (stat(path, &a) != 0 || stat(self, &b) != 0)
        return -1;
    if (a.st_ino == b.st_ino && a.st_dev == b.st_dev)
        return 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    int r = fd >= 0 ? setns(fd, nstype) : -1;
    if (fd >= 0)
        close(fd);
    return r;
}

/* In the sandbox's network namespace, makes 169.254.0.0/16 unreachable: slirp4netns would
 * otherwise carry packets to the LAN's link-local addresses (a cloud's metadata service among
 * them). Done in a child, so that this process keeps its own namespaces. Returns 1 when done. */
static int block_link_local(long target)
{
    pid_t pid = fork();
    if (pid == 0) {
        if (join_ns(target, "user", CLONE_NEWUSER) != 0 || join_ns(target, "net", CLONE_NEWNET) != 0)
            _exit(1);
        struct rtentry route;
        memset(&route, 0, sizeof route);
        struct sockaddr_in *dst = (struct sockaddr_in *)&route.rt_dst;
        struct sockaddr_in *mask = (struct sockaddr_in *)&route.rt_genmask;
        dst->sin_family = mask->sin_family = AF_INET;
        dst->sin_addr.s_addr = htonl(0xA9FE0000u);
        mask->sin_addr.s_addr = htonl(0xFFFF0000u);
        route.rt_flags = RTF_UP | RTF_REJECT;
        int sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        _exit(sock >= 0 && ioctl(sock, SIOCADDRT, &route) == 0 ? 0 : 1);
    }
    if (pid < 0)
        return 0;
    int st = wait_for(pid);
    return st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

static void pipe_cloexec(int fds[2])
{
    if (pipe2(fds, O_CLOEXEC) != 0)
        die("pipe", strerror(errno));
}

static void install_forwarding(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = forward;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    int sigs[] = { SIGINT, SIGTERM, SIGHUP, SIGQUIT };
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
        sigaction(sigs[i], &sa, NULL);
}

/* Stops a slirp4netns that did not come up and the sandbox it was meant for. */
static int slirp_failed(pid_t bwrap, pid_t slirp)
{
    kill(bwrap, SIGKILL);
    kill(slirp, SIGKILL);
    wait_for(bwrap);
    wait_for(slirp);
    fprintf(stderr, "moat-init: slirp4netns could not set up the sandbox's network"
                    " (set network: none to run without one)\n");
    return FAILED;
}

/* --slirp SLIRP -- BWRAP [ARG...] */
static int run_slirp(const char *slirp, char **argv, int argc)
{
    tie_to_parent();
    int info[2], block[2], ready[2], ex[2];
    pipe_cloexec(info);
    pipe_cloexec(block);
    pipe_cloexec(ready);
    pipe_cloexec(ex);
    /* The child ends bwrap and slirp4netns use stay open across their exec. */
    fcntl(info[1], F_SETFD, 0);
    fcntl(block[0], F_SETFD, 0);
    install_forwarding();
    pid_t bw = start_bwrap(argv, argc, info[1], block[0]);
    child_pid = bw;
    close(info[1]);
    close(block[0]);
    long target = sandbox_pid(info[0]);
    close(info[0]);
    if (target <= 0) {
        close(block[1]);
        return mirror(wait_for(bw));
    }
    if (!loopback_ready(target, bw)) {
        close(block[1]);
        kill(bw, SIGKILL);
        return mirror(wait_for(bw));
    }
    fcntl(ready[1], F_SETFD, 0);
    fcntl(ex[0], F_SETFD, 0);
    pid_t sl = start_slirp(slirp, target, ready[1], ex[0]);
    close(ready[1]);
    close(ex[0]);
    if (!slirp_ready(ready[0]) || !block_link_local(target))
        return slirp_failed(bw, sl);
    close(ready[0]);
    if (write_all(block[1], "1", 1) != 0)
        return slirp_failed(bw, sl);
    close(block[1]);
    int st = wait_for(bw);
    close(ex[1]);
    wait_for(sl);
    return st < 0 ? FAILED : mirror(st);
}

static int usage(void)
{
    fprintf(stderr, "usage: moat-init --from FIFO -- PROG [ARG...]\n"
                    "       moat-init --feed FIFO | --mkfifo PATH\n"
                    "       moat-init --slirp SLIRP4NETNS -- BWRAP [ARG...]\n"
                    "       moat-init --reap MOAT_PID -- [CLEANUP...]\n");
    return 64;
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--feed") == 0)
        return run_feed(argv[2]);
    if (argc == 3 && strcmp(argv[1], "--mkfifo") == 0)
        return run_mkfifo(argv[2]);
    if (argc >= 5 && strcmp(argv[3], "--") == 0 && strcmp(argv[1], "--from") == 0)
        return run_from(argv[2], argv + 4);
    if (argc >= 5 && strcmp(argv[3], "--") == 0 && strcmp(argv[1], "--slirp") == 0)
        return run_slirp(argv[2], argv + 4, argc - 4);
    if (argc >= 4 && strcmp(argv[3], "--") == 0 && strcmp(argv[1], "--reap") == 0 && atoi(argv[2]) > 0)
        return run_reap((pid_t)atoi(argv[2]), argv + 4);
    return usage();
}
