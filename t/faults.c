/* Fault tests (make test-faults): signal storms, fd and process limits,
 * failed allocations, a parent without stdio, peers that break the protocol.
 * Each case asserts a clean error and that nothing was left over: fds,
 * threads, children, heap blocks. This runner replaces malloc, calloc,
 * realloc and free (forwarding to glibc's) to count live blocks and to fail
 * one chosen allocation. Each case prints one line of figures on stderr. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "llll.h"
#include "t.h"

/* ------------------------------------------------ the counting allocator */

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void __libc_free(void *);

static _Atomic long live;      /* blocks allocated and not freed */
static _Atomic long nalloc;    /* allocations asked for, ever */
static _Atomic long fail_at;   /* the nalloc value that fails; 0: none */
static _Atomic long nfailed;   /* allocations failed on purpose */

/* Allocations made in a forked copy of the process whose pid is in
 * watch_pid: each copy counts its own, from 0 at its fork. */
static pid_t watch_pid;
static _Atomic long forked_allocs;   /* _Atomic: not cached across a malloc */

static int fail_now(void)
{
    if (watch_pid && getpid() != watch_pid)
        forked_allocs++;
    long n = atomic_fetch_add(&nalloc, 1) + 1;
    if (n != atomic_load(&fail_at))
        return 0;
    atomic_fetch_add(&nfailed, 1);
    errno = ENOMEM;
    return 1;
}

void *malloc(size_t n)
{
    if (fail_now())
        return NULL;
    void *p = __libc_malloc(n);
    if (p)
        atomic_fetch_add(&live, 1);
    return p;
}

void *calloc(size_t n, size_t size)
{
    if (fail_now())
        return NULL;
    void *p = __libc_calloc(n, size);
    if (p)
        atomic_fetch_add(&live, 1);
    return p;
}

void *realloc(void *old, size_t n)
{
    if (fail_now())
        return NULL;
    void *p = __libc_realloc(old, n);
    if (!old && p)
        atomic_fetch_add(&live, 1);
    else if (old && !p && n == 0)
        atomic_fetch_sub(&live, 1);
    return p;
}

void free(void *p)
{
    if (p)
        atomic_fetch_sub(&live, 1);
    __libc_free(p);
}

/* ------------------------------------------------------ what is left over */


/* What this process holds: open fds, threads, heap blocks. */
struct held {
    int fds, threads;
    long blocks;
};

static struct held held_now(void)
{
    struct held h;
    h.fds = t_count_dir("/proc/self/fd");
    h.threads = t_count_dir("/proc/self/task");
    h.blocks = atomic_load(&live);
    return h;
}

/* The threads this process had before the case made any object. */
static int base_threads;

/* What this process holds once the threads of objects already freed have
 * left /proc (an ending thread stays listed a moment after its join). */
static struct held held_settled(void)
{
    t_threads_settled(base_threads);
    return held_now();
}

/* Asserts that this process holds what it held at h and has no child. A
 * joined thread's task may stay listed a moment after pthread_join returned,
 * and a library thread may free its last block just before it ends: both
 * are polled (bounded; the case's timeout bounds it too), so no result
 * depends on how long they take. */
static void assert_nothing_left(struct held h, const char *what)
{
    struct held now = held_now();
    for (int i = 0; i < 200000 && (now.threads != h.threads || now.blocks != h.blocks); i++) {
        sched_yield();
        now = held_now();
    }
    if (now.fds != h.fds || now.threads != h.threads || now.blocks != h.blocks)
        ck_abort_msg("%s: fds %d -> %d, threads %d -> %d, heap blocks %ld -> %ld", what,
                     h.fds, now.fds, h.threads, now.threads, h.blocks, now.blocks);
    errno = 0;
    ck_assert_msg(waitpid(-1, NULL, WNOHANG) == -1 && errno == ECHILD, "%s: a child is left", what);
}


static int start_one(int which);
enum { START_PROC, START_INSTANCE, START_FORK, START_POOL, START_POOL_FORK, START_PAIR,
       START_MAPPER, START_GEN, NSTARTS };

/* Makes and frees one object of each kind, so that what libc keeps for the
 * rest of the process (a thread's TLS block in its stack cache, stdio
 * buffers) is there before a case counts what is held. */
static void prepare(void)
{
    base_threads = t_count_dir("/proc/self/task");
    t_cloexec_everything();
    for (int w = 0; w < NSTARTS; w++)
        ck_assert_int_eq(start_one(w), 0);
}

static const char *const *argv_of(const char *helper, const char *arg)
{
    static const char *v[3];
    static char path[4096];
    snprintf(path, sizeof path, "%s", t_helper(helper));
    v[0] = path;
    v[1] = arg;
    v[2] = NULL;
    return v;
}

/* ------------------------------------------------------------ the EINTR storm */

#define STORM_ROUNDS 5000      /* of signals to every thread; each workload
                                 repeats until then, and at least: */
#define STORM_CALLS 2000
#define STORM_FRAMES 1000
#define STORM_FRAME_SIZE (64 * 1024)
#define STORM_LINES 50000
#define STORM_RUNS 4
#define STORM_STOPS 6
#define STORM_MAPS 200
#define STORM_ITEMS 20000

static _Atomic long delivered;
static _Thread_local long delivered_here;
static void on_signal(int sig)
{
    (void)sig;
    atomic_fetch_add(&delivered, 1);
    delivered_here++;
}

struct storm {
    _Atomic int running;       /* workloads not done yet */
    _Atomic long errors, calls;
    _Atomic int hit;           /* workloads that took at least one signal */
    _Atomic bool over;         /* the storm made its STORM_ROUNDS */
    llll_pool *pool;
    llll_sbc *a, *b;
    llll_mapper *mapper;
};

/* The end of a workload's thread. */
static void done(struct storm *s)
{
    if (delivered_here > 0)
        atomic_fetch_add(&s->hit, 1);
    atomic_fetch_sub(&s->running, 1);
}

static void *pool_calls(void *arg)
{
    struct storm *s = arg;
    llll_buf res = LLLL_BUF_INIT;
    for (int i = 0; i < STORM_CALLS || !atomic_load(&s->over); i++) {
        char req[32], want[32];
        snprintf(req, sizeof req, "sq %d", i);
        snprintf(want, sizeof want, "%lld", (long long)i * i);
        int rc = llll_pool_call(s->pool, req, strlen(req), &res);
        if (rc || res.len != strlen(want) || memcmp(res.data, want, res.len) != 0) {
            fprintf(stderr, "storm: pool call %d: %s\n", i, llll_strerror(rc));
            atomic_fetch_add(&s->errors, 1);
        }
        atomic_fetch_add(&s->calls, 1);
    }
    llll_buf_free(&res);
    done(s);
    return NULL;
}

static void *frames_out(void *arg)
{
    struct storm *s = arg;
    char *buf = malloc(STORM_FRAME_SIZE);
    ck_assert_ptr_nonnull(buf);
    for (int i = 0; i <= STORM_FRAMES || !atomic_load(&s->over); i++) {
        memset(buf, 'a' + i % 26, STORM_FRAME_SIZE);
        int rc = llll_sbc_send(s->a, buf, STORM_FRAME_SIZE);
        if (rc) {
            fprintf(stderr, "storm: send %d: %s\n", i, llll_strerror(rc));
            atomic_fetch_add(&s->errors, 1);
        }
        atomic_fetch_add(&s->calls, 1);
    }
    if (llll_sbc_send(s->a, NULL, 0))   /* the end */
        atomic_fetch_add(&s->errors, 1);
    free(buf);
    done(s);
    return NULL;
}

static void *frames_in(void *arg)
{
    struct storm *s = arg;
    llll_buf f = LLLL_BUF_INIT;
    for (int i = 0;; i++) {
        int rc = llll_sbc_recv(s->b, &f, -1);
        const char *d = f.data;
        atomic_fetch_add(&s->calls, 1);
        if (rc == 0 && f.len == 0 && i > STORM_FRAMES)
            break;
        if (rc || f.len != STORM_FRAME_SIZE || d[0] != 'a' + i % 26 || d[f.len - 1] != 'a' + i % 26) {
            fprintf(stderr, "storm: recv %d: %s\n", i, llll_strerror(rc));
            atomic_fetch_add(&s->errors, 1);
            break;
        }
    }
    llll_buf_free(&f);
    done(s);
    return NULL;
}

static void count_line(void *u, const char *line, size_t len)
{
    (void)line;
    (void)len;
    atomic_fetch_add((_Atomic long *)u, 1);
}

static void *line_reads(void *arg)
{
    struct storm *s = arg;
    char n[16];
    snprintf(n, sizeof n, "%d", STORM_LINES);
    const char *argv[] = { "seq", "1", n, NULL };
    for (int i = 0; i < STORM_RUNS || !atomic_load(&s->over); i++) {
        _Atomic long lines = 0;
        llll_proc_opts o = { .on_stdout = count_line, .userdata = &lines };
        llll_proc *p = NULL;
        int st = -1;
        int rc = llll_proc_start(&p, argv, &o);
        if (rc == 0)
            rc = llll_proc_join(p, -1, &st);
        llll_proc_free(p);
        if (rc || st != 0 || lines != STORM_LINES) {
            fprintf(stderr, "storm: seq: %s, status %d, %ld lines\n", llll_strerror(rc), st, (long)lines);
            atomic_fetch_add(&s->errors, 1);
        }
        atomic_fetch_add(&s->calls, 2);
    }
    done(s);
    return NULL;
}

static void *join_stop(void *arg)
{
    struct storm *s = arg;
    const char *argv[] = { "sleep", "30", NULL };
    for (int i = 0; i < STORM_STOPS || !atomic_load(&s->over); i++) {
        llll_proc *p = NULL;
        int st = -1;
        int rc = llll_proc_start(&p, argv, NULL);
        if (rc == 0)
            rc = llll_proc_join(p, 20, &st) == -ETIMEDOUT ? 0 : -EINVAL;
        if (rc == 0)
            rc = llll_proc_stop(p, 5000, &st);
        if (rc == 0 && !(WIFSIGNALED(st) && WTERMSIG(st) == SIGTERM))
            rc = -EINVAL;
        llll_proc_free(p);
        if (rc) {
            fprintf(stderr, "storm: stop: %s, status %d\n", llll_strerror(rc), st);
            atomic_fetch_add(&s->errors, 1);
        }
        atomic_fetch_add(&s->calls, 3);
    }
    done(s);
    return NULL;
}

static _Atomic long map_sum;
static int add_index(void *ctx, size_t i)
{
    (void)ctx;
    atomic_fetch_add_explicit(&map_sum, (long)i, memory_order_relaxed);
    return 0;
}

static void *maps(void *arg)
{
    struct storm *s = arg;
    for (int i = 0; i < STORM_MAPS || !atomic_load(&s->over); i++) {
        atomic_store(&map_sum, 0);
        int rc = llll_mapper_map(s->mapper, STORM_ITEMS, add_index, NULL);
        if (rc || map_sum != (long)STORM_ITEMS * (STORM_ITEMS - 1) / 2) {
            fprintf(stderr, "storm: map: %s\n", llll_strerror(rc));
            atomic_fetch_add(&s->errors, 1);
        }
        atomic_fetch_add(&s->calls, 1);
    }
    done(s);
    return NULL;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Sends SIGUSR1 to every other thread of this process, every ~100 us (the
 * list of threads read again every 10 rounds), until the workloads are
 * done; returns the number sent, *rounds and *seconds say how often. */
static long storm_signals(struct storm *s, long *rounds, double *seconds)
{
    long sent = 0;
    pid_t self = (pid_t)syscall(SYS_gettid), pid = getpid();
    pid_t tids[256];
    int n = 0;
    double t0 = now_s();
    prctl(PR_SET_TIMERSLACK, 1UL);
    for (*rounds = 0; atomic_load(&s->running) > 0; ++*rounds) {
        if (*rounds == STORM_ROUNDS)
            atomic_store(&s->over, true);
        if (*rounds % 10 == 0) {
            DIR *d = opendir("/proc/self/task");
            ck_assert_ptr_nonnull(d);
            struct dirent *e;
            for (n = 0; (e = readdir(d)) != NULL && n < 256;) {
                pid_t tid = (pid_t)atoi(e->d_name);
                if (tid > 0 && tid != self)
                    tids[n++] = tid;
            }
            closedir(d);
        }
        for (int i = 0; i < n; i++)
            sent += syscall(SYS_tgkill, pid, tids[i], SIGUSR1) == 0;
        struct timespec ts = { 0, 100000 };
        nanosleep(&ts, NULL);
    }
    *seconds = now_s() - t0;
    return sent;
}

START_TEST(an_eintr_storm_on_every_thread_makes_no_call_fail)
{
    prepare();
    struct held h = held_settled();
    struct sigaction sa = { .sa_handler = on_signal };   /* no SA_RESTART */
    sigemptyset(&sa.sa_mask);
    ck_assert_int_eq(sigaction(SIGUSR1, &sa, NULL), 0);

    struct storm s = { .running = 6 };
    ck_assert_int_eq(llll_pool_start(&s.pool, argv_of("pool_worker", NULL), 2, NULL), 0);
    ck_assert_int_eq(llll_sbc_pair(&s.a, &s.b), 0);
    ck_assert_int_eq(llll_mapper_new(&s.mapper, 3), 0);
    void *(*work[6])(void *) = { pool_calls, frames_out, frames_in, line_reads, join_stop, maps };
    pthread_t t[6];
    for (int i = 0; i < 6; i++)
        ck_assert_int_eq(pthread_create(&t[i], NULL, work[i], &s), 0);
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &block, &old);
    long rounds;
    double seconds;
    long sent = storm_signals(&s, &rounds, &seconds);
    for (int i = 0; i < 6; i++)
        pthread_join(t[i], NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);

    llll_pool_free(s.pool);
    llll_sbc_close(s.a);
    llll_sbc_close(s.b);
    llll_mapper_free(s.mapper);
    signal(SIGUSR1, SIG_IGN);
    fprintf(stderr, "faults: EINTR storm: %ld rounds in %.1f s (one per %.0f us), %ld signals sent, "
            "%ld delivered (%d of 6 workloads hit), %ld calls, %ld errors\n",
            rounds, seconds, seconds * 1e6 / (double)(rounds ? rounds : 1), sent, (long)delivered,
            (int)s.hit, (long)s.calls, (long)s.errors);
    ck_assert_int_eq(s.errors, 0);
    ck_assert_int_eq(s.hit, 6);
    assert_nothing_left(h, "EINTR storm");
}
END_TEST

/* ------------------------------------------------------------ the limits */

static int fork_body(llll_sbc *ch, void *arg)
{
    (void)arg;
    llll_buf f = LLLL_BUF_INIT;
    int rc;
    while ((rc = llll_sbc_recv(ch, &f, -1)) == 0)
        if (llll_sbc_send(ch, f.data, f.len))
            break;
    llll_buf_free(&f);
    return rc == LLLL_EOF ? 0 : 1;
}

static int square(void *ctx, const void *arg, size_t len, llll_buf *res)
{
    (void)ctx;
    long n = strtol(arg, NULL, 10);
    (void)len;
    char out[32];
    int k = snprintf(out, sizeof out, "%ld", n * n);
    return llll_buf_set(res, out, (size_t)k);
}

static void *make_nothing(void *ctx)
{
    (void)ctx;
    return NULL;
}

/* The starts: each makes and frees one object of the library, or fails. */
static const char *const start_names[NSTARTS] = {
    "proc_start", "instance_start", "instance_fork", "pool_start", "pool_fork", "sbc_pair",
    "mapper_new", "gen_new"
};

static int start_one(int which)
{
    int rc = 0, st;
    const char *true_argv[] = { "true", NULL };
    llll_proc *p;
    llll_instance *in;
    llll_pool *pool;
    llll_sbc *a, *b;
    llll_mapper *m;
    llll_gen *g;
    switch (which) {
    case START_PROC:
        if ((rc = llll_proc_start(&p, true_argv, NULL)) == 0) {
            rc = llll_proc_join(p, -1, &st);
            llll_proc_free(p);
        }
        break;
    case START_INSTANCE:
        if ((rc = llll_instance_start(&in, argv_of("inst_echo", NULL), NULL)) == 0)
            llll_instance_free(in);
        break;
    case START_FORK:
        if ((rc = llll_instance_fork(&in, fork_body, NULL, NULL)) == 0)
            llll_instance_free(in);
        break;
    case START_POOL:
        if ((rc = llll_pool_start(&pool, argv_of("pool_worker", NULL), 2, NULL)) == 0)
            llll_pool_free(pool);
        break;
    case START_POOL_FORK:
        if ((rc = llll_pool_fork(&pool, square, NULL, 2, NULL)) == 0)
            llll_pool_free(pool);
        break;
    case START_PAIR:
        if ((rc = llll_sbc_pair(&a, &b)) == 0) {
            llll_sbc_close(a);
            llll_sbc_close(b);
        }
        break;
    case START_MAPPER:
        if ((rc = llll_mapper_new(&m, 3)) == 0)
            llll_mapper_free(m);
        break;
    case START_GEN:
        if ((rc = llll_gen_new(&g, make_nothing, NULL, 2, 4)) == 0)
            llll_gen_free(g);
        break;
    }
    return rc;
}

/* The lowest fd number not open. */
static int lowest_free_fd(void)
{
    int fd = 0;
    while (fcntl(fd, F_GETFD) >= 0)
        fd++;
    return fd;
}

START_TEST(with_no_fd_left_every_start_gives_emfile_then_works_again)
{
    prepare();
    struct held h = held_settled();
    struct rlimit old;
    ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &old), 0);
    int starts = 0, emfile = 0;
    /* With the limit at the lowest free fd, no fd can be made at all. */
    struct rlimit lim = { (rlim_t)lowest_free_fd(), old.rlim_max };
    ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &lim), 0);
    for (int w = 0; w < NSTARTS; w++) {
        if (w == START_MAPPER || w == START_GEN)
            continue;   /* they make no fd */
        int rc = start_one(w);
        starts++;
        emfile += rc == -EMFILE;
        ck_assert_msg(rc == -EMFILE, "%s gave %s", start_names[w], llll_strerror(rc));
    }
    /* A few fds more: some starts get part of the way; any failure is
     * -EMFILE (a worker whose exec lacked an fd dies: -ECONNRESET). */
    int partial = 0;
    for (rlim_t extra = 1; extra <= 8; extra++) {
        lim.rlim_cur = (rlim_t)lowest_free_fd() + extra;
        ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &lim), 0);
        for (int w = 0; w < NSTARTS; w++) {
            if (w == START_MAPPER || w == START_GEN)
                continue;
            int rc = start_one(w);
            starts++;
            partial += rc != 0;
            ck_assert_msg(rc == 0 || rc == -EMFILE ||
                          ((w == START_POOL || w == START_INSTANCE) && rc == -ECONNRESET),
                          "%s with %d fds spare gave %s", start_names[w], (int)extra, llll_strerror(rc));
        }
    }
    ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &old), 0);
    for (int w = 0; w < NSTARTS; w++) {
        int rc = start_one(w);
        ck_assert_msg(rc == 0, "%s after the limit was lifted gave %s", start_names[w], llll_strerror(rc));
    }
    fprintf(stderr, "faults: RLIMIT_NOFILE: %d starts, %d -EMFILE with no fd spare, %d failed cleanly with 1-8 spare\n",
            starts, emfile, partial);
    assert_nothing_left(h, "RLIMIT_NOFILE");
}
END_TEST

/* In a child of this process: as uid nobody, RLIMIT_NPROC 1 (no task can be
 * made), then every start that makes a task; exits with 0 when each gave
 * -EAGAIN, left no child and no fd, and starts worked again once the limit
 * was raised; else 10 + the failing step. */
static int nproc_child(void)
{
    if (getuid() == 0 && (setgid(65534) || setuid(65534)))
        return 2;
    int fds = t_count_dir("/proc/self/fd");
    struct rlimit old, lim;
    if (getrlimit(RLIMIT_NPROC, &old))
        return 3;
    lim = old;
    lim.rlim_cur = 1;
    if (setrlimit(RLIMIT_NPROC, &lim))
        return 4;
    for (int w = 0; w < NSTARTS; w++) {
        if (w == START_PAIR || w == START_INSTANCE)
            continue;   /* makes no task / inst_echo is a program like proc */
        if (start_one(w) != -EAGAIN)
            return 10 + w;
        errno = 0;
        if (waitpid(-1, NULL, WNOHANG) != -1 || errno != ECHILD || t_count_dir("/proc/self/fd") != fds)
            return 20 + w;
    }
    if (setrlimit(RLIMIT_NPROC, &old))
        return 5;
    for (int w = 0; w < NSTARTS; w++)
        if (start_one(w) != 0)
            return 30 + w;
    return 0;
}

START_TEST(with_no_process_left_every_start_gives_eagain_and_leaves_no_zombie)
{
    t_cloexec_everything();
    fflush(NULL);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0)
        _exit(nproc_child());
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    T_SKIP_UNLESS(!(WIFEXITED(st) && WEXITSTATUS(st) == 2), "cannot become uid 65534 here");
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "step %d failed (status %#x)",
                  WIFEXITED(st) ? WEXITSTATUS(st) : -1, st);
    fprintf(stderr, "faults: RLIMIT_NPROC as uid %d: %d starts gave -EAGAIN, no zombie, no fd left\n",
            getuid() == 0 ? 65534 : (int)getuid(), NSTARTS - 2);
}
END_TEST

/* ------------------------------------------------------ failed allocations */

static void collect_line(void *u, const char *line, size_t len)
{
    (void)line;
    (void)len;
    (*(int *)u)++;
}

static int op_spawn(void)
{
    int lines = 0, st = -1;
    const char *argv[] = { "echo", "hi", NULL };
    llll_proc_opts o = { .on_stdout = collect_line, .userdata = &lines, .collect_output = true };
    llll_proc *p;
    int rc = llll_proc_start(&p, argv, &o);
    if (rc)
        return rc;
    rc = llll_proc_join(p, -1, &st);
    llll_proc_free(p);
    return rc ? rc : st != 0 ? -EINVAL : lines != 1 ? -EIO : 0;
}

static int op_instance(void)
{
    llll_instance *in;
    int rc = llll_instance_start(&in, argv_of("inst_echo", NULL), NULL);
    if (rc)
        return rc;
    llll_buf f = LLLL_BUF_INIT;
    rc = llll_instance_send(in, "ping", 4);
    if (rc == 0)
        rc = llll_instance_recv(in, &f, -1);
    if (rc == 0 && (f.len != 4 || memcmp(f.data, "ping", 4) != 0))
        rc = -EINVAL;
    llll_buf_free(&f);
    llll_instance_free(in);
    return rc;
}

static int op_pool(void)
{
    llll_pool *pool;
    int rc = llll_pool_start(&pool, argv_of("pool_worker", NULL), 1, NULL);
    if (rc)
        return rc;
    llll_buf res = LLLL_BUF_INIT;
    rc = llll_pool_call(pool, "sq 7", 4, &res);
    if (rc == 0 && (res.len != 2 || memcmp(res.data, "49", 2) != 0))
        rc = -EINVAL;
    llll_buf_free(&res);
    llll_pool_free(pool);
    return rc;
}

/* Runs op once to count its allocations, then once more per allocation with
 * that one failing. Every run must end in 0 or -ENOMEM and leave nothing;
 * -EAGAIN too, for the allocation glibc's pthread_create makes (its TLS
 * block), which it reports as EAGAIN. An allocation on a library thread may
 * fail without failing op (0: a reader thread's buffer, say). */
static void fail_each_allocation(int (*op)(void), const char *name)
{
    prepare();
    ck_assert_int_eq(op(), 0);
    struct held h = held_settled();
    long before = atomic_load(&nalloc);
    ck_assert_int_eq(op(), 0);
    long n = atomic_load(&nalloc) - before;
    assert_nothing_left(h, name);
    int enomem = 0, eagain = 0, ok = 0;
    for (long k = 1; k <= n; k++) {
        atomic_store(&fail_at, atomic_load(&nalloc) + k);
        int rc = op();
        atomic_store(&fail_at, 0);
        ck_assert_msg(rc == 0 || rc == -ENOMEM || rc == -EAGAIN, "%s with allocation %ld of %ld failing: %s",
                      name, k, n, llll_strerror(rc));
        enomem += rc == -ENOMEM;
        eagain += rc == -EAGAIN;
        ok += rc == 0;
        char what[96];
        snprintf(what, sizeof what, "%s with allocation %ld of %ld failing", name, k, n);
        assert_nothing_left(h, what);
    }
    fprintf(stderr, "faults: allocations: %s: %ld faults injected, %d gave -ENOMEM, %d -EAGAIN, %d succeeded anyway, nothing left\n",
            name, n, enomem, eagain, ok);
}

START_TEST(each_failed_allocation_of_a_spawn_gives_enomem_and_leaks_nothing)
{
    fail_each_allocation(op_spawn, "spawn");
}
END_TEST

START_TEST(each_failed_allocation_of_an_instance_exchange_gives_enomem_and_leaks_nothing)
{
    fail_each_allocation(op_instance, "instance exchange");
}
END_TEST

START_TEST(each_failed_allocation_of_a_pool_call_gives_enomem_and_leaks_nothing)
{
    fail_each_allocation(op_pool, "pool call");
}
END_TEST

/* ------------------------------------------------------- stdio closed */

static void got_line(void *u, const char *line, size_t len)
{
    if (len >= 2 && memcmp(line, "hi", 2) == 0)
        (*(int *)u)++;
}

static int stdio_still_closed(void)
{
    for (int fd = 0; fd < 3; fd++)
        if (fcntl(fd, F_GETFD) >= 0)
            return 0;
    return 1;
}

/* In a child with fds 0-2 closed: every kind of object works and none of
 * the library's fds lands on 0-2. Exits 0, or the number of the step. */
static int closed_stdio_child(void)
{
    close(0);
    close(1);
    close(2);
    llll_sbc *a, *b;
    if (llll_sbc_pair(&a, &b) || !stdio_still_closed())
        return 10;
    llll_buf f = LLLL_BUF_INIT;
    if (llll_sbc_send(a, "x", 1) || llll_sbc_recv(b, &f, -1) || f.len != 1)
        return 11;
    llll_sbc_close(a);
    llll_sbc_close(b);

    int lines = 0, st = -1;
    const char *echo[] = { "echo", "hi", NULL };
    llll_proc_opts o = { .on_stdout = got_line, .userdata = &lines };
    llll_proc *p;
    if (llll_proc_start(&p, echo, &o) || !stdio_still_closed())
        return 12;
    if (llll_proc_join(p, -1, &st) || st != 0 || lines != 1)
        return 13;
    llll_proc_free(p);

    llll_instance *in;
    if (llll_instance_fork(&in, fork_body, NULL, NULL) || !stdio_still_closed())
        return 14;
    if (llll_instance_send(in, "y", 1) || llll_instance_recv(in, &f, -1) || f.len != 1)
        return 15;
    llll_instance_free(in);

    llll_pool *pool;
    if (llll_pool_start(&pool, argv_of("pool_worker", NULL), 2, NULL) || !stdio_still_closed())
        return 16;
    if (llll_pool_call(pool, "sq 5", 4, &f) || f.len != 2 || memcmp(f.data, "25", 2) != 0)
        return 17;
    llll_pool_free(pool);
    llll_buf_free(&f);
    return stdio_still_closed() ? 0 : 18;
}

START_TEST(a_parent_with_fds_0_1_2_closed_keeps_them_closed_and_everything_works)
{
    t_cloexec_everything();
    fflush(NULL);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0)
        _exit(closed_stdio_child());
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "step %d failed (status %#x)",
                  WIFEXITED(st) ? WEXITSTATUS(st) : -1, st);
    fprintf(stderr, "faults: stdio closed: sbc_pair, proc, forked instance, pool: fds 0-2 stayed closed\n");
}
END_TEST

/* ------------------------------------------------------------ bad peers */

/* A pool of one bad_worker in mode; a call "x" gives want (or, with want2
 * non-zero, either), and the pool is left of size 0 or 1 with no child
 * but its worker. */
static void bad_worker_call(const char *mode, int want, int want2)
{
    prepare();
    struct held h = held_settled();
    llll_pool_opts o = { .call_timeout_ms = 2000, .no_respawn = true };
    llll_pool *pool;
    ck_assert_int_eq(llll_pool_start(&pool, argv_of("bad_worker", mode), 1, &o), 0);
    llll_buf res = LLLL_BUF_INIT;
    int rc = llll_pool_call(pool, "x", 1, &res);
    ck_assert_msg(rc == want || (want2 && rc == want2), "%s: %s", mode, llll_strerror(rc));
    ck_assert_uint_eq(res.len, 0);
    ck_assert_int_eq(llll_pool_size(pool), 0);
    llll_pool_stats s;
    llll_pool_get_stats(pool, &s);
    llll_buf_free(&res);
    llll_pool_free(pool);
    fprintf(stderr, "faults: bad peer '%s': the call gave %s, the worker was retired\n", mode, llll_strerror(rc));
    assert_nothing_left(h, mode);
}

START_TEST(a_worker_sending_garbage_fails_the_call_and_is_retired)
{
    /* A reply that does not parse, from a live worker: not a crash. */
    bad_worker_call("garbage", -EPROTO, 0);
}
END_TEST

START_TEST(a_worker_announcing_an_over_size_reply_gives_emsgsize_and_is_retired)
{
    bad_worker_call("huge", -EMSGSIZE, 0);
}
END_TEST

START_TEST(a_worker_that_dies_inside_a_reply_gives_econnreset)
{
    bad_worker_call("truncated", -ECONNRESET, 0);
}
END_TEST

START_TEST(a_worker_that_stalls_inside_a_reply_times_out)
{
    bad_worker_call("stalled", -ETIMEDOUT, 0);
}
END_TEST

START_TEST(a_worker_that_closes_its_channel_while_alive_gives_econnreset)
{
    bad_worker_call("close", -ECONNRESET, 0);
}
END_TEST

START_TEST(a_worker_that_never_says_hello_fails_start_and_leaves_nothing)
{
    prepare();
    struct held h = held_settled();
    llll_pool_opts o = { .start_timeout_ms = 300 };
    llll_pool *pool;
    ck_assert_int_eq(llll_pool_start(&pool, argv_of("bad_worker", "nohello"), 2, &o), -ETIMEDOUT);
    ck_assert_ptr_null(pool);
    fprintf(stderr, "faults: bad peer 'nohello': start gave -ETIMEDOUT\n");
    assert_nothing_left(h, "nohello");
}
END_TEST

START_TEST(an_unasked_extra_frame_never_becomes_the_answer_to_the_next_call)
{
    prepare();
    struct held h = held_settled();
    llll_pool *pool;
    ck_assert_int_eq(llll_pool_start(&pool, argv_of("bad_worker", "extra"), 1, NULL), 0);
    llll_buf res = LLLL_BUF_INIT;
    int rc = llll_pool_call(pool, "a", 1, &res);
    ck_assert_int_eq(rc, 0);
    ck_assert(res.len == 2 && memcmp(res.data, "ok", 2) == 0);
    /* The worker has sent "stray" by now or will: either way the next call
     * must get a reply to itself (or a clean error), never "stray". */
    rc = llll_pool_call(pool, "b", 1, &res);
    ck_assert_msg(!(rc == 0 && res.len == 5 && memcmp(res.data, "stray", 5) == 0),
                  "the stray frame was taken as the answer to the next call");
    ck_assert_msg(rc == 0 || rc == -ECONNRESET || rc == -EPROTO, "%s", llll_strerror(rc));
    llll_buf_free(&res);
    llll_pool_free(pool);
    fprintf(stderr, "faults: bad peer 'extra': the next call gave %s\n", llll_strerror(rc));
    assert_nothing_left(h, "extra");
}
END_TEST

/* A forked instance writes lines to its stdout while the parent waits in
 * recv, then sends one frame. */
#define FLOOD_LINES 200000

static int flood_body(llll_sbc *ch, void *arg)
{
    (void)arg;
    for (int i = 0; i < FLOOD_LINES; i++)
        printf("line %d of a flood of stdout, while the parent waits for a frame\n", i);
    fflush(stdout);
    return llll_sbc_send(ch, "done", 4) ? 1 : 0;
}

START_TEST(an_instance_flooding_stdout_during_a_recv_loses_neither_lines_nor_the_frame)
{
    prepare();
    struct held h = held_settled();
    _Atomic long lines = 0;
    llll_instance_opts o = { .proc = { .on_stdout = count_line, .userdata = &lines } };
    llll_instance *in;
    ck_assert_int_eq(llll_instance_fork(&in, flood_body, NULL, &o), 0);
    llll_buf f = LLLL_BUF_INIT;
    ck_assert_int_eq(llll_instance_recv(in, &f, -1), 0);
    ck_assert(f.len == 4 && memcmp(f.data, "done", 4) == 0);
    int st = -1;
    ck_assert_int_eq(llll_instance_join(in, -1, &st), 0);
    ck_assert_int_eq(st, 0);
    ck_assert_int_eq(lines, FLOOD_LINES);
    llll_buf_free(&f);
    llll_instance_free(in);
    fprintf(stderr, "faults: stdout flood: %d lines during a recv, all delivered, frame intact\n", FLOOD_LINES);
    assert_nothing_left(h, "stdout flood");
}
END_TEST

/* ------------------------------------------ a forked child's allocations */

/* fn of a forked instance: sends how many blocks its process allocated
 * before fn ran, then (the count works) after one malloc of its own. */
static int report_allocs(llll_sbc *ch, void *arg)
{
    (void)arg;
    long n[2] = { forked_allocs, 0 };
    void *volatile x = malloc(16);   /* volatile: not elided */
    free(x);
    n[1] = forked_allocs;
    return llll_sbc_send(ch, n, sizeof n) ? 1 : 0;
}

/* A fork of a process whose other threads may hold the allocator's lock
 * must not allocate before fn: with an allocator that is not fork-safe
 * (ASan's, say) it would wait for that lock forever. */
START_TEST(a_forked_instance_allocates_nothing_in_the_child_before_fn)
{
    prepare();
    struct held h = held_settled();
    const char *env[] = { "LLLL_T_FORKED=1", NULL };
    llll_instance_opts with[] = {
        { .proc = { 0 } },
        { .proc = { .env = env, .cwd = "/", .die_with_parent = true } },
    };
    watch_pid = getpid();
    for (size_t k = 0; k < sizeof with / sizeof with[0]; k++) {
        llll_instance *in;
        ck_assert_int_eq(llll_instance_fork(&in, report_allocs, NULL, &with[k]), 0);
        llll_buf f = LLLL_BUF_INIT;
        ck_assert_int_eq(llll_instance_recv(in, &f, -1), 0);
        long n[2] = { -1, -1 };
        ck_assert_uint_eq(f.len, sizeof n);
        memcpy(n, f.data, sizeof n);
        ck_assert_msg(n[0] == 0, "options %zu: the child allocated %ld blocks before fn", k, n[0]);
        ck_assert_msg(n[1] == 1, "options %zu: a malloc in fn counted %ld", k, n[1]);
        int st = -1;
        ck_assert_int_eq(llll_instance_join(in, -1, &st), 0);
        ck_assert_int_eq(st, 0);
        llll_buf_free(&f);
        llll_instance_free(in);
    }
    watch_pid = 0;
    fprintf(stderr, "faults: forked instances: no allocation in the child before fn\n");
    assert_nothing_left(h, "forked instances");
}
END_TEST

/* fn of a fork pool: its result is how many blocks its worker allocated
 * since its fork; for "m", after one malloc of its own (the count works). */
static int worker_allocs(void *ctx, const void *arg, size_t len, llll_buf *res)
{
    (void)ctx;
    if (len == 1 && *(const char *)arg == 'm') {
        void *volatile x = malloc(16);   /* volatile: not elided */
        free(x);
    }
    long n = forked_allocs;
    return llll_buf_set(res, &n, sizeof n);
}

static int small_arg(void *ctx, size_t i, llll_buf *arg)
{
    (void)ctx;
    return llll_buf_set(arg, &i, sizeof i);
}

static int no_allocs(void *ctx, size_t i, int rc, const void *res, size_t len)
{
    long n;
    if (rc || len != sizeof n)
        return rc ? rc : -EIO;
    memcpy(&n, res, sizeof n);
    if (n != 0) {
        *(size_t *)ctx = i;
        return -EUCLEAN;
    }
    return 0;
}

/* A fork pool's worker serves small items, called and mapped, without
 * allocating (its buffers were reserved before the fork). */
START_TEST(a_fork_pool_worker_serves_small_items_without_allocating)
{
    prepare();
    struct held h = held_settled();
    watch_pid = getpid();
    llll_pool *pool;
    ck_assert_int_eq(llll_pool_fork(&pool, worker_allocs, NULL, 2, NULL), 0);
    llll_buf res = LLLL_BUF_INIT;
    for (int k = 0; k < 8; k++) {
        long n = -1;
        ck_assert_int_eq(llll_pool_call(pool, "x", 1, &res), 0);
        ck_assert_uint_eq(res.len, sizeof n);
        memcpy(&n, res.data, sizeof n);
        ck_assert_msg(n == 0, "call %d: its worker allocated %ld blocks", k, n);
    }
    size_t bad = SIZE_MAX;
    int rc = llll_pool_map(pool, 20000, small_arg, no_allocs, &bad, NULL);
    ck_assert_msg(rc == 0, "map: %s (item %zu: its worker had allocated)", llll_strerror(rc), bad);
    long n = -1;
    ck_assert_int_eq(llll_pool_call(pool, "m", 1, &res), 0);
    ck_assert_uint_eq(res.len, sizeof n);
    memcpy(&n, res.data, sizeof n);
    ck_assert_msg(n == 1, "a malloc in fn counted %ld", n);
    llll_buf_free(&res);
    llll_pool_free(pool);
    watch_pid = 0;
    fprintf(stderr, "faults: fork pool: 8 calls and a map of 20000 items, no allocation in the workers\n");
    assert_nothing_left(h, "fork pool");
}
END_TEST

/* ------------------------------------------------ a child stuck at its fork */

/* How many of the next forks hang in a pthread_atfork child handler, before
 * any code of the library runs in them (as qemu-user now and then hangs a
 * child forked among running threads). In memory every fork shares, so the
 * parent sees which forks took their turn. */
static _Atomic int *hang_forks;

static void hang_in_child(void)
{
    if (hang_forks && atomic_fetch_sub(hang_forks, 1) > 0)
        for (;;)
            pause();
}

static void hang_forks_init(void)
{
    hang_forks = mmap(NULL, sizeof *hang_forks, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    ck_assert(hang_forks != MAP_FAILED);
    *hang_forks = 0;
    ck_assert_int_eq(pthread_atfork(NULL, NULL, hang_in_child), 0);
}

/* A fork whose child never gets to fn: the start gives -ETIMEDOUT once the
 * child has been stuck for the library's limit, and the child is gone. */
START_TEST(a_forked_child_stuck_before_fn_is_killed_and_the_start_gives_etimedout)
{
    hang_forks_init();
    prepare();
    struct held h = held_settled();
    *hang_forks = 1;
    llll_instance *in = (llll_instance *)&in;
    double t0 = now_s();
    ck_assert_int_eq(llll_instance_fork(&in, fork_body, NULL, NULL), -ETIMEDOUT);
    double waited = now_s() - t0;
    ck_assert_ptr_null(in);
    ck_assert_int_eq(*hang_forks, 0);   /* it was that child */
    ck_assert_int_eq(start_one(START_FORK), 0);   /* the next is fine */
    fprintf(stderr, "faults: a child stuck at its fork: -ETIMEDOUT after %.1f s, nothing left\n", waited);
    assert_nothing_left(h, "stuck fork");
}
END_TEST

static int die_on_d(void *ctx, const void *arg, size_t len, llll_buf *res)
{
    (void)ctx;
    if (len == 1 && *(const char *)arg == 'd')
        _exit(3);
    return llll_buf_set(res, arg, len);
}

/* A fork pool whose replacement worker gets stuck at its fork: that start
 * fails, and the next call starts another that serves it. */
START_TEST(a_fork_pool_replaces_a_worker_stuck_at_its_fork)
{
    hang_forks_init();
    prepare();
    struct held h = held_settled();
    llll_pool *pool;
    ck_assert_int_eq(llll_pool_fork(&pool, die_on_d, NULL, 1, NULL), 0);
    llll_buf res = LLLL_BUF_INIT;
    *hang_forks = 1;
    double t0 = now_s();
    ck_assert_int_eq(llll_pool_call(pool, "d", 1, &res), -ECONNRESET);
    double waited = now_s() - t0;
    ck_assert_int_eq(*hang_forks, 0);   /* its replacement got stuck */
    ck_assert_int_eq(llll_pool_size(pool), 0);
    ck_assert_int_eq(llll_pool_call(pool, "x", 1, &res), 0);
    ck_assert_uint_eq(res.len, 1);
    ck_assert_int_eq(*(char *)res.data, 'x');
    ck_assert_int_eq(llll_pool_size(pool), 1);
    llll_pool_stats st;
    llll_pool_get_stats(pool, &st);
    ck_assert_uint_eq(st.crashes, 1);
    ck_assert_uint_eq(st.respawns, 1);
    llll_buf_free(&res);
    llll_pool_free(pool);
    fprintf(stderr, "faults: a pool worker stuck at its fork: the call that lost its worker took %.1f s, the next call was served\n", waited);
    assert_nothing_left(h, "stuck pool worker");
}
END_TEST

/* ------------------------------------ a fork by another thread of the program */

/* While holders_armed, each pipe2 is followed by a fork of this process that
 * keeps every fd it inherited, without exec, until the test releases it (it
 * reads EOF on release_rd): as a fork made by another thread of the program
 * while a start is under way would. */
static bool holders_armed;
static pid_t holders[8];
static int nholders, release_rd = -1, release_wr = -1;

int pipe2(int fds[2], int flags)
{
    int rc = (int)syscall(SYS_pipe2, fds, flags);
    if (rc == 0 && holders_armed && nholders < 8) {
        pid_t c = fork();
        if (c == 0) {
            char b;
            close(release_wr);
            while (read(release_rd, &b, 1) < 0 && errno == EINTR) {
            }
            _exit(0);
        }
        if (c > 0)
            holders[nholders++] = c;
    }
    return rc;
}

/* On Linux a start returns once its child has exec'd (or failed to): it does
 * not wait for the EOF of its error pipe, which such a fork holds open. */
START_TEST(a_start_does_not_wait_for_a_fork_that_holds_its_pipes)
{
#ifdef LLLL_SPAWN_FORK
    T_SKIP_UNLESS(false, "LLLL_SPAWN_FORK: the start reads its error pipe until EOF");
#endif
    T_SKIP_UNLESS(!t_under_qemu(), "qemu-user runs the clone as a fork: the start reads its error pipe until EOF");
    prepare();
    struct held h = held_settled();
    int rel[2];
    ck_assert_int_eq(pipe2(rel, O_CLOEXEC), 0);
    release_rd = rel[0];
    release_wr = rel[1];
    const char *true_argv[] = { "true", NULL }, *none_argv[] = { "/nonexistent/llll", NULL };
    llll_proc *p = NULL, *q = (llll_proc *)&q;
    holders_armed = true;
    int rc = llll_proc_start(&p, true_argv, NULL);
    int nrc = llll_proc_start(&q, none_argv, NULL);
    holders_armed = false;
    ck_assert_int_eq(rc, 0);
    ck_assert_int_eq(nrc, -ENOENT);
    ck_assert_ptr_null(q);
    int held_by = nholders;
    for (int k = 0; k < nholders; k++)   /* every holder is still there */
        ck_assert_int_eq(waitpid(holders[k], NULL, WNOHANG), 0);
    int st = -1;
    ck_assert_int_eq(llll_proc_join(p, -1, &st), 0);
    ck_assert_int_eq(st, 0);
    llll_proc_free(p);
    close(release_wr);
    for (int k = 0; k < nholders; k++)
        ck_assert_int_eq(waitpid(holders[k], NULL, 0), holders[k]);
    close(release_rd);
    nholders = 0;
    fprintf(stderr, "faults: two starts returned while %d forks held their pipes\n", held_by);
    assert_nothing_left(h, "forks holding pipes");
}
END_TEST

static Suite *faults_suite(void)
{
    Suite *s = suite_create("faults");
    TCase *tc = tcase_create("faults");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, an_eintr_storm_on_every_thread_makes_no_call_fail);
    tcase_add_test(tc, with_no_fd_left_every_start_gives_emfile_then_works_again);
    tcase_add_test(tc, with_no_process_left_every_start_gives_eagain_and_leaves_no_zombie);
    tcase_add_test(tc, each_failed_allocation_of_a_spawn_gives_enomem_and_leaks_nothing);
    tcase_add_test(tc, each_failed_allocation_of_an_instance_exchange_gives_enomem_and_leaks_nothing);
    tcase_add_test(tc, each_failed_allocation_of_a_pool_call_gives_enomem_and_leaks_nothing);
    tcase_add_test(tc, a_parent_with_fds_0_1_2_closed_keeps_them_closed_and_everything_works);
    tcase_add_test(tc, a_worker_sending_garbage_fails_the_call_and_is_retired);
    tcase_add_test(tc, a_worker_announcing_an_over_size_reply_gives_emsgsize_and_is_retired);
    tcase_add_test(tc, a_worker_that_dies_inside_a_reply_gives_econnreset);
    tcase_add_test(tc, a_worker_that_stalls_inside_a_reply_times_out);
    tcase_add_test(tc, a_worker_that_closes_its_channel_while_alive_gives_econnreset);
    tcase_add_test(tc, a_worker_that_never_says_hello_fails_start_and_leaves_nothing);
    tcase_add_test(tc, an_unasked_extra_frame_never_becomes_the_answer_to_the_next_call);
    tcase_add_test(tc, an_instance_flooding_stdout_during_a_recv_loses_neither_lines_nor_the_frame);
    tcase_add_test(tc, a_forked_instance_allocates_nothing_in_the_child_before_fn);
    tcase_add_test(tc, a_fork_pool_worker_serves_small_items_without_allocating);
    tcase_add_test(tc, a_forked_child_stuck_before_fn_is_killed_and_the_start_gives_etimedout);
    tcase_add_test(tc, a_fork_pool_replaces_a_worker_stuck_at_its_fork);
    tcase_add_test(tc, a_start_does_not_wait_for_a_fork_that_holds_its_pipes);
    suite_add_tcase(s, tc);
    return s;
}
T_SUITE(faults_suite)
