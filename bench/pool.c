/* bench/pool.c - what a pool call costs, and what a pool buys.
 *
 * (a) Trivial echo calls/s: a forked pool of 2 workers called from 2 threads,
 *     against the ceiling: 2 forked echo children over socketpairs, one per
 *     thread, framed by hand (one write and one read per frame). The two
 *     alternate, ~1 s a run, median of 5 runs each.
 * (b) The same load through Python's multiprocessing.Pool.apply and
 *     concurrent.futures.ProcessPoolExecutor (python3, standard library).
 * (c) fib(n) for n = 30..1 (largest first, so the two workers finish
 *     together), 10 times over, on 2 workers called from 2 threads, against
 *     the same in one process; alternating, median of 5. fib(30) is ~1 ms of C,
 *     and the many small n cost less than a round trip (~20-40 us across
 *     CPUs), so fib(34..1) is measured too: work large against the calls.
 *
 * (d) llll_pool_map of trivial items (a 4-byte argument, a 4-byte result)
 *     over 2 forked workers, items/s, against multiprocessing.Pool(2).map at
 *     chunksize 1, 100, 1000 and 10000 (python3, same run; its best counts),
 *     and against a hand-written batched ceiling: 2 forked workers over
 *     socketpairs, batches of 256 items per frame, 2 batches in flight per
 *     worker, one reply frame per batch. Alternating, median of 5.
 * (e) fib(n) for n = 1..32 shuffled, through one llll_pool_map on 2 workers,
 *     against the same in one process: 10 rounds of the 32 in one map, and
 *     the 32 alone. Alternating, median of 5. For scale, the same items run
 *     by 2 forked children that take them in order from a counter in shared
 *     memory (no master, no message; forked before the clock starts): what
 *     list scheduling of this order can get on this machine. And the bound
 *     of any scheduler that does not know an item's cost before it ran:
 *     each item, in this order, to the first worker free, with no overhead,
 *     computed from this run's time of each fib(n) alone.
 * (f) llll_pool_call from 4 and from 8 threads on 2 workers, against 2
 *     threads, calls/s; and the same by hand: 2 forked echo children over
 *     socketpairs, thread i calling child i % 2 under a mutex per child.
 *     Alternating, median of 5.
 *
 * (g) Small maps: llll_pool_map of n trivial items (n = 1, 8, 64, 512) on 2
 *     workers, against a loop of n llll_pool_call on the same pool from the
 *     same thread; 200 maps or loops a run, alternating, median of 5. Where
 *     a map starts to pay for itself.
 *
 * (e) and (f) also print the lowest and highest ratio of one run to the run
 * just before it, as this machine's state moves between runs.
 *
 * BENCH_SECONDS (default 1) sets the length of one run of (a), (b) and (f);
 * BENCH_PARTS (default "abcdefg") the parts to run. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <signal.h>
#include <stdbool.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "llll.h"
#include "bench.h"

/* Big-endian 32-bit, without <arpa/inet.h>'s htonl. */
static uint32_t htonl_(uint32_t v)
{
    unsigned char b[4] = { (unsigned char)(v >> 24), (unsigned char)(v >> 16), (unsigned char)(v >> 8), (unsigned char)v };
    uint32_t r;
    memcpy(&r, b, 4);
    return r;
}

#define RUNS 5
#define THREADS 2

static double seconds = 1.0;

/* --------------------------------------------------- (a) the raw ceiling */

static int read_full(int fd, void *buf, size_t n)
{
    for (size_t got = 0; got < n;) {
        ssize_t r = read(fd, (char *)buf + got, n - got);
        if (r <= 0) {
            if (r < 0 && errno == EINTR)
                continue;
            return -1;
        }
        got += (size_t)r;
    }
    return 0;
}

/* A forked echo child: frames back as they came, until EOF. One read takes
 * what is there (a whole frame, here), one write answers it. */
static void raw_child(int fd)
{
    unsigned char buf[4096];
    size_t have = 0;
    for (;;) {
        ssize_t r = read(fd, buf + have, sizeof buf - have);
        if (r <= 0) {
            if (r < 0 && errno == EINTR)
                continue;
            _exit(r == 0 ? 0 : 1);
        }
        have += (size_t)r;
        while (have >= 4) {
            size_t len = (size_t)buf[0] << 24 | (size_t)buf[1] << 16 | (size_t)buf[2] << 8 | buf[3];
            if (len > sizeof buf - 4)
                _exit(1);
            if (have < 4 + len)
                break;
            if (write(fd, buf, 4 + len) != (ssize_t)(4 + len))
                _exit(1);
            memmove(buf, buf + 4 + len, have - 4 - len);
            have -= 4 + len;
        }
    }
}

struct driver {
    /* one of the two */
    int raw_fd;
    pthread_mutex_t *raw_mu;   /* shared by the threads of one child, or NULL */
    llll_pool *pool;
    double until;
    long calls;
    int rc;
};

static void *drive_raw(void *arg)
{
    struct driver *d = arg;
    unsigned char frame[12] = { 0, 0, 0, 8 }, back[12];
    long n = 0;
    while ((n & 63) || now() < d->until) {
        memcpy(frame + 4, &n, 8);
        if (d->raw_mu)
            pthread_mutex_lock(d->raw_mu);
        bool ok = write(d->raw_fd, frame, sizeof frame) == (ssize_t)sizeof frame &&
                  !read_full(d->raw_fd, back, sizeof back) && memcmp(back + 4, &n, 8) == 0;
        if (d->raw_mu)
            pthread_mutex_unlock(d->raw_mu);
        if (!ok) {
            d->rc = -EIO;
            break;
        }
        n++;
    }
    d->calls = n;
    return NULL;
}

static void *drive_pool(void *arg)
{
    struct driver *d = arg;
    llll_buf res = LLLL_BUF_INIT;
    long n = 0;
    while ((n & 63) || now() < d->until) {
        int rc = llll_pool_call(d->pool, &n, sizeof n, &res);
        if (rc || res.len != sizeof n || memcmp(res.data, &n, sizeof n) != 0) {
            d->rc = rc ? rc : -EIO;
            break;
        }
        n++;
    }
    llll_buf_free(&res);
    d->calls = n;
    return NULL;
}

/* Calls per second of THREADS drivers running fn for `seconds`. */
static double run_load_n(void *(*fn)(void *), struct driver *d, int nthreads)
{
    pthread_t th[16];
    double t0 = now();
    for (int i = 0; i < nthreads; i++) {
        d[i].until = t0 + seconds;
        d[i].calls = 0;
        if (pthread_create(&th[i], NULL, fn, &d[i])) {
            fprintf(stderr, "bench/pool: pthread_create failed\n");
            exit(1);
        }
    }
    long total = 0;
    for (int i = 0; i < nthreads; i++) {
        pthread_join(th[i], NULL);
        if (d[i].rc) {
            fprintf(stderr, "bench/pool: a call failed: %s\n", llll_strerror(d[i].rc));
            exit(1);
        }
        total += d[i].calls;
    }
    return (double)total / (now() - t0);
}

static double run_load(void *(*fn)(void *), struct driver *d)
{
    return run_load_n(fn, d, THREADS);
}

static int echo_fn(void *ctx, const void *arg, size_t len, llll_buf *res)
{
    (void)ctx;
    return llll_buf_set(res, arg, len) ? 1 : 0;
}

/* ------------------------------------------------------------- (c) fib */

static long fib(long n) { return n < 2 ? n : fib(n - 1) + fib(n - 2); }

static int fib_fn(void *ctx, const void *arg, size_t len, llll_buf *res)
{
    (void)ctx;
    long n, v;
    if (len != sizeof n)
        return 1;
    memcpy(&n, arg, sizeof n);
    v = fib(n);
    return llll_buf_set(res, &v, sizeof v) ? 1 : 0;
}

struct fib_job {
    llll_pool *pool;
    int top, rounds;   /* fib(top..1), rounds times */
    atomic_int next;
    long sum;   /* atomically added */
    int rc;
};

static void *fib_caller(void *arg)
{
    struct fib_job *j = arg;
    llll_buf res = LLLL_BUF_INIT;
    long sum = 0;
    for (int i; (i = atomic_fetch_add(&j->next, 1)) < j->top * j->rounds;) {
        long n = j->top - i % j->top, v;
        int rc = llll_pool_call(j->pool, &n, sizeof n, &res);
        if (rc) {
            j->rc = rc;
            break;
        }
        memcpy(&v, res.data, sizeof v);
        sum += v;
    }
    __atomic_fetch_add(&j->sum, sum, __ATOMIC_RELAXED);
    llll_buf_free(&res);
    return NULL;
}

static volatile long fib_one = 1;   /* keeps the compiler from folding the loop */

static long fib_sequential(int top, int rounds)
{
    long s = 0;
    for (int r = 0; r < rounds; r++)
        for (long n = top; n >= fib_one; n--)
            s += fib(n);
    return s;
}

/* Sequential against the pool, alternating, medians of RUNS. */
static int fib_compare(llll_pool *pool, int top, int rounds)
{
    long want = fib_sequential(top, rounds);
    double t_seq[RUNS], t_par[RUNS];
    for (int k = 0; k < RUNS; k++) {
        double t0 = now();
        long got = fib_sequential(top, rounds);
        t_seq[k] = now() - t0;
        struct fib_job job = { .pool = pool, .top = top, .rounds = rounds };
        pthread_t th[THREADS];
        t0 = now();
        for (int i = 0; i < THREADS; i++)
            if (pthread_create(&th[i], NULL, fib_caller, &job))
                return -EAGAIN;
        for (int i = 0; i < THREADS; i++)
            pthread_join(th[i], NULL);
        t_par[k] = now() - t0;
        if (job.rc)
            return job.rc;
        if (job.sum != want || got != want)
            return -EIO;
    }
    double m_seq = median(t_seq, RUNS), m_par = median(t_par, RUNS);
    printf("    fib(%d..1) x %d: sequential %6.1f ms, pool %6.1f ms: speedup %.2f (target >= 1.8)\n",
           top, rounds, m_seq * 1e3, m_par * 1e3, m_seq / m_par);
    return 0;
}

/* ---------------------------------------------------------- (b) Python */

static const char python_peers[] =
    "import multiprocessing as mp, concurrent.futures as cf, threading, time, sys\n"
    "secs = float(sys.argv[1])\n"
    "def echo(x): return x\n"
    "def drive(call):\n"
    "    counts = [0, 0]\n"
    "    stop = time.monotonic() + secs\n"
    "    def t(i):\n"
    "        n = 0\n"
    "        while time.monotonic() < stop:\n"
    "            call((n).to_bytes(8, 'little')); n += 1\n"
    "        counts[i] = n\n"
    "    ths = [threading.Thread(target=t, args=(i,)) for i in range(2)]\n"
    "    t0 = time.monotonic()\n"
    "    for x in ths: x.start()\n"
    "    for x in ths: x.join()\n"
    "    return sum(counts) / (time.monotonic() - t0)\n"
    "with mp.Pool(2) as p:\n"
    "    p.apply(echo, (b'x',))\n"
    "    a = drive(lambda b: p.apply(echo, (b,)))\n"
    "with cf.ProcessPoolExecutor(2) as ex:\n"
    "    ex.submit(echo, b'x').result()\n"
    "    e = drive(lambda b: ex.submit(echo, b).result())\n"
    "print(a, e)\n";

static int python_rates(double *mp_rate, double *cf_rate)
{
    char cmd[4096];
    char script[] = "/tmp/llll-bench-pool-XXXXXX";
    int fd = mkstemp(script);
    if (fd < 0)
        return -1;
    if (write(fd, python_peers, sizeof python_peers - 1) != (ssize_t)(sizeof python_peers - 1)) {
        close(fd);
        unlink(script);
        return -1;
    }
    close(fd);
    snprintf(cmd, sizeof cmd, "python3 %s %g 2>/dev/null", script, seconds);
    FILE *f = popen(cmd, "r");
    int ok = f && fscanf(f, "%lf %lf", mp_rate, cf_rate) == 2;
    if (f)
        pclose(f);
    unlink(script);
    return ok ? 0 : -1;
}

/* ------------------------------------------------- (d) maps of trivial items */

#define MAP_ITEMS 2000000
#define CEIL_BATCH 256

static int inc_fn(void *ctx, const void *arg, size_t len, llll_buf *res)
{
    (void)ctx;
    uint32_t x;
    if (len != sizeof x)
        return 1;
    memcpy(&x, arg, sizeof x);
    x++;
    return llll_buf_set(res, &x, sizeof x) ? 1 : 0;
}

struct sum { uint64_t sum; size_t bad; };

static int map_arg(void *ctx, size_t i, llll_buf *arg)
{
    (void)ctx;
    uint32_t x = (uint32_t)i;
    return llll_buf_set(arg, &x, sizeof x);
}

static int map_result(void *ctx, size_t i, int rc, const void *res, size_t len)
{
    struct sum *s = ctx;
    uint32_t y;
    if (rc || len != sizeof y || (memcpy(&y, res, sizeof y), y != (uint32_t)i + 1))
        s->bad++;
    else
        s->sum += y;
    return 0;
}

static double map_rate(llll_pool *pool, size_t n)
{
    struct sum s = { 0, 0 };
    double t0 = now();
    int rc = llll_pool_map(pool, n, map_arg, map_result, &s, NULL);
    double t = now() - t0;
    if (rc || s.bad) {
        fprintf(stderr, "bench/pool: map: %s, %zu bad\n", llll_strerror(rc), s.bad);
        exit(1);
    }
    return (double)n / t;
}

/* Reads whole frames into r (a buffer of cap bytes holding have bytes), at
 * least one; returns have, or -1 at EOF or error. One read takes whatever
 * is there, usually every frame that arrived. */
static ssize_t read_frames(int fd, unsigned char *r, size_t cap, size_t have)
{
    for (;;) {
        if (have >= 4) {
            size_t len = (size_t)r[0] << 24 | (size_t)r[1] << 16 | (size_t)r[2] << 8 | r[3];
            if (have >= 4 + len)
                return (ssize_t)have;
        }
        ssize_t n = read(fd, r + have, cap - have);
        if (n <= 0) {
            if (n < 0 && errno == EINTR)
                continue;
            return -1;
        }
        have += (size_t)n;
    }
}

/* The ceiling's worker: frames of 4-byte items, each answered x + 1 in one
 * reply frame per request frame, written as soon as it is done. */
static void ceil_child(int fd)
{
    static unsigned char r[1 << 16];
    size_t have = 0;
    for (;;) {
        ssize_t h = read_frames(fd, r, sizeof r, have);
        if (h < 0)
            _exit(0);
        have = (size_t)h;
        size_t pos = 0;
        while (have - pos >= 4) {
            unsigned char *f = r + pos;
            size_t len = (size_t)f[0] << 24 | (size_t)f[1] << 16 | (size_t)f[2] << 8 | f[3];
            if (len > CEIL_BATCH * 4)
                _exit(1);
            if (have - pos < 4 + len)
                break;
            for (size_t k = 0; k < len / 4; k++) {
                uint32_t x;
                memcpy(&x, f + 4 + 4 * k, 4);
                x++;
                memcpy(f + 4 + 4 * k, &x, 4);
            }
            if (write(fd, f, 4 + len) != (ssize_t)(4 + len))
                _exit(1);
            pos += 4 + len;
        }
        memmove(r, r + pos, have - pos);
        have -= pos;
    }
}

struct ceil_driver {
    int fd;
    size_t from, to;   /* items */
    uint64_t sum;
    int rc;
};

static int ceil_send(int fd, size_t from, size_t n)
{
    uint32_t buf[1 + CEIL_BATCH];
    buf[0] = htonl_((uint32_t)(n * 4));
    for (size_t k = 0; k < n; k++)
        buf[1 + k] = (uint32_t)(from + k);
    return write(fd, buf, 4 + n * 4) == (ssize_t)(4 + n * 4) ? 0 : -1;
}

/* One thread per worker, 2 batches in flight. */
static void *ceil_drive(void *arg)
{
    struct ceil_driver *d = arg;
    size_t sent = d->from, got = d->from, have = 0;
    static _Thread_local unsigned char r[1 << 16];
    while (got < d->to) {
        while (sent < d->to && sent - got < 2 * CEIL_BATCH) {
            size_t n = d->to - sent < CEIL_BATCH ? d->to - sent : CEIL_BATCH;
            if (ceil_send(d->fd, sent, n)) {
                d->rc = -EIO;
                return NULL;
            }
            sent += n;
        }
        ssize_t h = read_frames(d->fd, r, sizeof r, have);
        if (h < 0) {
            d->rc = -EIO;
            return NULL;
        }
        have = (size_t)h;
        size_t pos = 0;
        while (have - pos >= 4) {
            unsigned char *f = r + pos;
            size_t len = (size_t)f[0] << 24 | (size_t)f[1] << 16 | (size_t)f[2] << 8 | f[3];
            if (have - pos < 4 + len)
                break;
            for (size_t k = 0; k < len / 4; k++) {
                uint32_t y;
                memcpy(&y, f + 4 + 4 * k, 4);
                d->sum += y;
            }
            got += len / 4;
            pos += 4 + len;
        }
        memmove(r, r + pos, have - pos);
        have -= pos;
    }
    return NULL;
}

static double ceil_rate(const int *fds, size_t n)
{
    struct ceil_driver d[2] = { { fds[0], 0, n / 2, 0, 0 }, { fds[1], n / 2, n, 0, 0 } };
    pthread_t th[2];
    double t0 = now();
    for (int i = 0; i < 2; i++)
        if (pthread_create(&th[i], NULL, ceil_drive, &d[i]))
            exit(1);
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    double t = now() - t0;
    uint64_t want = (uint64_t)n * (n + 1) / 2;
    if (d[0].rc || d[1].rc || d[0].sum + d[1].sum != want) {
        fprintf(stderr, "bench/pool: the ceiling went wrong\n");
        exit(1);
    }
    return (double)n / t;
}

static const char python_map[] =
    "import multiprocessing as mp, time, sys\n"
    "def f(x): return x + 1\n"
    "best = 0\n"
    "out = []\n"
    "with mp.Pool(2) as p:\n"
    "    p.map(f, range(1000))\n"
    "    for c in (1, 100, 1000, 10000):\n"
    "        n = 20000 if c == 1 else 400000\n"
    "        t0 = time.monotonic(); r = p.map(f, range(n), chunksize=c); t = time.monotonic() - t0\n"
    "        assert r[-1] == n\n"
    "        out.append(n / t)\n"
    "print(*out)\n";

static int python_map_rates(double rates[4])
{
    char script[] = "/tmp/llll-bench-map-XXXXXX";
    int fd = mkstemp(script);
    if (fd < 0)
        return -1;
    ssize_t w = write(fd, python_map, sizeof python_map - 1);
    close(fd);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "python3 %s 2>/dev/null", script);
    FILE *f = w == (ssize_t)(sizeof python_map - 1) ? popen(cmd, "r") : NULL;
    int ok = f && fscanf(f, "%lf %lf %lf %lf", &rates[0], &rates[1], &rates[2], &rates[3]) == 4;
    if (f)
        pclose(f);
    unlink(script);
    return ok ? 0 : -1;
}

/* Forks THREADS children over socketpairs for the by-hand baselines, each
 * running child on its end. */
static void raw_children(int fds[THREADS], pid_t kids[THREADS], void (*child)(int))
{
    for (int i = 0; i < THREADS; i++) {
        int sv[2];
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv)) {
            perror("socketpair");
            exit(1);
        }
        kids[i] = fork();
        if (kids[i] < 0) {
            perror("fork");
            exit(1);
        }
        if (kids[i] == 0) {
            close(sv[0]);
            for (int j = 0; j < i; j++)   /* a fork copies the siblings' fds */
                close(fds[j]);
            child(sv[1]);
        }
        close(sv[1]);
        fds[i] = sv[0];
    }
}

static void raw_children_end(int fds[THREADS], pid_t kids[THREADS])
{
    for (int i = 0; i < THREADS; i++)
        close(fds[i]);
    for (int i = 0; i < THREADS; i++)
        waitpid(kids[i], NULL, 0);
}

/* A forked pool of 2 workers running fn, or the benchmark ends. */
static llll_pool *fork_pool(llll_serve_fn *fn)
{
    llll_pool *pool;
    int rc = llll_pool_fork(&pool, fn, NULL, 2, NULL);
    if (rc) {
        fprintf(stderr, "bench/pool: llll_pool_fork: %s\n", llll_strerror(rc));
        exit(1);
    }
    return pool;
}

/* q[k] = a[k] / b[k] for each run k, sorted, lowest first: each run against
 * the one just before it, as the machine's state moves between runs. Call
 * it before median() sorts a or b. */
static void run_ratios(const double *a, const double *b, double q[RUNS])
{
    for (int k = 0; k < RUNS; k++)
        q[k] = a[k] / b[k];
    median(q, RUNS);
}

static void bench_maps(void)
{
    /* The pool first: its forked workers must not hold the ceiling's fds. */
    llll_pool *pool = fork_pool(inc_fn);
    int fds[THREADS];
    pid_t kids[THREADS];
    raw_children(fds, kids, ceil_child);
    map_rate(pool, 100000);   /* warm up */
    double r_ceil[RUNS], r_map[RUNS];
    for (int k = 0; k < RUNS; k++) {
        r_ceil[k] = ceil_rate(fds, MAP_ITEMS);
        r_map[k] = map_rate(pool, MAP_ITEMS);
    }
    raw_children_end(fds, kids);
    double m_ceil = median(r_ceil, RUNS), m_map = median(r_map, RUNS);
    printf("(d) trivial items (4-byte argument and result), 2 workers, %d items a run, median of %d:\n",
           MAP_ITEMS, RUNS);
    /* median() sorted the runs: the first is the slowest. */
    printf("    hand-written batched ceiling  %11.0f items/s   (runs from %.0f to %.0f)\n", m_ceil,
           r_ceil[0], r_ceil[RUNS - 1]);
    printf("    llll_pool_map                 %11.0f items/s   %.2f of the ceiling (target >= 0.5)\n",
           m_map, m_map / m_ceil);
    fflush(stdout);
    double py[4];
    if (python_map_rates(py) == 0) {
        static const int chunks[4] = { 1, 100, 1000, 10000 };
        double best = 0;
        for (int c = 0; c < 4; c++) {
            printf("    multiprocessing.Pool(2).map chunksize %5d  %11.0f items/s\n", chunks[c], py[c]);
            if (py[c] > best)
                best = py[c];
        }
        /* llll again, right after Python, so a change of load shows */
        double again = map_rate(pool, MAP_ITEMS);
        printf("    llll_pool_map / Python's best: %.1fx (%.1fx with a run right after Python) (target >= 4)\n",
               m_map / best, again / best);
    } else {
        printf("    multiprocessing: skipped, python3 did not run\n");
    }
    llll_pool_free(pool);
}

/* ------------------------------------------------ (e) fib through a map */

struct fibs { long *n; size_t count; long sum; };

static int fib_arg(void *ctx, size_t i, llll_buf *arg)
{
    struct fibs *f = ctx;
    return llll_buf_set(arg, &f->n[i], sizeof f->n[i]);
}

static int fib_result(void *ctx, size_t i, int rc, const void *res, size_t len)
{
    struct fibs *f = ctx;
    long v;
    (void)i;
    if (rc || len != sizeof v)
        return rc ? rc : -EIO;
    memcpy(&v, res, sizeof v);
    f->sum += v;
    return 0;
}

/* The shared-counter baseline: the items, then the next index to take, in
 * memory shared with the children forked after it is set. */
static long *counter_items;
static size_t counter_count;

/* A child of it: waits for a byte, takes items until none is left, writes
 * the sum of its results back. */
static void counter_child(int fd)
{
    char c;
    if (read(fd, &c, 1) != 1)
        _exit(1);
    _Atomic long *next = (_Atomic long *)(counter_items + counter_count);
    long i, s = 0;
    while ((i = atomic_fetch_add(next, 1)) < (long)counter_count)
        s += fib(counter_items[i] * fib_one);
    _exit(write(fd, &s, sizeof s) == (ssize_t)sizeof s ? 0 : 1);
}

/* The n items by THREADS forked children taking the next index from a
 * counter in shared memory: seconds from the start byte to both sums. */
static double fib_shared_counter(const long *n, size_t count, long want)
{
    size_t bytes = sizeof(long) * (count + 1);
    counter_items = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (counter_items == MAP_FAILED)
        exit(1);
    memcpy(counter_items, n, sizeof(long) * count);
    atomic_store((_Atomic long *)(counter_items + count), 0);
    counter_count = count;
    int fds[THREADS];
    pid_t kids[THREADS];
    raw_children(fds, kids, counter_child);
    double t0 = now();
    for (int w = 0; w < THREADS; w++)
        if (write(fds[w], "", 1) != 1)
            exit(1);
    long sum = 0;
    for (int w = 0; w < THREADS; w++) {
        long s;
        if (read(fds[w], &s, sizeof s) != (ssize_t)sizeof s)
            exit(1);
        sum += s;
    }
    double t = now() - t0;
    raw_children_end(fds, kids);
    munmap(counter_items, bytes);
    if (sum != want) {
        fprintf(stderr, "bench/pool: the shared counter went wrong\n");
        exit(1);
    }
    return t;
}

/* The speedup on THREADS workers of handing each item of n, in order, to
 * the first worker free, at no cost: each fib(v) timed alone, best of 3. */
static double fib_list_bound(const long *n, size_t count)
{
    double cost[33];
    for (long v = 1; v <= 32; v++) {
        cost[v] = 1e30;
        for (int r = 0; r < 3; r++) {
            double t0 = now();
            volatile long s = fib(v * fib_one);
            (void)s;
            double t = now() - t0;
            if (t < cost[v])
                cost[v] = t;
        }
    }
    double free_at[THREADS] = { 0 }, total = 0, end = 0;
    for (size_t i = 0; i < count; i++) {
        int w = 0;
        for (int k = 1; k < THREADS; k++)
            if (free_at[k] < free_at[w])
                w = k;
        free_at[w] += cost[n[i]];
        total += cost[n[i]];
    }
    for (int k = 0; k < THREADS; k++)
        if (free_at[k] > end)
            end = free_at[k];
    return total / end;
}

static void fib_map_compare(llll_pool *pool, int rounds)
{
    size_t count = 32 * (size_t)rounds;
    long *n = malloc(count * sizeof *n);
    if (!n)
        exit(1);
    for (size_t i = 0; i < count; i++)
        n[i] = 1 + (long)(i % 32);
    unsigned seed = 2026;
    for (size_t i = count - 1; i > 0; i--) {   /* Fisher-Yates */
        size_t j = (size_t)rand_r(&seed) % (i + 1);
        long t = n[i];
        n[i] = n[j];
        n[j] = t;
    }
    double t_seq[RUNS], t_map[RUNS], t_cnt[RUNS];
    long want = 0;
    for (int k = 0; k < RUNS; k++) {
        double t0 = now();
        long s = 0;
        for (size_t i = 0; i < count; i++)
            s += fib(n[i] * fib_one);
        t_seq[k] = now() - t0;
        want = s;
        struct fibs f = { n, count, 0 };
        t0 = now();
        int rc = llll_pool_map(pool, count, fib_arg, fib_result, &f, NULL);
        t_map[k] = now() - t0;
        if (rc || f.sum != want) {
            fprintf(stderr, "bench/pool: fib map: %s\n", llll_strerror(rc));
            exit(1);
        }
        t_cnt[k] = fib_shared_counter(n, count, want);
    }
    double q[RUNS];
    run_ratios(t_seq, t_map, q);
    double m_seq = median(t_seq, RUNS), m_map = median(t_map, RUNS), m_cnt = median(t_cnt, RUNS);
    printf("    fib(1..32) shuffled x %2d in one map: one process %7.1f ms, map %7.1f ms: speedup %.2f"
           " (target >= 1.8; run by run %.2f to %.2f);   shared counter %7.1f ms: speedup %.2f;"
           "   bound of a scheduler blind to cost: %.2f\n",
           rounds, m_seq * 1e3, m_map * 1e3, m_seq / m_map, q[0], q[RUNS - 1], m_cnt * 1e3, m_seq / m_cnt,
           fib_list_bound(n, count));
    free(n);
}

/* ------------------------------------- (f) more calling threads than workers */

static void bench_callers(void)
{
    llll_pool *pool = fork_pool(echo_fn);
    int fds[THREADS];
    pid_t kids[THREADS];
    raw_children(fds, kids, raw_child);
    pthread_mutex_t mu[THREADS];
    struct driver d[8] = { 0 }, h[8] = { 0 };
    for (int i = 0; i < THREADS; i++)
        pthread_mutex_init(&mu[i], NULL);
    for (int i = 0; i < 8; i++) {
        d[i].pool = pool;
        h[i].raw_fd = fds[i % THREADS];
        h[i].raw_mu = &mu[i % THREADS];
    }
    static const int counts[3] = { 2, 4, 8 };
    double r[3][RUNS], b[3][RUNS];
    for (int k = 0; k < RUNS; k++) {
        for (int c = 0; c < 3; c++) {
            r[c][k] = run_load_n(drive_pool, d, counts[c]);
            b[c][k] = run_load_n(drive_raw, h, counts[c]);
        }
    }
    double q[3][RUNS];
    for (int c = 1; c < 3; c++)
        run_ratios(r[c], r[0], q[c]);
    double m2 = median(r[0], RUNS), b2 = median(b[0], RUNS);
    printf("(f) calls, 2 workers, echo of 8 bytes, median of %d runs of %.1f s:\n", RUNS, seconds);
    printf("    2 threads  llll_pool_call %9.0f calls/s   by hand %9.0f calls/s\n", m2, b2);
    for (int c = 1; c < 3; c++) {
        double m = median(r[c], RUNS), bm = median(b[c], RUNS);
        printf("    %d threads  llll_pool_call %9.0f calls/s   %.2f of 2 threads (target >= 0.8; run by run %.2f to %.2f);"
               "   by hand %9.0f calls/s   %.2f of 2 threads;   llll / by hand %.2f\n",
               counts[c], m, m / m2, q[c][0], q[c][RUNS - 1], bm, bm / b2, m / bm);
    }
    llll_pool_free(pool);
    raw_children_end(fds, kids);
    for (int i = 0; i < THREADS; i++)
        pthread_mutex_destroy(&mu[i]);
}

/* ------------------------------------------------ (g) maps of a few items */

#define SMALL_ROUNDS 200

/* Seconds for SMALL_ROUNDS maps of n items (map) or loops of n calls. */
static double small_run(llll_pool *pool, size_t n, bool map)
{
    struct sum s = { 0, 0 };
    llll_buf res = LLLL_BUF_INIT;
    double t0 = now();
    for (int r = 0; r < SMALL_ROUNDS; r++) {
        if (map) {
            if (llll_pool_map(pool, n, map_arg, map_result, &s, NULL))
                s.bad++;
            continue;
        }
        for (size_t i = 0; i < n; i++) {
            uint32_t x = (uint32_t)i;
            int rc = llll_pool_call(pool, &x, sizeof x, &res);
            map_result(&s, i, rc, res.data, res.len);
        }
    }
    double t = now() - t0;
    llll_buf_free(&res);
    if (s.bad) {
        fprintf(stderr, "bench/pool: small maps: %zu bad\n", s.bad);
        exit(1);
    }
    return t;
}

static void bench_small_maps(void)
{
    llll_pool *pool = fork_pool(inc_fn);
    static const size_t ns[] = { 1, 8, 64, 512 };
    printf("(g) maps of n trivial items against n calls in a loop, one thread, 2 workers, median of %d:\n",
           RUNS);
    for (size_t k = 0; k < sizeof ns / sizeof ns[0]; k++) {
        double t_call[RUNS], t_map[RUNS];
        for (int r = 0; r < RUNS; r++) {
            t_call[r] = small_run(pool, ns[k], false);
            t_map[r] = small_run(pool, ns[k], true);
        }
        double c = median(t_call, RUNS) / SMALL_ROUNDS, m = median(t_map, RUNS) / SMALL_ROUNDS;
        printf("    n = %3zu   calls %8.1f us   map %8.1f us   map / calls %.2f\n", ns[k], c * 1e6, m * 1e6,
               m / c);
    }
    llll_pool_free(pool);
}

/* ------------------------------------------------------------------ main */

/* BENCH_PARTS (default "abcdefg") selects the parts to run. */
static bool part(char c)
{
    const char *parts = getenv("BENCH_PARTS");
    return !parts || strchr(parts, c);
}

/* (a) and (b); returns llll's calls/s of (a). */
static double bench_calls(void)
{
    /* (a) the ceiling's children, and the pool */
    struct driver raw[THREADS] = { 0 }, pooled[THREADS] = { 0 };
    pid_t kids[THREADS];
    int fds[THREADS];
    raw_children(fds, kids, raw_child);
    for (int i = 0; i < THREADS; i++)
        raw[i].raw_fd = fds[i];
    llll_pool *pool = fork_pool(echo_fn);
    for (int i = 0; i < THREADS; i++)
        pooled[i].pool = pool;

    double r_raw[RUNS], r_pool[RUNS];
    for (int k = 0; k < RUNS; k++) {
        r_raw[k] = run_load(drive_raw, raw);
        r_pool[k] = run_load(drive_pool, pooled);
    }
    double m_raw = median(r_raw, RUNS), m_pool = median(r_pool, RUNS);
    printf("(a) echo calls, 2 workers, 2 calling threads, median of %d runs of %.1f s:\n", RUNS, seconds);
    printf("    hand-written ceiling  %9.0f calls/s\n", m_raw);
    printf("    llll_pool_call        %9.0f calls/s   ratio %.2f (target >= 0.85)\n", m_pool, m_pool / m_raw);
    llll_pool_free(pool);
    raw_children_end(fds, kids);
    fflush(stdout);
    return m_pool;
}

int main(void)
{
    const char *s = getenv("BENCH_SECONDS");
    if (s && atof(s) > 0)
        seconds = atof(s);
    signal(SIGPIPE, SIG_IGN);   /* the raw baseline writes to sockets by hand */

    double m_pool = part('a') || part('b') ? bench_calls() : 0;

    /* (b) */
    double mp_rate, cf_rate;
    if (!part('b')) {
    } else if (python_rates(&mp_rate, &cf_rate) == 0) {
        printf("(b) the same load in Python (one run of %.1f s each):\n", seconds);
        printf("    multiprocessing.Pool.apply          %9.0f calls/s   %.3f of llll\n", mp_rate, mp_rate / m_pool);
        printf("    concurrent.futures ProcessPoolExec. %9.0f calls/s   %.3f of llll\n", cf_rate, cf_rate / m_pool);
    } else {
        printf("(b) skipped: python3 did not run\n");
    }
    fflush(stdout);

    llll_pool *pool = fork_pool(fib_fn);
    int rc;
    if (part('c')) {
        printf("(c) fib(n), largest n first, 2 workers called from 2 threads, vs one process, median of %d:\n", RUNS);
        if ((rc = fib_compare(pool, 30, 10)) || (rc = fib_compare(pool, 34, 1))) {
            fprintf(stderr, "bench/pool: fib: %s\n", llll_strerror(rc));
            return 1;
        }
        fflush(stdout);
    }
    if (part('d')) {
        bench_maps();
        fflush(stdout);
    }
    if (part('e')) {
        printf("(e) fib(n) through llll_pool_map, 2 workers, vs one process, median of %d:\n", RUNS);
        fib_map_compare(pool, 10);
        fib_map_compare(pool, 1);
        fflush(stdout);
    }
    llll_pool_free(pool);
    if (part('f'))
        bench_callers();
    if (part('g'))
        bench_small_maps();
    return 0;
}
