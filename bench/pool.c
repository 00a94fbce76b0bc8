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
 * BENCH_SECONDS (default 1) sets the length of one run of (a) and (b). */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "llll.h"
#include "bench.h"

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
        if (write(d->raw_fd, frame, sizeof frame) != (ssize_t)sizeof frame ||
            read_full(d->raw_fd, back, sizeof back) || memcmp(back + 4, &n, 8) != 0) {
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
static double run_load(void *(*fn)(void *), struct driver *d)
{
    pthread_t th[THREADS];
    double t0 = now();
    for (int i = 0; i < THREADS; i++) {
        d[i].until = t0 + seconds;
        d[i].calls = 0;
        if (pthread_create(&th[i], NULL, fn, &d[i])) {
            fprintf(stderr, "bench/pool: pthread_create failed\n");
            exit(1);
        }
    }
    long total = 0;
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        if (d[i].rc) {
            fprintf(stderr, "bench/pool: a call failed: %s\n", llll_strerror(d[i].rc));
            exit(1);
        }
        total += d[i].calls;
    }
    return (double)total / (now() - t0);
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

/* ------------------------------------------------------------------ main */

int main(void)
{
    const char *s = getenv("BENCH_SECONDS");
    if (s && atof(s) > 0)
        seconds = atof(s);
    signal(SIGPIPE, SIG_IGN);   /* the raw baseline writes to sockets by hand */

    /* (a) the ceiling's children, and the pool */
    struct driver raw[THREADS] = { 0 }, pooled[THREADS] = { 0 };
    pid_t kids[THREADS];
    for (int i = 0; i < THREADS; i++) {
        int sv[2];
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv)) {
            perror("socketpair");
            return 1;
        }
        kids[i] = fork();
        if (kids[i] < 0) {
            perror("fork");
            return 1;
        }
        if (kids[i] == 0) {
            close(sv[0]);
            for (int j = 0; j < i; j++)   /* a fork copies the siblings' fds */
                close(raw[j].raw_fd);
            raw_child(sv[1]);
        }
        close(sv[1]);
        raw[i].raw_fd = sv[0];
    }
    llll_pool *pool;
    int rc = llll_pool_fork(&pool, echo_fn, NULL, 2, NULL);
    if (rc) {
        fprintf(stderr, "bench/pool: llll_pool_fork: %s\n", llll_strerror(rc));
        return 1;
    }
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
    for (int i = 0; i < THREADS; i++)
        close(raw[i].raw_fd);
    for (int i = 0; i < THREADS; i++)
        waitpid(kids[i], NULL, 0);
    fflush(stdout);

    /* (b) */
    double mp_rate, cf_rate;
    if (python_rates(&mp_rate, &cf_rate) == 0) {
        printf("(b) the same load in Python (one run of %.1f s each):\n", seconds);
        printf("    multiprocessing.Pool.apply          %9.0f calls/s   %.3f of llll\n", mp_rate, mp_rate / m_pool);
        printf("    concurrent.futures ProcessPoolExec. %9.0f calls/s   %.3f of llll\n", cf_rate, cf_rate / m_pool);
    } else {
        printf("(b) skipped: python3 did not run\n");
    }
    fflush(stdout);

    /* (c) */
    rc = llll_pool_fork(&pool, fib_fn, NULL, 2, NULL);
    if (rc) {
        fprintf(stderr, "bench/pool: llll_pool_fork: %s\n", llll_strerror(rc));
        return 1;
    }
    printf("(c) fib(n), largest n first, 2 workers called from 2 threads, vs one process, median of %d:\n", RUNS);
    if ((rc = fib_compare(pool, 30, 10)) || (rc = fib_compare(pool, 34, 1))) {
        fprintf(stderr, "bench/pool: fib: %s\n", llll_strerror(rc));
        return 1;
    }
    llll_pool_free(pool);
    return 0;
}
