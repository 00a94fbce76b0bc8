/* Shared by the tests: suite registration and the path of helper programs. */
#ifndef LLLL_T_H
#define LLLL_T_H

#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sched.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

/* Each t/test_*.c registers its suite(s) with T_SUITE(name_suite); main.c runs
 * them all in one SRunner, so one Check summary line closes the run. */
void t_register(Suite *(*make)(void));
#define T_SUITE(fn)                                                   \
    static void t_reg_##fn(void) __attribute__((constructor));       \
    static void t_reg_##fn(void) { t_register(fn); }

/* The test process (a fresh fork of the runner, so any child it has is the
 * test's) has no child left: every one was reaped. */
static inline void t_assert_no_child(void)
{
    errno = 0;
    ck_assert_int_eq(waitpid(-1, NULL, WNOHANG), -1);
    ck_assert_int_eq(errno, ECHILD);
}

/* Copies the file from to the file to, executable. */
static inline void t_copy_file(const char *from, const char *to)
{
    int in = open(from, O_RDONLY | O_CLOEXEC);
    int out = open(to, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0755);
    ck_assert(in >= 0 && out >= 0);
    char buf[65536];
    ssize_t n;
    while ((n = read(in, buf, sizeof buf)) > 0)
        ck_assert_int_eq(write(out, buf, (size_t)n), n);
    ck_assert_int_eq(n, 0);
    close(in);
    close(out);
}

/* Full path of a helper program built from t/helper_NAME.c, in a static
 * buffer (the Makefile passes the folder as LLLL_T_DIR). */
static inline const char *t_helper(const char *name)
{
    static char path[4096];
    const char *dir = getenv("LLLL_T_DIR");
    snprintf(path, sizeof path, "%s/helper_%s", dir ? dir : "build/t", name);
    return path;
}

/* Ends the case early, passing, with a line on stderr, when cond is false:
 * for a kernel feature the system under test lacks (qemu-user has no
 * PR_SET_CHILD_SUBREAPER, say), detected at run time. */
#define T_SKIP_UNLESS(cond, why)                                           \
    do {                                                                  \
        if (!(cond)) {                                                    \
            fprintf(stderr, "%s: skipped: %s\n", __func__, why);          \
            return;                                                       \
        }                                                                 \
    } while (0)

/* Whether the runner was started under qemu-user (the Makefile's QEMU=). */
static inline bool t_under_qemu(void)
{
    const char *q = getenv("LLLL_T_QEMU");
    return q && *q;
}

/* Whether the runner runs under valgrind (make test-valgrind). */
static inline bool t_under_valgrind(void)
{
    const char *v = getenv("LLLL_T_VALGRIND");
    return v && *v;
}

/* Entries of a folder, "." and ".." left out: /proc/self/fd counts open
 * fds, /proc/self/task threads. */
static inline int t_count_dir(const char *path)
{
    DIR *d = opendir(path);
    ck_assert_ptr_nonnull(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

/* A number field of /proc/<pid>/status (pid 0: this process), in base
 * (10 for VmRSS's kB, 16 for the SigBlk masks); ~0 when pid is gone or the
 * field is missing. */
static inline unsigned long long t_status_field(pid_t pid, const char *field, int base)
{
    char path[64], line[256];
    if (pid)
        snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    else
        snprintf(path, sizeof path, "/proc/self/status");
    FILE *f = fopen(path, "r");
    if (!f)
        return ~0ULL;
    unsigned long long v = ~0ULL;
    size_t n = strlen(field);
    while (fgets(line, sizeof line, f))
        if (strncmp(line, field, n) == 0 && line[n] == ':')
            v = strtoull(line + n + 1, NULL, base);
    fclose(f);
    return v;
}

/* The number of this process's threads once it fell to want, or what it is
 * after a bounded wait: a joined thread's task can stay listed a moment
 * after pthread_join returned (the kernel wakes the joiner first), and with
 * the CPUs busy it may wait long for its turn; a leaked one never goes, and
 * the caller's assertion then fails (also under CK_FORK=no, with no case
 * timeout). */
static inline int t_threads_settled_within(int want, int polls)
{
    int n = t_count_dir("/proc/self/task");
    for (int i = 0; i < polls && n > want; i++) {
        sched_yield();
        n = t_count_dir("/proc/self/task");
    }
    return n;
}

static inline int t_threads_settled(int want)
{
    return t_threads_settled_within(want, 200000);
}

/* Check's runner may leave fds open without FD_CLOEXEC; marks them, so that
 * only the library's own fds are under test and children hold only what the
 * library gives them. */
static inline void t_cloexec_everything(void)
{
    for (int fd = 3; fd < 1024; fd++) {
        int fl = fcntl(fd, F_GETFD);
        if (fl >= 0)
            fcntl(fd, F_SETFD, fl | FD_CLOEXEC);
    }
}

/* After an RLIMIT_AS was set a little above what is mapped: whether it
 * refuses a larger mapping. qemu-user does not pass RLIMIT_AS on (it would
 * limit the emulator itself), so there the tests that need it skip. */
static inline bool t_as_limit_bites(void)
{
    void *p = malloc((size_t)256 << 20);
    free(p);
    return p == NULL;
}

/* The fields of a /proc/.../stat file after the command: the state ('R',
 * 'S', 'Z', ...) and the parent's pid. false when the file is gone (also
 * when the task went between the open and the read, which then reads
 * nothing). */
static inline bool t_stat_of(const char *path, char *state, int *ppid)
{
    char buf[512] = "";
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *rp = strrchr(buf, ')');
    if (!rp)
        return false;
    int pp = 0;
    char st = 0;
    if (sscanf(rp + 1, " %c %d", &st, &pp) < 1)
        return false;
    if (state)
        *state = st;
    if (ppid)
        *ppid = pp;
    return true;
}

/* The same of process pid. */
static inline bool t_proc_stat(pid_t pid, char *state, int *ppid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    return t_stat_of(path, state, ppid);
}

/* A frame header's 4-byte big-endian number, written and read by hand. */
static inline void t_put_be32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

static inline uint32_t t_get_be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Writes all n bytes of p to fd by hand (a peer that is not the library). */
static inline void t_raw_write(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n > 0) {
        ssize_t w = write(fd, c, n);
        if (w < 0 && errno == EINTR)
            continue;
        ck_assert_int_gt(w, 0);
        c += w;
        n -= (size_t)w;
    }
}

/* Reads exactly n bytes from fd into p by hand. */
static inline void t_raw_read(int fd, void *p, size_t n)
{
    char *c = p;
    while (n > 0) {
        ssize_t r = read(fd, c, n);
        if (r < 0 && errno == EINTR)
            continue;
        ck_assert_int_gt(r, 0);
        c += r;
        n -= (size_t)r;
    }
}

/* Waits until thread tid sleeps in the kernel (it is then blocked inside the
 * call under test: nothing else it does after publishing tid can sleep), or
 * has ended (the caller's checks of its result then tell what went wrong).
 * There is no event for "blocked in read" or "blocked in a condition wait",
 * so this polls /proc/self/task/TID/stat, yielding between polls; no result
 * depends on how long it takes. The polls are bounded (also under CK_FORK=no,
 * with no case timeout): a million take seconds, far longer than any call
 * under test needs to block, and the thread that never sleeps fails the
 * test. */
static inline void t_wait_until_sleeping(pid_t tid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/self/task/%d/stat", (int)tid);
    for (long i = 0; i < 1000000; i++) {
        char state;
        if (!t_stat_of(path, &state, NULL))
            return;
        if (state == 'S')
            return;
        sched_yield();
    }
    ck_abort_msg("thread %d never slept in the call under test", (int)tid);
}

/* This process's thread ids, up to max: how many. */
static inline int t_task_ids(pid_t *tids, int max)
{
    DIR *d = opendir("/proc/self/task");
    ck_assert_ptr_nonnull(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < max)
        if (e->d_name[0] != '.')
            tids[n++] = (pid_t)atoi(e->d_name);
    closedir(d);
    return n;
}

/* Asserts that every thread of this process not among the nb of before
 * blocks every signal (its SigBlk is that of a thread that blocks them
 * all), once it sleeps: a thread not yet run has every signal blocked, as
 * the thread library starts it, until it sets its own mask. The threads
 * must go to sleep (wait for work, say); one that is gone by then (joined
 * just before, its task still listed) is left out. How many there were. */
static inline int t_new_threads_block_every_signal(const pid_t *before, int nb)
{
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    unsigned long long want = t_status_field(gettid(), "SigBlk", 16);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pid_t now[256];
    int n = t_task_ids(now, 256), checked = 0;
    for (int i = 0; i < n; i++) {
        bool old_one = false;
        for (int j = 0; j < nb; j++)
            old_one |= now[i] == before[j];
        if (old_one)
            continue;
        t_wait_until_sleeping(now[i]);   /* or until it is gone */
        unsigned long long blk = t_status_field(now[i], "SigBlk", 16);
        if (blk == ~0ULL)
            continue;   /* a thread the caller joined just before */
        ck_assert_msg(blk == want, "thread %d blocks %llx, not every signal (%llx)", (int)now[i], blk, want);
        checked++;
    }
    return checked;
}

#endif
