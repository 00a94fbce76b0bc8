/* Pools, protocol 2: llll_pool_map, and the errors a call reports (send
 * timeouts, -EPROTO for a reply of another request, -ENOMEM here). */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <semaphore.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "llll.h"
#include "t.h"

/* ------------------------------------------------------------- helpers */

/* A field of this process's /proc/self/status, in kB. */
static long status_kib(const char *field)
{
    unsigned long long v = t_status_field(0, field, 10);
    ck_assert(v != ~0ULL);
    return (long)v;
}

/* Workers' function: the argument is a uint64_t x; the result x * 3 + 1.
 * Items listed in the context behave otherwise. Every item is logged (its
 * x, one line, appended) before it runs when log_fd >= 0. */
struct work {
    int log_fd;
    uint64_t poison;      /* dies on it (abort), when set */
    uint64_t hang;        /* never answers it, when set */
    uint64_t fail;        /* fails on it with a message, when set */
    uint64_t block_from;  /* waits forever from this x on, when set */
    size_t big;           /* result of this many bytes for x == 0, when set */
    uint64_t hold;        /* reads a byte from hold_fd before answering it, when set */
    int hold_fd;
};
static struct work work;   /* forked workers get a copy */

static int work_fn(void *ctx, const void *arg, size_t len, llll_buf *res)
{
    (void)ctx;
    uint64_t x;
    if (len != sizeof x)
        return llll_buf_set(res, "bad", 3), 1;
    memcpy(&x, arg, sizeof x);
    if (work.log_fd >= 0) {
        char line[32];
        int n = snprintf(line, sizeof line, "%llu\n", (unsigned long long)x);
        if (write(work.log_fd, line, (size_t)n) != n)
            return 1;
    }
    if (work.poison && x == work.poison) {
        struct rlimit none = { 0, 0 };
        setrlimit(RLIMIT_CORE, &none);
        abort();
    }
    if ((work.hang && x == work.hang) || (work.block_from && x >= work.block_from))
        for (;;)
            pause();
    if (work.hold && x == work.hold) {
        char c;
        if (read(work.hold_fd, &c, 1) != 1)
            return 1;
    }
    if (work.fail && x == work.fail) {
        char msg[64];
        int n = snprintf(msg, sizeof msg, "no %llu", (unsigned long long)x);
        return llll_buf_set(res, msg, (size_t)n), 1;
    }
    if (work.big && x == 0) {
        if (llll_buf_reserve(res, work.big))
            return 1;
        memset(res->data, 'b', work.big);
        res->len = work.big;
        return 0;
    }
    uint64_t y = x * 3 + 1;
    return llll_buf_set(res, &y, sizeof y) ? 1 : 0;
}

static llll_pool *fork_pool(int n, const llll_pool_opts *o)
{
    llll_pool *p;
    int rc = llll_pool_fork(&p, work_fn, NULL, n, o);
    ck_assert_msg(rc == 0, "fork: %s", llll_strerror(rc));
    return p;
}

/* A map's state: arguments are i (or stop at eof), results checked. */
struct run {
    size_t eof_at;        /* arg says LLLL_EOF at this index (SIZE_MAX: never) */
    size_t stop_at;       /* result returns 42 at this index (SIZE_MAX: never) */
    sem_t *fetched;       /* posted when arg fetches index fetch_signal */
    size_t fetch_signal;
    size_t next;          /* the next index result expects */
    size_t ok, out_of_order, wrong;
    size_t nerr;
    size_t err_i[16];
    int err_rc[16];
    char err_msg[16][32];
};

static void run_init(struct run *r)
{
    memset(r, 0, sizeof *r);
    r->eof_at = SIZE_MAX;
    r->stop_at = SIZE_MAX;
    r->fetch_signal = SIZE_MAX;
}

static int arg_fn(void *ctx, size_t i, llll_buf *arg)
{
    struct run *r = ctx;
    if (i == r->eof_at)
        return LLLL_EOF;
    if (r->fetched && i == r->fetch_signal)
        sem_post(r->fetched);
    uint64_t x = i;
    return llll_buf_set(arg, &x, sizeof x);
}

static int result_fn(void *ctx, size_t i, int rc, const void *res, size_t len)
{
    struct run *r = ctx;
    if (i != r->next)
        r->out_of_order++;
    r->next = i + 1;
    if (rc) {
        if (r->nerr < 16) {
            r->err_i[r->nerr] = i;
            r->err_rc[r->nerr] = rc;
            snprintf(r->err_msg[r->nerr], sizeof r->err_msg[0], "%.*s", (int)len, (const char *)res);
        }
        r->nerr++;
    } else {
        uint64_t y;
        if (len == sizeof y && (memcpy(&y, res, sizeof y), y == (uint64_t)i * 3 + 1))
            r->ok++;
        else
            r->wrong++;
    }
    return i == r->stop_at ? 42 : 0;
}

static void no_work_twists(void)
{
    memset(&work, 0, sizeof work);
    work.log_fd = -1;
}

/* ------------------------------------------------------------ results */

START_TEST(a_map_delivers_every_result_in_order_for_0_1_and_a_million_items)
{
    no_work_twists();
    llll_pool *p = fork_pool(2, NULL);
    size_t sizes[] = { 0, 1, 1000000 };
    for (int k = 0; k < 3; k++) {
        struct run r;
        run_init(&r);
        ck_assert_int_eq(llll_pool_map(p, sizes[k], arg_fn, result_fn, &r, NULL), 0);
        ck_assert_uint_eq(r.ok, sizes[k]);
        ck_assert_uint_eq(r.next, sizes[k]);
        ck_assert_uint_eq(r.out_of_order + r.wrong + r.nerr, 0);
    }
    llll_pool_stats st;
    llll_pool_get_stats(p, &st);
    ck_assert_uint_eq(st.calls, 1000001);
    ck_assert_uint_eq(st.crashes + st.respawns + st.failures + st.protocol_errors, 0);
    llll_pool_free(p);
    t_assert_no_child();
}
END_TEST

START_TEST(a_stream_of_unknown_length_ends_with_llll_eof)
{
    no_work_twists();
    llll_pool *p = fork_pool(2, NULL);
    struct run r;
    run_init(&r);
    r.eof_at = 12345;
    ck_assert_int_eq(llll_pool_map(p, SIZE_MAX, arg_fn, result_fn, &r, NULL), 0);
    ck_assert_uint_eq(r.ok, 12345);
    ck_assert_uint_eq(r.next, 12345);
    ck_assert_uint_eq(r.out_of_order + r.wrong + r.nerr, 0);
    llll_pool_free(p);
}
END_TEST

START_TEST(a_fixed_batch_size_gives_the_same_results)
{
    no_work_twists();
    llll_pool *p = fork_pool(3, NULL);
    size_t batches[] = { 1, 7, 100000 };
    for (int k = 0; k < 3; k++) {
        struct run r;
        run_init(&r);
        llll_pool_map_opts o = { .batch = batches[k] };
        ck_assert_int_eq(llll_pool_map(p, 5000, arg_fn, result_fn, &r, &o), 0);
        ck_assert_uint_eq(r.ok, 5000);
        ck_assert_uint_eq(r.out_of_order + r.wrong + r.nerr, 0);
    }
    llll_pool_free(p);
}
END_TEST

START_TEST(a_result_callback_stops_the_map_early)
{
    no_work_twists();
    llll_pool *p = fork_pool(2, NULL);
    struct run r;
    run_init(&r);
    r.stop_at = 5000;
    ck_assert_int_eq(llll_pool_map(p, 1000000, arg_fn, result_fn, &r, NULL), 42);
    ck_assert_uint_eq(r.next, 5001);   /* nothing after the one that stopped it */
    ck_assert_uint_eq(r.ok, 5001);
    /* The pool is whole: the items dropped in flight left no worker behind. */
    run_init(&r);
    ck_assert_int_eq(llll_pool_map(p, 1000, arg_fn, result_fn, &r, NULL), 0);
    ck_assert_uint_eq(r.ok, 1000);
    llll_pool_stats st;
    llll_pool_get_stats(p, &st);
    ck_assert_uint_eq(st.respawns, 0);
    llll_pool_free(p);
    t_assert_no_child();
}
END_TEST

static int arg_stops(void *ctx, size_t i, llll_buf *arg)
{
    return i == 300 ? -EDOM : arg_fn(ctx, i, arg);
}

START_TEST(an_argument_callback_stops_the_map_with_its_value)
{
    no_work_twists();
    llll_pool *p = fork_pool(2, NULL);
    struct run r;
    run_init(&r);
    ck_assert_int_eq(llll_pool_map(p, 1000, arg_stops, result_fn, &r, NULL), -EDOM);
    ck_assert_uint_le(r.next, 300);
    ck_assert_uint_eq(r.wrong + r.nerr + r.out_of_order, 0);
    llll_pool_free(p);
}
END_TEST

START_TEST(a_failing_item_gets_eremoteio_with_the_workers_message)
{
    no_work_twists();
    work.fail = 77;
    work.hang = 1000000;
    llll_pool *p = fork_pool(2, NULL);
    struct run r;
    run_init(&r);
    ck_assert_int_eq(llll_pool_map(p, 200, arg_fn, result_fn, &r, NULL), 0);
    ck_assert_uint_eq(r.ok, 199);
    ck_assert_uint_eq(r.nerr, 1);
    ck_assert_uint_eq(r.err_i[0], 77);
    ck_assert_int_eq(r.err_rc[0], -EREMOTEIO);
    ck_assert_str_eq(r.err_msg[0], "no 77");
    llll_pool_stats st;
    llll_pool_get_stats(p, &st);
    ck_assert_uint_eq(st.failures, 1);
    ck_assert_uint_eq(st.respawns, 0);
    llll_pool_free(p);
}
END_TEST

static int arg_big(void *ctx, size_t i, llll_buf *arg)
{
    if (i == 5) {   /* over max_frame */
        ck_assert_int_eq(llll_buf_reserve(arg, 100), 0);
        memset(arg->data, 0, 100);
        arg->len = 100;
        return 0;
    }
    return arg_fn(ctx, i, arg);
}

START_TEST(an_argument_over_max_frame_fails_alone_with_emsgsize)
{
    no_work_twists();
    llll_pool *p = fork_pool(2, &(llll_pool_opts){ .max_frame = 64 });
    struct run r;
    run_init(&r);
    ck_assert_int_eq(llll_pool_map(p, 40, arg_big, result_fn, &r, NULL), 0);
    ck_assert_uint_eq(r.ok, 39);
    ck_assert_uint_eq(r.nerr, 1);
    ck_assert_uint_eq(r.err_i[0], 5);
    ck_assert_int_eq(r.err_rc[0], -EMSGSIZE);
    ck_assert_uint_eq(r.out_of_order, 0);
    llll_pool_stats st;   /* batches larger than max_frame are fine */
    llll_pool_get_stats(p, &st);
    ck_assert_uint_eq(st.respawns + st.crashes + st.protocol_errors, 0);
    llll_pool_free(p);
}
END_TEST

/* ------------------------------------------------------ dying workers */

/* Counts how often each x up to n was started, from the workers' log. */
static void read_log(const char *path, unsigned *seen, size_t n)
{
    FILE *f = fopen(path, "r");
    ck_assert_ptr_nonnull(f);
    unsigned long long x;
    while (fscanf(f, "%llu", &x) == 1) {
        ck_assert_uint_lt(x, n);
        seen[x]++;
    }
    fclose(f);
}

START_TEST(an_item_that_kills_its_worker_fails_alone_and_every_other_gets_its_result)
{
    char path[] = "/tmp/llll-map-log-XXXXXX";
    no_work_twists();
    work.log_fd = mkstemp(path);
    ck_assert_int_ge(work.log_fd, 0);
    ck_assert_int_eq(fcntl(work.log_fd, F_SETFL, O_APPEND), 0);
    enum { N = 3000, POISON = 1234 };
    work.poison = POISON;
    llll_pool *p = fork_pool(2, NULL);
    struct run r;
    run_init(&r);
    ck_assert_int_eq(llll_pool_map(p, N, arg_fn, result_fn, &r, NULL), 0);
    ck_assert_uint_eq(r.ok, N - 1);
    ck_assert_uint_eq(r.nerr, 1);
    ck_assert_uint_eq(r.err_i[0], POISON);
    ck_assert_int_eq(r.err_rc[0], -ECONNRESET);
    ck_assert_uint_eq(r.out_of_order + r.wrong, 0);
    llll_pool_stats st;
    llll_pool_get_stats(p, &st);
    ck_assert_uint_eq(st.crashes, 1);
    ck_assert_uint_eq(st.respawns, 2);   /* once in its batch, once alone */
    llll_pool_free(p);
    t_assert_no_child();

    /* Every item started at least once; the poisonous one twice (in its
     * batch, then alone); twice at most for the others of its batches. */
    static unsigned seen[N];
    read_log(path, seen, N);
    unsigned twice = 0;
    for (size_t x = 0; x < N; x++) {
        ck_assert_msg(seen[x] >= 1 && seen[x] <= 2, "item %zu started %u times", x, seen[x]);
        twice += seen[x] == 2;
    }
    ck_assert_uint_eq(seen[POISON], 2);
    ck_assert_uint_ge(twice, 1);
    close(work.log_fd);
    unlink(path);
}
END_TEST

START_TEST(an_item_that_hangs_times_out_alone)
{
    no_work_twists();
    work.hang = 30;
    llll_pool *p = fork_pool(2, &(llll_pool_opts){ .call_timeout_ms = 300 });
    struct run r;
    run_init(&r);
    /* Batches of 4: the one holding item 30 runs out of its 300 ms (and
     * the little its other items are expected to take), they run alone. */
    llll_pool_map_opts o = { .batch = 4 };
    ck_assert_int_eq(llll_pool_map(p, 100, arg_fn, result_fn, &r, &o), 0);
    ck_assert_uint_eq(r.ok, 99);
    ck_assert_uint_eq(r.nerr, 1);
    ck_assert_uint_eq(r.err_i[0], 30);
    ck_assert_int_eq(r.err_rc[0], -ETIMEDOUT);
    llll_pool_stats st;
    llll_pool_get_stats(p, &st);
    ck_assert_uint_eq(st.timeouts, 1);
    ck_assert_uint_eq(st.crashes, 0);
    ck_assert_int_eq(llll_pool_size(p), 2);
    llll_pool_free(p);
    t_assert_no_child();
}
END_TEST

/* Adaptive batches of thousands of trivial items: the one holding the hung
 * item must not get thousands of times call_timeout_ms (the case's timeout
 * would end it); its items are retried alone. */
START_TEST(a_hung_item_in_a_large_batch_costs_about_one_call_timeout)
{
    no_work_twists();
    work.hang = 150000;
    llll_pool *p = fork_pool(2, &(llll_pool_opts){ .call_timeout_ms = 500 });
    struct run r;
    run_init(&r);
    ck_assert_int_eq(llll_pool_map(p, 200000, arg_fn, result_fn, &r, NULL), 0);
    ck_assert_uint_eq(r.ok, 199999);
    ck_assert_uint_eq(r.nerr, 1);
    ck_assert_uint_eq(r.err_i[0], 150000);
    ck_assert_int_eq(r.err_rc[0], -ETIMEDOUT);
    llll_pool_free(p);
    t_assert_no_child();
}
END_TEST

/* ------------------------------------------------- sharing and freeing */

struct caller {
    llll_pool *p;
    int base, calls, wrong, errors;
};

static void *caller_thread(void *a)
{
    struct caller *c = a;
    llll_buf res = LLLL_BUF_INIT;
    for (int k = 0; k < c->calls; k++) {
        uint64_t x = (uint64_t)(c->base + k), y;
        int rc = llll_pool_call(c->p, &x, sizeof x, &res);
        if (rc)
            c->errors++;
        else if (res.len != sizeof y || (memcpy(&y, res.data, sizeof y), y != x * 3 + 1))
            c->wrong++;
    }
    llll_buf_free(&res);
    return NULL;
}

/* Four threads of 2000 calls each on p, started, then joined with every
 * result right. */
static void callers_start(llll_pool *p, struct caller c[4], pthread_t th[4])
{
    for (int i = 0; i < 4; i++) {
        c[i] = (struct caller){ .p = p, .base = 1000000 * (i + 1), .calls = 2000 };
        ck_assert_int_eq(pthread_create(&th[i], NULL, caller_thread, &c[i]), 0);
    }
}

static void callers_join(struct caller c[4], pthread_t th[4])
{
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        ck_assert_int_eq(c[i].errors, 0);
        ck_assert_int_eq(c[i].wrong, 0);
    }
}

struct map_arg {
    llll_pool *p;
    struct run r;
    size_t n;
    int rc;
};

static void *map_thread(void *v)
{
    struct map_arg *a = v;
    a->rc = llll_pool_map(a->p, a->n, arg_fn, result_fn, &a->r, NULL);
    return NULL;
}

/* Two maps of n items on p at once, from two threads: each must get every
 * result of its own, in order. */
static void two_maps_at_once(llll_pool *p, size_t n)
{
    static struct map_arg a[2];
    pthread_t t[2];
    for (int k = 0; k < 2; k++) {
        a[k] = (struct map_arg){ .p = p, .n = n };
        run_init(&a[k].r);
        ck_assert_int_eq(pthread_create(&t[k], NULL, map_thread, &a[k]), 0);
    }
    for (int k = 0; k < 2; k++) {
        pthread_join(t[k], NULL);
        ck_assert_int_eq(a[k].rc, 0);
        ck_assert_uint_eq(a[k].r.ok, n);
        ck_assert_uint_eq(a[k].r.out_of_order + a[k].r.wrong + a[k].r.nerr, 0);
    }
}

START_TEST(two_maps_at_once_each_get_their_own_results)
{
    no_work_twists();
    llll_pool *p = fork_pool(2, NULL);
    two_maps_at_once(p, 200000);
    llll_pool_free(p);
}
END_TEST

START_TEST(a_map_and_four_calling_threads_share_one_pool)
{
    no_work_twists();
    llll_pool *p = fork_pool(2, NULL);
    struct caller c[4];
    pthread_t th[4];
    callers_start(p, c, th);
    struct run r;
    run_init(&r);
    ck_assert_int_eq(llll_pool_map(p, 300000, arg_fn, result_fn, &r, NULL), 0);
    ck_assert_uint_eq(r.ok, 300000);
    ck_assert_uint_eq(r.out_of_order + r.wrong + r.nerr, 0);
    callers_join(c, th);
    llll_pool_stats st;
    llll_pool_get_stats(p, &st);
    ck_assert_uint_eq(st.calls, 300000 + 4 * 2000);
    llll_pool_free(p);
}
END_TEST

/* The map holds the only worker; its result callback calls the pool: the
 * map's idle worker goes to that call, and comes back to the map after. */
struct nested {
    struct run r;   /* first: arg_fn takes the context as a struct run */
    llll_pool *p;
    int calls_ok;
};

static int result_calls_the_pool(void *ctx, size_t i, int rc, const void *res, size_t len)
{
    struct nested *n = ctx;
    if (i % 100 == 0) {
        uint64_t x = i, y;
        llll_buf b = LLLL_BUF_INIT;
        if (llll_pool_call(n->p, &x, sizeof x, &b) == 0 && b.len == sizeof y &&
            (memcpy(&y, b.data, sizeof y), y == x * 3 + 1))
            n->calls_ok++;
        llll_buf_free(&b);
    }
    return result_fn(&n->r, i, rc, res, len);
}

START_TEST(a_result_callback_may_call_the_pool_of_its_map)
{
    no_work_twists();
    static struct nested n;
    n.p = fork_pool(1, NULL);
    run_init(&n.r);
    ck_assert_int_eq(llll_pool_map(n.p, 1000, arg_fn, result_calls_the_pool, &n, NULL), 0);
    ck_assert_uint_eq(n.r.ok, 1000);
    ck_assert_int_eq(n.calls_ok, 10);
    llll_pool_free(n.p);
}
END_TEST

START_TEST(free_during_a_map_returns_ecanceled)
{
    no_work_twists();
    work.block_from = 500;   /* items from 500 on never return */
    llll_pool *p = fork_pool(2, NULL);
    sem_t fetched;
    sem_init(&fetched, 0, 0);
    static struct map_arg a;
    a.p = p;
    a.n = 100000;
    run_init(&a.r);
    a.r.fetched = &fetched;
    /* Items before 500 all come back, so 500 is surely fetched (how far
     * past it the map reads ahead depends on how fast items ran: a slow
     * run, valgrind's say, keeps batches small) */
    a.r.fetch_signal = 500;
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, map_thread, &a), 0);
    while (sem_wait(&fetched) < 0 && errno == EINTR) {
    }
    llll_pool_free(p);
    pthread_join(t, NULL);
    ck_assert_msg(a.rc == -ECANCELED, "%s", llll_strerror(a.rc));
    ck_assert_uint_le(a.r.ok, 500);
    sem_destroy(&fetched);
    t_assert_no_child();
}
END_TEST

START_TEST(maps_leave_no_fd_thread_or_child_behind)
{
    no_work_twists();
    work.fail = 77;
    work.hang = 1000000;
    /* A first pool and map, so that whatever a process starts once (a
     * sanitizer's own thread, say) is there before counting. */
    llll_pool *p = fork_pool(1, NULL);
    struct run warm;
    run_init(&warm);
    ck_assert_int_eq(llll_pool_map(p, 10, arg_fn, result_fn, &warm, NULL), 0);
    llll_pool_free(p);
    int fds = t_count_dir("/proc/self/fd"), threads = t_count_dir("/proc/self/task");
    p = fork_pool(2, &(llll_pool_opts){ .call_timeout_ms = 1000 });
    for (int k = 0; k < 3; k++) {
        struct run r;
        run_init(&r);
        ck_assert_int_eq(llll_pool_map(p, 20000, arg_fn, result_fn, &r, NULL), 0);
        ck_assert_uint_eq(r.ok, 19999);
        ck_assert_uint_eq(r.nerr, 1);
    }
    llll_buf res = LLLL_BUF_INIT;   /* and a worker retired for a timeout */
    ck_assert_int_eq(llll_pool_call(p, &work.hang, sizeof work.hang, &res), -ETIMEDOUT);
    llll_buf_free(&res);
    llll_pool_free(p);
    ck_assert_int_eq(t_count_dir("/proc/self/fd"), fds);
    ck_assert_int_eq(t_threads_settled(threads), threads);
    t_assert_no_child();
}
END_TEST

START_TEST(a_pool_keeps_its_map_threads_for_the_next_map_one_per_worker_at_most)
{
    no_work_twists();
    llll_pool *p = fork_pool(2, NULL);
    int before = t_count_dir("/proc/self/task");
    struct run r;
    run_init(&r);
    ck_assert_int_eq(llll_pool_map(p, 100000, arg_fn, result_fn, &r, NULL), 0);
    ck_assert_uint_eq(r.ok, 100000);
    int kept = t_threads_settled_within(before, 2000);
    ck_assert_msg(kept > before && kept <= before + 2, "threads %d before the map, %d after", before, kept);
    for (int k = 0; k < 10; k++) {
        run_init(&r);
        ck_assert_int_eq(llll_pool_map(p, 1 + 1000 * (size_t)k, arg_fn, result_fn, &r, NULL), 0);
        ck_assert_uint_eq(r.ok, 1 + 1000 * (size_t)k);
        int now = t_count_dir("/proc/self/task");
        ck_assert_msg(now >= kept && now <= before + 2, "map %d: threads %d, %d kept", k, now, kept);
    }
    two_maps_at_once(p, 100000);   /* still one per worker */
    ck_assert_int_le(t_threads_settled_within(before + 2, 2000), before + 2);
    llll_pool_free(p);
}
END_TEST

/* The threads a pool and its maps start (a map's helper threads stay in the
 * pool; the lane watcher, once calls queued in a lane) block every signal,
 * so that one sent to the process goes to a thread of the program's own. */
START_TEST(the_threads_of_a_pool_and_its_maps_block_every_signal)
{
    T_SKIP_UNLESS(!t_under_valgrind(), "valgrind holds its threads' signals itself: /proc shows its masks");
    no_work_twists();
    pid_t before[256];
    int nb = t_task_ids(before, 256);
    llll_pool *p = fork_pool(2, NULL);
    struct run r;
    run_init(&r);
    ck_assert_int_eq(llll_pool_map(p, 100000, arg_fn, result_fn, &r, NULL), 0);
    struct caller c[4];
    pthread_t th[4];
    callers_start(p, c, th);
    callers_join(c, th);
    ck_assert_int_gt(t_new_threads_block_every_signal(before, nb), 0);
    llll_pool_free(p);
}
END_TEST

/* ------------------------------------------ calls run together by an owner */

struct one_call {
    llll_pool *p;
    uint64_t x;
    int rc;
    uint64_t y;
    _Atomic pid_t tid;
};

static void *one_call_thread(void *a)
{
    struct one_call *c = a;
    c->tid = (pid_t)syscall(SYS_gettid);
    llll_buf res = LLLL_BUF_INIT;
    c->rc = llll_pool_call(c->p, &c->x, sizeof c->x, &res);
    if (c->rc == 0 && res.len == sizeof c->y)
        memcpy(&c->y, res.data, sizeof c->y);
    llll_buf_free(&res);
    return NULL;
}

static void start_call(struct one_call *c, pthread_t *t)
{
    ck_assert_int_eq(pthread_create(t, NULL, one_call_thread, c), 0);
    while (!c->tid)
        sched_yield();
    t_wait_until_sleeping(c->tid);
}

/* Joins n calls started with start_call: item 13 (it kills its worker)
 * failed with -ECONNRESET, every other got its result. */
static void join_calls(struct one_call *c, pthread_t *t, int n)
{
    for (int k = 0; k < n; k++) {
        pthread_join(t[k], NULL);
        if (c[k].x == 13) {
            ck_assert_int_eq(c[k].rc, -ECONNRESET);
        } else {
            ck_assert_msg(c[k].rc == 0, "%d: %s", (int)c[k].x, llll_strerror(c[k].rc));
            ck_assert_uint_eq(c[k].y, c[k].x * 3 + 1);
        }
    }
}

/* One worker, held by a first call while five more queue up; its caller then
 * runs the five in one frame, and the worker dies on the fourth. The others
 * are retried alone and get their results; only the poisonous one fails. */
START_TEST(calls_run_together_with_one_that_kills_the_worker_get_their_results)
{
    int hp[2];
    ck_assert_int_eq(pipe(hp), 0);
    no_work_twists();
    work.hold = 999;
    work.hold_fd = hp[0];
    work.poison = 13;
    llll_pool *p = fork_pool(1, NULL);
    struct one_call h = { .p = p, .x = 999 }, c[5];
    pthread_t th, t[5];
    start_call(&h, &th);
    for (int k = 0; k < 5; k++) {
        c[k] = (struct one_call){ .p = p, .x = (uint64_t)(10 + k) };
        start_call(&c[k], &t[k]);
    }
    ck_assert_int_eq(write(hp[1], "x", 1), 1);
    pthread_join(th, NULL);
    ck_assert_int_eq(h.rc, 0);
    join_calls(c, t, 5);   /* 13 is the poisonous one */
    llll_pool_stats st;
    llll_pool_get_stats(p, &st);
    ck_assert_uint_eq(st.crashes, 1);
    ck_assert_uint_eq(st.respawns, 2);
    llll_pool_free(p);
    close(hp[0]);
    close(hp[1]);
    t_assert_no_child();
}
END_TEST

/* A map waiting for the worker the first caller holds, then three calls: the
 * map gets it first and lets it go to the first call, which sends its own
 * call with the two others in one frame; the worker dies on the second. The
 * first call runs again alone (the log shows it twice) and gets its result,
 * the poisonous one fails alone, the third gets its result. */
struct map_waiter {
    llll_pool *p;
    struct run r;
    int rc;
    _Atomic pid_t tid;
};

static void *map_waiter_thread(void *a)
{
    struct map_waiter *mw = a;
    mw->tid = (pid_t)syscall(SYS_gettid);
    mw->rc = llll_pool_map(mw->p, 3, arg_fn, result_fn, &mw->r, NULL);
    return NULL;
}

START_TEST(a_caller_handed_a_worker_sends_its_call_with_the_waiting_ones)
{
    char path[] = "/tmp/llll-map-log-XXXXXX";
    int hp[2];
    ck_assert_int_eq(pipe(hp), 0);
    no_work_twists();
    work.log_fd = mkstemp(path);
    ck_assert_int_ge(work.log_fd, 0);
    ck_assert_int_eq(fcntl(work.log_fd, F_SETFL, O_APPEND), 0);
    work.hold = 999;
    work.hold_fd = hp[0];
    work.poison = 13;
    llll_pool *p = fork_pool(1, NULL);
    struct one_call h = { .p = p, .x = 999 }, c[3];
    pthread_t th, t[3], mt;
    start_call(&h, &th);
    static struct map_waiter mw;
    mw.p = p;
    run_init(&mw.r);
    ck_assert_int_eq(pthread_create(&mt, NULL, map_waiter_thread, &mw), 0);
    while (!mw.tid)
        sched_yield();
    t_wait_until_sleeping(mw.tid);
    static const uint64_t xs[3] = { 10, 13, 14 };
    for (int k = 0; k < 3; k++) {
        c[k] = (struct one_call){ .p = p, .x = xs[k] };
        start_call(&c[k], &t[k]);
    }
    ck_assert_int_eq(write(hp[1], "x", 1), 1);
    pthread_join(th, NULL);
    pthread_join(mt, NULL);
    ck_assert_int_eq(h.rc, 0);
    ck_assert_int_eq(mw.rc, 0);
    ck_assert_uint_eq(mw.r.ok, 3);
    join_calls(c, t, 3);
    llll_pool_stats st;
    llll_pool_get_stats(p, &st);
    ck_assert_uint_eq(st.crashes, 1);
    llll_pool_free(p);
    static unsigned seen[1000];
    read_log(path, seen, 1000);
    ck_assert_uint_eq(seen[c[0].x], 2);   /* in the frame, then alone */
    ck_assert_uint_eq(seen[13], 2);
    close(work.log_fd);
    unlink(path);
    close(hp[0]);
    close(hp[1]);
    t_assert_no_child();
}
END_TEST

/* -------------------------------------------------- streams in memory */

START_TEST(a_ten_million_item_stream_grows_rss_by_less_than_8_mib)
{
    no_work_twists();
    llll_pool *p = fork_pool(2, NULL);
    struct run r;
    run_init(&r);
    r.eof_at = 200000;   /* warms up the allocator and the threads' arenas */
    ck_assert_int_eq(llll_pool_map(p, SIZE_MAX, arg_fn, result_fn, &r, NULL), 0);
    long before = status_kib("VmRSS");
    run_init(&r);
    r.eof_at = 10000000;
    ck_assert_int_eq(llll_pool_map(p, SIZE_MAX, arg_fn, result_fn, &r, NULL), 0);
    long after = status_kib("VmRSS");
    ck_assert_uint_eq(r.ok, 10000000);
    ck_assert_uint_eq(r.out_of_order + r.wrong + r.nerr, 0);
    llll_pool_free(p);
#if defined(__SANITIZE_THREAD__)
    (void)before, (void)after;
    fprintf(stderr, "a_ten_million_item_stream...: RSS not checked under ThreadSanitizer (its shadow and history memory grow with the work done)\n");
#elif defined(__SANITIZE_ADDRESS__)
    /* Each map frees its batches at its end; ASan keeps freed blocks in its
     * quarantine (256 MiB by default) rather than hand them out again. */
    (void)before, (void)after;
    fprintf(stderr, "a_ten_million_item_stream...: RSS not checked under AddressSanitizer (its quarantine keeps freed blocks resident)\n");
#else
    ck_assert_msg(after - before < 8 * 1024, "RSS grew by %ld KiB", after - before);
#endif
}
END_TEST

/* --------------------------------------------- what a call reports */

/* The worker reads nothing: a call whose argument is larger than the socket
 * buffers blocks in the send, which call_timeout_ms must bound too. */
START_TEST(call_timeout_bounds_the_send_of_a_large_argument)
{
    const char *argv[] = { t_helper("pool_worker"), "--deaf", NULL };
    llll_pool *p;
    llll_pool_opts o = { .call_timeout_ms = 300, .max_frame = 16 << 20 };
    ck_assert_int_eq(llll_pool_start(&p, argv, 1, &o), 0);
    size_t len = 8 << 20;
    char *big = calloc(1, len);
    ck_assert_ptr_nonnull(big);
    llll_buf res = LLLL_BUF_INIT;
    ck_assert_int_eq(llll_pool_call(p, big, len, &res), -ETIMEDOUT);
    llll_pool_stats st;
    llll_pool_get_stats(p, &st);
    ck_assert_uint_eq(st.timeouts, 1);
    ck_assert_uint_eq(st.crashes, 0);
    free(big);
    llll_buf_free(&res);
    llll_pool_free(p);
    t_assert_no_child();
}
END_TEST

/* The worker answers every request twice: the second call reads the first
 * call's extra reply, whose id is not its own. */
START_TEST(a_reply_to_another_request_gives_eproto_and_retires_the_worker)
{
    const char *argv[] = { t_helper("pool_worker"), "--extra", NULL };
    llll_pool *p;
    ck_assert_int_eq(llll_pool_start(&p, argv, 1, NULL), 0);
    llll_buf res = LLLL_BUF_INIT;
    ck_assert_int_eq(llll_pool_call(p, "abc", 3, &res), 0);
    ck_assert_mem_eq(res.data, "cba", 3);
    ck_assert_int_eq(llll_pool_call(p, "xyz", 3, &res), -EPROTO);
    ck_assert_uint_eq(res.len, 0);
    ck_assert_int_eq(llll_pool_call(p, "uvw", 3, &res), 0);   /* a new worker */
    ck_assert_mem_eq(res.data, "wvu", 3);
    llll_pool_stats st;
    llll_pool_get_stats(p, &st);
    ck_assert_uint_eq(st.protocol_errors, 1);
    ck_assert_uint_eq(st.crashes, 0);
    ck_assert_uint_eq(st.respawns, 1);
    llll_buf_free(&res);
    llll_pool_free(p);
    t_assert_no_child();
}
END_TEST

START_TEST(a_malformed_reply_gives_eproto_and_retires_the_worker)
{
    const char *argv[] = { t_helper("pool_worker"), "--garbage", NULL };
    llll_pool *p;
    ck_assert_int_eq(llll_pool_start(&p, argv, 1, NULL), 0);
    llll_buf res = LLLL_BUF_INIT;
    ck_assert_int_eq(llll_pool_call(p, "abc", 3, &res), -EPROTO);
    llll_pool_stats st;
    llll_pool_get_stats(p, &st);
    ck_assert_uint_eq(st.protocol_errors, 1);
    ck_assert_uint_eq(st.crashes, 0);
    ck_assert_int_eq(llll_pool_size(p), 1);
    llll_buf_free(&res);
    llll_pool_free(p);
    t_assert_no_child();
}
END_TEST

START_TEST(a_failed_allocation_here_gives_enomem_not_a_crash)
{
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
    return;   /* the sanitizers reserve address space an RLIMIT_AS refuses */
#endif
    no_work_twists();
    work.big = 256 << 20;
    llll_pool *p = fork_pool(1, &(llll_pool_opts){ .max_frame = 512 << 20 });
    struct rlimit old, lim;
    ck_assert_int_eq(getrlimit(RLIMIT_AS, &old), 0);
    lim = old;
    lim.rlim_cur = (rlim_t)status_kib("VmSize") * 1024 + (64 << 20);
    ck_assert_int_eq(setrlimit(RLIMIT_AS, &lim), 0);
    if (!t_as_limit_bites()) {
        ck_assert_int_eq(setrlimit(RLIMIT_AS, &old), 0);
        llll_pool_free(p);
        T_SKIP_UNLESS(false, "RLIMIT_AS is not enforced here (qemu-user?)");
    }
    llll_buf res = LLLL_BUF_INIT;
    uint64_t zero = 0;
    int rc = llll_pool_call(p, &zero, sizeof zero, &res);
    ck_assert_int_eq(setrlimit(RLIMIT_AS, &old), 0);
    ck_assert_msg(rc == -ENOMEM, "%s", llll_strerror(rc));
    llll_pool_stats st;
    llll_pool_get_stats(p, &st);
    ck_assert_uint_eq(st.crashes, 0);
    uint64_t one = 1, y;
    ck_assert_int_eq(llll_pool_call(p, &one, sizeof one, &res), 0);
    memcpy(&y, res.data, sizeof y);
    ck_assert_uint_eq(y, 4);
    llll_buf_free(&res);
    llll_pool_free(p);
    t_assert_no_child();
}
END_TEST

START_TEST(start_names_both_protocol_versions_when_verbose)
{
    int err[2];
    ck_assert_int_eq(pipe(err), 0);
    int saved = dup(2);
    ck_assert_int_eq(dup2(err[1], 2), 2);
    const char *argv[] = { t_helper("pool_worker"), "--v1", NULL };
    llll_pool *p;
    llll_pool_opts o = { .instance.proc.verbose = true };
    int rc = llll_pool_start(&p, argv, 1, &o);
    dup2(saved, 2);
    close(saved);
    close(err[1]);
    ck_assert_int_eq(rc, -EPROTO);
    char buf[4096];
    size_t got = 0;
    ssize_t k;
    while ((k = read(err[0], buf + got, sizeof buf - 1 - got)) > 0)
        got += (size_t)k;
    buf[got] = '\0';
    close(err[0]);
    ck_assert_msg(strstr(buf, "protocol version 1") && strstr(buf, "speaks version 2"), "%s", buf);
}
END_TEST

/* A map through the worker written by hand against the documented format:
 * batches of several arguments, one reply frame each. */
static int arg_text(void *ctx, size_t i, llll_buf *arg)
{
    (void)ctx;
    char s[32];
    int n = snprintf(s, sizeof s, "%zu", i);
    return llll_buf_set(arg, s, (size_t)n);
}

static int result_reversed(void *ctx, size_t i, int rc, const void *res, size_t len)
{
    size_t *good = ctx;
    char s[32], r[32];
    int n = snprintf(s, sizeof s, "%zu", i);
    for (int k = 0; k < n; k++)
        r[k] = s[n - 1 - k];
    if (rc == 0 && len == (size_t)n && memcmp(res, r, len) == 0 && *good == i)
        ++*good;
    return 0;
}

START_TEST(a_map_through_a_worker_written_by_hand)
{
    const char *argv[] = { t_helper("pool_worker"), "--raw", NULL };
    llll_pool *p;
    ck_assert_int_eq(llll_pool_start(&p, argv, 2, NULL), 0);
    size_t good = 0;
    llll_pool_map_opts o = { .batch = 50 };
    ck_assert_int_eq(llll_pool_map(p, 10000, arg_text, result_reversed, &good, &o), 0);
    ck_assert_uint_eq(good, 10000);
    llll_pool_free(p);
}
END_TEST

START_TEST(map_rejects_null_arguments)
{
    ck_assert_int_eq(llll_pool_map(NULL, 1, arg_fn, result_fn, NULL, NULL), -EINVAL);
    /* On a live pool: a missing arg or result callback is refused before
     * any item is fetched or delivered, and the pool still maps. */
    no_work_twists();
    llll_pool *p = fork_pool(1, NULL);
    struct run r;
    run_init(&r);
    ck_assert_int_eq(llll_pool_map(p, 3, NULL, result_fn, &r, NULL), -EINVAL);
    ck_assert_int_eq(llll_pool_map(p, 3, arg_fn, NULL, &r, NULL), -EINVAL);
    ck_assert_uint_eq(r.next, 0);
    ck_assert_int_eq(llll_pool_map(p, 3, arg_fn, result_fn, &r, NULL), 0);
    ck_assert_uint_eq(r.ok, 3);
    llll_pool_free(p);
}
END_TEST

static Suite *pool_map_suite(void)
{
    Suite *s = suite_create("pool map");
    TCase *tc = tcase_create("map");
    tcase_add_test(tc, a_map_delivers_every_result_in_order_for_0_1_and_a_million_items);
    tcase_add_test(tc, a_stream_of_unknown_length_ends_with_llll_eof);
    tcase_add_test(tc, a_fixed_batch_size_gives_the_same_results);
    tcase_add_test(tc, a_result_callback_stops_the_map_early);
    tcase_add_test(tc, an_argument_callback_stops_the_map_with_its_value);
    tcase_add_test(tc, a_failing_item_gets_eremoteio_with_the_workers_message);
    tcase_add_test(tc, an_argument_over_max_frame_fails_alone_with_emsgsize);
    tcase_add_test(tc, an_item_that_kills_its_worker_fails_alone_and_every_other_gets_its_result);
    tcase_add_test(tc, an_item_that_hangs_times_out_alone);
    tcase_add_test(tc, a_hung_item_in_a_large_batch_costs_about_one_call_timeout);
    tcase_add_test(tc, a_map_and_four_calling_threads_share_one_pool);
    tcase_add_test(tc, two_maps_at_once_each_get_their_own_results);
    tcase_add_test(tc, a_result_callback_may_call_the_pool_of_its_map);
    tcase_add_test(tc, free_during_a_map_returns_ecanceled);
    tcase_add_test(tc, maps_leave_no_fd_thread_or_child_behind);
    tcase_add_test(tc, a_pool_keeps_its_map_threads_for_the_next_map_one_per_worker_at_most);
    tcase_add_test(tc, the_threads_of_a_pool_and_its_maps_block_every_signal);
    tcase_add_test(tc, a_map_through_a_worker_written_by_hand);
    tcase_add_test(tc, map_rejects_null_arguments);
    suite_add_tcase(s, tc);

    tc = tcase_create("stream memory");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, a_ten_million_item_stream_grows_rss_by_less_than_8_mib);
    suite_add_tcase(s, tc);

    tc = tcase_create("call errors");
    tcase_add_test(tc, calls_run_together_with_one_that_kills_the_worker_get_their_results);
    tcase_add_test(tc, a_caller_handed_a_worker_sends_its_call_with_the_waiting_ones);
    tcase_add_test(tc, call_timeout_bounds_the_send_of_a_large_argument);
    tcase_add_test(tc, a_reply_to_another_request_gives_eproto_and_retires_the_worker);
    tcase_add_test(tc, a_malformed_reply_gives_eproto_and_retires_the_worker);
    tcase_add_test(tc, a_failed_allocation_here_gives_enomem_not_a_crash);
    tcase_add_test(tc, start_names_both_protocol_versions_when_verbose);
    suite_add_tcase(s, tc);
    return s;
}
T_SUITE(pool_map_suite)
