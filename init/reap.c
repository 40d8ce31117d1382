/* moat-init --reap MOAT_PID -- [CLEANUP...]: the watchdog that outlives moat.
 *
 * moat starts it (in a process group of its own, with no value in its argv or environ) before
 * the runtime client. While moat lives it only looks, every TICK_MS and whenever moat sends it
 * SIGURG (right after starting the client), at moat's children and notes each one's process
 * group and start time; moat kills it on every path moat survives.
 * Once moat is gone (SIGKILL, a crash) it kills the children it saw that are still the same
 * processes (their groups when they lead one) and runs CLEANUP (e.g. `docker rm -f moat-<run>`)
 * at each of PASSES_MS after that, so a container still being created is caught as well.
 * It is C, not moat re-executed, so that watching costs a run almost nothing to start. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "reap.h"

#define TICK_MS 200
#define MAX_SEEN 256
#define CLEANUP_TIMEOUT_MS 30000

static const long PASSES_MS[] = { 0, 1000, 3000 };

struct seen {
    pid_t pid;
    unsigned long long start;
};

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(long ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* Reads a whole small /proc file into buf (NUL-terminated); returns its length or -1. */
static ssize_t read_proc(const char *path, char *buf, size_t size)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    size_t len = 0;
    ssize_t r;
    while (len + 1 < size && (r = read(fd, buf + len, size - 1 - len)) != 0) {
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            break;
        len += (size_t)r;
    }
    close(fd);
    buf[len] = '\0';
    return (ssize_t)len;
}

/* ppid, pgid and start time (clock ticks since boot) of pid; returns 0, or -1 when it is gone.
 * The command name comes in parentheses and may hold spaces or parentheses itself. */
static int proc_info(pid_t pid, pid_t *ppid, pid_t *pgid, unsigned long long *start)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    if (read_proc(path, buf, sizeof buf) <= 0)
        return -1;
    char *p = strrchr(buf, ')');
    int pp, pg;
    /* After ") ": state ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt
     * utime stime cutime cstime priority nice num_threads itrealvalue starttime */
    if (p == NULL || sscanf(p + 1, " %*c %d %d %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s "
                                   "%*s %*s %*s %llu", &pp, &pg, start) != 3)
        return -1;
    *ppid = pp;
    *pgid = pg;
    return 0;
}

/* Drops the entries whose process is gone or is another one now (pids are reused);
 * returns the new count. */
static int prune(struct seen *seen, int n)
{
    int k = 0;
    for (int i = 0; i < n; i++) {
        pid_t ppid, pgid;
        unsigned long long start;
        if (proc_info(seen[i].pid, &ppid, &pgid, &start) == 0 && start == seen[i].start)
            seen[k++] = seen[i];
    }
    return k;
}

/* Adds pid (a child of parent) to seen unless it is there already (same pid and start time)
 * or gone; returns the new count. */
static int note(pid_t pid, pid_t parent, pid_t me, struct seen *seen, int n)
{
    pid_t ppid, pgid;
    struct seen c = { pid, 0 };
    if (pid == me || proc_info(pid, &ppid, &pgid, &c.start) != 0 || ppid != parent)
        return n;
    for (int i = 0; i < n; i++)
        if (seen[i].pid == pid && seen[i].start == c.start)
            return n;
    if (n == MAX_SEEN)
        n = prune(seen, n);
    if (n < MAX_SEEN)
        seen[n++] = c;
    return n;
}

/* Without CONFIG_PROC_CHILDREN: every process whose parent is parent. */
static int note_by_scan(pid_t parent, pid_t me, struct seen *seen, int n)
{
    DIR *d = opendir("/proc");
    if (d == NULL)
        return n;
    /* readdir_r is deprecated; the reaper has one thread. */
    // cppcheck-suppress readdirCalled
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        char *end;
        long v = strtol(e->d_name, &end, 10);
        if (*end == '\0' && v > 0)
            n = note((pid_t)v, parent, me, seen, n);
    }
    closedir(d);
    return n;
}

/* Notes the children of parent not seen before; returns the new count. */
static int note_children(pid_t parent, pid_t me, struct seen *seen, int n)
{
    char path[64], buf[8192];
    snprintf(path, sizeof path, "/proc/%d/task/%d/children", (int)parent, (int)parent);
    if (read_proc(path, buf, sizeof buf) < 0)
        return errno == ENOENT && kill(parent, 0) == 0 ? note_by_scan(parent, me, seen, n) : n;
    char *s = buf, *end;
    for (long v = strtol(s, &end, 10); end != s; v = strtol(s, &end, 10)) {
        s = end;
        n = note((pid_t)v, parent, me, seen, n);
    }
    return n;
}

/* Kills what is left of the children seen: only a process that is still the one seen (same
 * start time, since pids are reused), its group when it leads one now (a child seen before it
 * made its group is judged by what it is at the end), never a group it only shares (such as
 * moat's own job). */
static void kill_seen(const struct seen *seen, int n)
{
    for (int i = 0; i < n; i++) {
        pid_t ppid, pgid;
        unsigned long long start;
        if (proc_info(seen[i].pid, &ppid, &pgid, &start) == 0 && start == seen[i].start)
            kill(pgid == seen[i].pid ? -seen[i].pid : seen[i].pid, SIGKILL);
    }
}

/* Runs argv (searched on PATH) with its output discarded; kills it after CLEANUP_TIMEOUT_MS. */
static void run_cleanup(char **argv)
{
    pid_t pid = fork();
    if (pid == 0) {
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        int null = open("/dev/null", O_RDWR | O_CLOEXEC);
        if (null >= 0) {
            dup2(null, 0);
            dup2(null, 1);
            dup2(null, 2);
        }
        execvp(argv[0], argv);
        _exit(127);
    }
    if (pid < 0)
        return;
    long deadline = now_ms() + CLEANUP_TIMEOUT_MS;
    while (waitpid(pid, NULL, WNOHANG) == 0) {
        if (now_ms() >= deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
            return;
        }
        sleep_ms(20);
    }
}

/* Waits up to TICK_MS, less when moat's SIGURG (blocked, so never lost) comes. */
static void tick(const sigset_t *poke)
{
    struct timespec ts = { 0, TICK_MS * 1000000L };
    sigtimedwait(poke, NULL, &ts);
}

int run_reap(pid_t parent, char **cleanup)
{
    static struct seen seen[MAX_SEEN];
    int n = 0;
    pid_t me = getpid();
    sigset_t poke;
    sigemptyset(&poke);
    sigaddset(&poke, SIGURG);
    sigprocmask(SIG_BLOCK, &poke, NULL);
    signal(SIGPIPE, SIG_IGN);
    while (getppid() == parent) {
        n = note_children(parent, me, seen, n);
        tick(&poke);
    }
    kill_seen(seen, n);
    if (cleanup[0] == NULL)
        return 0;
    long t0 = now_ms();
    for (size_t i = 0; i < sizeof PASSES_MS / sizeof PASSES_MS[0]; i++) {
        long wait = t0 + PASSES_MS[i] - now_ms();
        if (wait > 0)
            sleep_ms(wait);
        run_cleanup(cleanup);
    }
    return 0;
}
