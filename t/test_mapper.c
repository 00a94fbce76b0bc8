/* Tests of mapper.c: llll_mapper (suite "mapper"), llll_fifo ("fifo"),
 * llll_gen ("gen"). */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include "llll.h"
#include "t.h"

/* ------------------------------------------------------------------ mapper */

/* out[i] = f(i), with a per-index call counter. */
typedef struct {
    size_t *out;
    atomic_uint *calls;
    size_t mul;
} fill_ctx;

static size_t f_of(size_t i, size_t mul) { return i * mul + 3; }

static int fill_fn(void *ctx, size_t i)
{
    fill_ctx *c = ctx;
    c->out[i] = f_of(i, c->mul);
    atomic_fetch_add(&c->calls[i], 1);
    return 0;
}

static void fill_init(fill_ctx *c, size_t n, size_t mul)
{
    c->out = calloc(n ? n : 1, sizeof *c->out);
    c->calls = calloc(n ? n : 1, sizeof *c->calls);
    ck_assert_ptr_nonnull(c->out);
    ck_assert_ptr_nonnull(c->calls);
    c->mul = mul;
}

/* Every out[i] is f(i) and every i ran exactly once. (One assertion for the
 * whole array: Check records every assertion it passes, which is slow.) */
static void fill_check(fill_ctx *c, size_t n)
{
    size_t bad = n;
    for (size_t i = 0; i < n && bad == n; i++)
        if (atomic_load(&c->calls[i]) != 1 || c->out[i] != f_of(i, c->mul))
            bad = i;
    ck_assert_msg(bad == n, "item %zu: ran %u times, out %zu", bad,
                  bad < n ? atomic_load(&c->calls[bad]) : 0, bad < n ? c->out[bad] : 0);
    free(c->out);
    free(c->calls);
}

static void map_and_check(int nthread, size_t n)
{
    llll_mapper *m;
    ck_assert_int_eq(llll_mapper_new(&m, nthread), 0);
    fill_ctx c;
    fill_init(&c, n, 7);
    ck_assert_int_eq(llll_mapper_map(m, n, fill_fn, &c), 0);
    fill_check(&c, n);
    llll_mapper_free(m);
}

static int never_called_fn(void *ctx, size_t i)
{
    (void)i;
    atomic_fetch_add((atomic_int *)ctx, 1);
    return -EIO;
}

START_TEST(map_of_zero_items_returns_0_without_calling_fn)
{
    llll_mapper *m;
    ck_assert_int_eq(llll_mapper_new(&m, 2), 0);
    atomic_int calls = 0;
    ck_assert_int_eq(llll_mapper_map(m, 0, never_called_fn, &calls), 0);
    ck_assert_int_eq(atomic_load(&calls), 0);
    llll_mapper_free(m);
}
END_TEST

START_TEST(map_rejects_a_null_fn_or_mapper_and_runs_nothing)
{
    llll_mapper *m;
    ck_assert_int_eq(llll_mapper_new(&m, 2), 0);
    /* Through the workers (many items) and on the caller alone (one). */
    ck_assert_int_eq(llll_mapper_map(m, 1000, NULL, NULL), -EINVAL);
    ck_assert_int_eq(llll_mapper_map(m, 1, NULL, NULL), -EINVAL);
    atomic_int calls = 0;
    ck_assert_int_eq(llll_mapper_map(NULL, 10, never_called_fn, &calls), -EINVAL);
    ck_assert_int_eq(atomic_load(&calls), 0);
    /* The mapper still maps. */
    fill_ctx c;
    fill_init(&c, 1000, 5);
    ck_assert_int_eq(llll_mapper_map(m, 1000, fill_fn, &c), 0);
    fill_check(&c, 1000);
    llll_mapper_free(m);
}
END_TEST

START_TEST(map_of_one_item_calls_fn_once_with_index_0)
{
    map_and_check(2, 1);
}
END_TEST

START_TEST(map_of_a_million_items_runs_each_index_exactly_once)
{
    map_and_check(2, 1000000);
}
END_TEST

START_TEST(map_of_a_million_items_on_four_threads_runs_each_index_exactly_once)
{
    map_and_check(4, 1000000);
}
END_TEST

typedef struct {
    atomic_uint *calls;
} fail_ctx;

static int fail_some_fn(void *ctx, size_t i)
{
    fail_ctx *c = ctx;
    atomic_fetch_add(&c->calls[i], 1);
    switch (i) {
    case 7: return -EDOM;
    case 500: return -EIO;
    case 90000: return -ENOSPC;
    default: return 0;
    }
}

START_TEST(map_returns_the_error_of_the_lowest_failing_index_and_still_runs_every_item)
{
    enum { N = 200000 };
    llll_mapper *m;
    ck_assert_int_eq(llll_mapper_new(&m, 2), 0);
    fail_ctx c = {calloc(N, sizeof(atomic_uint))};
    ck_assert_ptr_nonnull(c.calls);
    /* Several rounds: which thread meets which failure first varies. */
    for (int round = 0; round < 20; round++) {
        ck_assert_int_eq(llll_mapper_map(m, N, fail_some_fn, &c), -EDOM);
        size_t bad = N;
        for (size_t i = 0; i < N && bad == N; i++)
            if (atomic_load(&c.calls[i]) != (unsigned)round + 1)
                bad = i;
        ck_assert_msg(bad == N, "round %d: item %zu ran %u times in all", round, bad,
                      bad < N ? atomic_load(&c.calls[bad]) : 0);
    }
    free(c.calls);
    llll_mapper_free(m);
}
END_TEST

/* Four items on four threads, one each (they meet inside fn first), every
 * item failing with its own code: whichever thread finishes first or last,
 * the code of item 0 wins. */
typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int inside;
} meet_ctx;

static int meet_then_fail_fn(void *ctx, size_t i)
{
    meet_ctx *c = ctx;
    pthread_mutex_lock(&c->mu);
    c->inside++;
    pthread_cond_broadcast(&c->cv);
    while (c->inside % 4 != 0)
        pthread_cond_wait(&c->cv, &c->mu);
    pthread_mutex_unlock(&c->mu);
    return -100 - (int)i;
}

START_TEST(map_returns_the_code_of_item_0_whichever_thread_finishes_last)
{
    llll_mapper *m;
    ck_assert_int_eq(llll_mapper_new(&m, 4), 0);
    meet_ctx c = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0};
    for (int round = 0; round < 200; round++)
        ck_assert_int_eq(llll_mapper_map(m, 4, meet_then_fail_fn, &c), -100);
    llll_mapper_free(m);
}
END_TEST

typedef struct {
    llll_mapper *m;
    size_t n, mul;
    int rc;
    fill_ctx c;
} mapping_thread;

static void *mapping_thread_body(void *arg)
{
    mapping_thread *t = arg;
    t->rc = llll_mapper_map(t->m, t->n, fill_fn, &t->c);
    return NULL;
}

START_TEST(four_threads_mapping_at_once_on_one_mapper_each_get_their_own_results)
{
    llll_mapper *m;
    ck_assert_int_eq(llll_mapper_new(&m, 2), 0);
    enum { T = 4 };
    mapping_thread t[T];
    pthread_t th[T];
    for (int round = 0; round < 5; round++) {
        for (int k = 0; k < T; k++) {
            t[k].m = m;
            t[k].n = 100000 + (size_t)k * 1000;
            t[k].rc = 1;
            fill_init(&t[k].c, t[k].n, (size_t)k + 2);
            ck_assert_int_eq(pthread_create(&th[k], NULL, mapping_thread_body, &t[k]), 0);
        }
        for (int k = 0; k < T; k++) {
            ck_assert_int_eq(pthread_join(th[k], NULL), 0);
            ck_assert_int_eq(t[k].rc, 0);
            fill_check(&t[k].c, t[k].n);
        }
    }
    llll_mapper_free(m);
}
END_TEST

enum { OUTER = 64, INNER = 2000 };

typedef struct {
    llll_mapper *m;
    size_t *out;          /* OUTER x INNER */
    atomic_uint *calls;
} nest_ctx;

typedef struct {
    nest_ctx *nc;
    size_t row;
} row_ctx;

static int inner_fn(void *ctx, size_t j)
{
    row_ctx *r = ctx;
    size_t k = r->row * INNER + j;
    r->nc->out[k] = r->row * 1000003 + j;
    atomic_fetch_add(&r->nc->calls[k], 1);
    return 0;
}

static int outer_fn(void *ctx, size_t i)
{
    nest_ctx *nc = ctx;
    row_ctx r = {nc, i};
    return llll_mapper_map(nc->m, INNER, inner_fn, &r);
}

static void nested_map_on(int nthread)
{
    nest_ctx nc;
    ck_assert_int_eq(llll_mapper_new(&nc.m, nthread), 0);
    nc.out = calloc(OUTER * INNER, sizeof *nc.out);
    nc.calls = calloc(OUTER * INNER, sizeof *nc.calls);
    ck_assert_ptr_nonnull(nc.out);
    ck_assert_ptr_nonnull(nc.calls);
    for (int round = 0; round < 10; round++) {
        ck_assert_int_eq(llll_mapper_map(nc.m, OUTER, outer_fn, &nc), 0);
        size_t bad = OUTER * INNER;
        for (size_t k = 0; k < OUTER * INNER && bad == OUTER * INNER; k++)
            if (atomic_load(&nc.calls[k]) != (unsigned)round + 1 ||
                nc.out[k] != (k / INNER) * 1000003 + k % INNER)
                bad = k;
        ck_assert_msg(bad == OUTER * INNER, "round %d: item %zu of row %zu is wrong", round,
                      bad % INNER, bad / INNER);
    }
    free(nc.out);
    free(nc.calls);
    llll_mapper_free(nc.m);
}

START_TEST(nested_map_from_inside_fn_on_the_same_mapper_completes_with_every_result)
{
    nested_map_on(2);
}
END_TEST

START_TEST(nested_map_on_a_mapper_of_four_threads_completes_with_every_result)
{
    nested_map_on(4);
}
END_TEST

typedef struct {
    pthread_t caller;
    atomic_int elsewhere;
} self_ctx;

static int on_caller_fn(void *ctx, size_t i)
{
    (void)i;
    self_ctx *c = ctx;
    if (!pthread_equal(pthread_self(), c->caller))
        atomic_fetch_add(&c->elsewhere, 1);
    return 0;
}

START_TEST(mapper_of_one_thread_runs_every_item_on_the_calling_thread)
{
    llll_mapper *m;
    ck_assert_int_eq(llll_mapper_new(&m, 1), 0);
    self_ctx c = {pthread_self(), 0};
    ck_assert_int_eq(llll_mapper_map(m, 100000, on_caller_fn, &c), 0);
    ck_assert_int_eq(atomic_load(&c.elsewhere), 0);
    llll_mapper_free(m);
    map_and_check(1, 100000);
}
END_TEST

/* Each item waits until `want` items are inside fn at once: the map can only
 * finish when the mapper really runs that many threads (else the case times
 * out). With n == want, every claim is a single item. */
typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int inside, want;
} gather_ctx;

static int gather_fn(void *ctx, size_t i)
{
    (void)i;
    gather_ctx *g = ctx;
    pthread_mutex_lock(&g->mu);
    g->inside++;
    pthread_cond_broadcast(&g->cv);
    while (g->inside < g->want)
        pthread_cond_wait(&g->cv, &g->mu);
    pthread_mutex_unlock(&g->mu);
    return 0;
}

static void gather_on(int nthread, int want)
{
    llll_mapper *m;
    ck_assert_int_eq(llll_mapper_new(&m, nthread), 0);
    gather_ctx g = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, want};
    ck_assert_int_eq(llll_mapper_map(m, (size_t)want, gather_fn, &g), 0);
    ck_assert_int_eq(g.inside, want);
    llll_mapper_free(m);
}

START_TEST(mapper_of_zero_threads_runs_as_many_items_at_once_as_there_are_processors)
{
    gather_on(0, (int)sysconf(_SC_NPROCESSORS_ONLN));
    map_and_check(0, 100000);
}
END_TEST

START_TEST(mapper_of_three_threads_runs_three_items_at_once)
{
    gather_on(3, 3);
}
END_TEST

START_TEST(mapper_new_rejects_a_negative_thread_count)
{
    llll_mapper *m = (llll_mapper *)&m;
    ck_assert_int_eq(llll_mapper_new(&m, -1), -EINVAL);
    ck_assert_ptr_null(m);
    llll_mapper_free(NULL);
}
END_TEST

/* ---------------------------------------------------------------- schedule */

/* Some items block until the test releases them; the test waits until every
 * other item has run, which it can only see if no item waits behind a held
 * one (else the case times out). */
enum { MAX_HELD = 2 };

typedef struct {
    llll_mapper *m;
    size_t n;
    size_t held[MAX_HELD];
    int nheld;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int inside;                 /* held items entered */
    bool release;
    atomic_size_t done;         /* other items returned */
    atomic_uint *calls;
    int rc;
} hold_ctx;

static bool is_held(const hold_ctx *h, size_t i)
{
    for (int k = 0; k < h->nheld; k++)
        if (h->held[k] == i)
            return true;
    return false;
}

static int hold_fn(void *ctx, size_t i)
{
    hold_ctx *h = ctx;
    atomic_fetch_add(&h->calls[i], 1);
    if (is_held(h, i)) {
        pthread_mutex_lock(&h->mu);
        h->inside++;
        pthread_cond_broadcast(&h->cv);
        while (!h->release)
            pthread_cond_wait(&h->cv, &h->mu);
        pthread_mutex_unlock(&h->mu);
    } else if (atomic_fetch_add(&h->done, 1) + 1 == h->n - (size_t)h->nheld) {
        pthread_mutex_lock(&h->mu);
        pthread_cond_broadcast(&h->cv);
        pthread_mutex_unlock(&h->mu);
    }
    return 0;
}

static void *hold_map_body(void *arg)
{
    hold_ctx *h = arg;
    h->rc = llll_mapper_map(h->m, h->n, hold_fn, h);
    return NULL;
}

/* Maps n items on nthread threads with the items in held[] blocked: every
 * other item must run before any held one is released. */
static void map_while_held(int nthread, size_t n, const size_t *held, int nheld)
{
    hold_ctx h = {.n = n, .nheld = nheld, .mu = PTHREAD_MUTEX_INITIALIZER,
                  .cv = PTHREAD_COND_INITIALIZER, .rc = 1};
    for (int k = 0; k < nheld; k++)
        h.held[k] = held[k];
    h.calls = calloc(n, sizeof *h.calls);
    ck_assert_ptr_nonnull(h.calls);
    ck_assert_int_eq(llll_mapper_new(&h.m, nthread), 0);
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, hold_map_body, &h), 0);
    pthread_mutex_lock(&h.mu);
    while (h.inside < nheld || atomic_load(&h.done) < n - (size_t)nheld)
        pthread_cond_wait(&h.cv, &h.mu);
    h.release = true;
    pthread_cond_broadcast(&h.cv);
    pthread_mutex_unlock(&h.mu);
    ck_assert_int_eq(pthread_join(t, NULL), 0);
    ck_assert_int_eq(h.rc, 0);
    size_t bad = n;
    for (size_t i = 0; i < n && bad == n; i++)
        if (atomic_load(&h.calls[i]) != 1)
            bad = i;
    ck_assert_msg(bad == n, "item %zu ran %u times", bad, bad < n ? atomic_load(&h.calls[bad]) : 0);
    free(h.calls);
    llll_mapper_free(h.m);
}

START_TEST(while_item_0_is_held_every_other_item_runs)
{
    size_t held = 0;
    map_while_held(2, 1000, &held, 1);
}
END_TEST

START_TEST(while_an_item_in_the_middle_is_held_after_thousands_of_fast_ones_every_other_item_runs)
{
    size_t held = 50000;
    map_while_held(2, 100000, &held, 1);
}
END_TEST

/* Fails for a schedule whose threads run their range from its back end (as
 * the owner of a work-stealing deque does). */
START_TEST(while_the_last_item_is_held_every_other_item_runs)
{
    size_t held = 99999;
    map_while_held(2, 100000, &held, 1);
}
END_TEST

/* Skew at the back: near the end, guided chunks of remaining / (2 x nthread)
 * put item n - 9 with its successor. */
START_TEST(while_the_ninth_item_from_the_end_is_held_every_other_item_runs)
{
    size_t held = 99991;
    map_while_held(2, 100000, &held, 1);
}
END_TEST

START_TEST(while_two_items_are_held_on_three_threads_every_other_item_runs)
{
    size_t held[2] = {1, 70000};
    map_while_held(3, 100000, held, 2);
}
END_TEST

/* Items of uneven cost on more threads than cores: ranges are split by
 * thieves all along, and still every index runs exactly once. */
static int uneven_fn(void *ctx, size_t i)
{
    fill_ctx *c = ctx;
    size_t spin = 0;
    for (size_t k = 0; k < (i * 2654435761u) % 4096; k++)
        spin += k;
    __asm__ volatile("" : : "r"(spin)); /* keeps the loop: the item's cost */
    return fill_fn(c, i);
}

START_TEST(map_of_uneven_items_on_four_threads_runs_each_index_exactly_once_in_every_round)
{
    enum { N = 3000 };
    llll_mapper *m;
    ck_assert_int_eq(llll_mapper_new(&m, 4), 0);
    for (int round = 0; round < 40; round++) {
        fill_ctx c;
        fill_init(&c, N, (size_t)round + 1);
        ck_assert_int_eq(llll_mapper_map(m, N, uneven_fn, &c), 0);
        fill_check(&c, N);
    }
    llll_mapper_free(m);
}
END_TEST

static int nothing_fn(void *ctx, size_t i)
{
    (void)ctx, (void)i;
    return 0;
}

/* A mapper's worker threads block every signal, so that one sent to the
 * process goes to a thread of the program's own. */
START_TEST(a_mappers_threads_block_every_signal)
{
    T_SKIP_UNLESS(!t_under_valgrind(), "valgrind holds its threads' signals itself: /proc shows its masks");
    pid_t before[256];
    int nb = t_task_ids(before, 256);
    llll_mapper *m;
    ck_assert_int_eq(llll_mapper_new(&m, 3), 0);
    ck_assert_int_eq(llll_mapper_map(m, 100000, nothing_fn, NULL), 0);
    ck_assert_int_eq(t_new_threads_block_every_signal(before, nb), 2);
    llll_mapper_free(m);
}
END_TEST

static Suite *mapper_suite(void)
{
    Suite *s = suite_create("mapper");
    TCase *tc = tcase_create("mapper");
    tcase_set_timeout(tc, 20);
    tcase_add_test(tc, map_of_zero_items_returns_0_without_calling_fn);
    tcase_add_test(tc, map_rejects_a_null_fn_or_mapper_and_runs_nothing);
    tcase_add_test(tc, a_mappers_threads_block_every_signal);
    tcase_add_test(tc, map_of_one_item_calls_fn_once_with_index_0);
    tcase_add_test(tc, map_of_a_million_items_runs_each_index_exactly_once);
    tcase_add_test(tc, map_of_a_million_items_on_four_threads_runs_each_index_exactly_once);
    tcase_add_test(tc, map_returns_the_error_of_the_lowest_failing_index_and_still_runs_every_item);
    tcase_add_test(tc, map_returns_the_code_of_item_0_whichever_thread_finishes_last);
    tcase_add_test(tc, four_threads_mapping_at_once_on_one_mapper_each_get_their_own_results);
    tcase_add_test(tc, nested_map_from_inside_fn_on_the_same_mapper_completes_with_every_result);
    tcase_add_test(tc, nested_map_on_a_mapper_of_four_threads_completes_with_every_result);
    tcase_add_test(tc, mapper_of_one_thread_runs_every_item_on_the_calling_thread);
    tcase_add_test(tc, mapper_of_zero_threads_runs_as_many_items_at_once_as_there_are_processors);
    tcase_add_test(tc, mapper_of_three_threads_runs_three_items_at_once);
    tcase_add_test(tc, mapper_new_rejects_a_negative_thread_count);
    suite_add_tcase(s, tc);
    TCase *sched = tcase_create("schedule");
    tcase_set_timeout(sched, 20);
    tcase_add_test(sched, while_item_0_is_held_every_other_item_runs);
    tcase_add_test(sched, while_an_item_in_the_middle_is_held_after_thousands_of_fast_ones_every_other_item_runs);
    tcase_add_test(sched, while_the_last_item_is_held_every_other_item_runs);
    tcase_add_test(sched, while_the_ninth_item_from_the_end_is_held_every_other_item_runs);
    tcase_add_test(sched, while_two_items_are_held_on_three_threads_every_other_item_runs);
    tcase_add_test(sched, map_of_uneven_items_on_four_threads_runs_each_index_exactly_once_in_every_round);
    suite_add_tcase(s, sched);
    return s;
}
T_SUITE(mapper_suite)

/* -------------------------------------------------------------------- fifo */

#define P(x) ((void *)(uintptr_t)(x))
#define U(p) ((uintptr_t)(p))

START_TEST(fifo_new_rejects_capacity_zero)
{
    llll_fifo *q = (llll_fifo *)&q;
    ck_assert_int_eq(llll_fifo_new(&q, 0), -EINVAL);
    ck_assert_ptr_null(q);
    llll_fifo_free(NULL);
}
END_TEST

START_TEST(fifo_returns_items_in_the_order_they_were_put_across_the_ring_end)
{
    llll_fifo *q;
    ck_assert_int_eq(llll_fifo_new(&q, 3), 0);
    uintptr_t next_put = 1, next_get = 1;
    /* Uneven puts and gets move the head around the ring several times. */
    for (int round = 0; round < 10; round++) {
        for (int k = 0; k < 2; k++)
            ck_assert_int_eq(llll_fifo_put(q, P(next_put++), 0), 0);
        for (int k = 0; k < 2; k++) {
            void *item = NULL;
            ck_assert_int_eq(llll_fifo_get(q, &item, 0), 0);
            ck_assert_uint_eq(U(item), next_get++);
        }
    }
    llll_fifo_free(q);
}
END_TEST

START_TEST(fifo_put_on_a_full_queue_with_timeout_0_fails_and_changes_nothing)
{
    llll_fifo *q;
    ck_assert_int_eq(llll_fifo_new(&q, 2), 0);
    ck_assert_int_eq(llll_fifo_put(q, P(1), 0), 0);
    ck_assert_int_eq(llll_fifo_put(q, P(2), 0), 0);
    int rc = llll_fifo_put(q, P(3), 0);
    ck_assert_msg(rc == -ETIMEDOUT, "put on full: %d", rc);
    void *item;
    ck_assert_int_eq(llll_fifo_get(q, &item, 0), 0);
    ck_assert_uint_eq(U(item), 1);
    ck_assert_int_eq(llll_fifo_get(q, &item, 0), 0);
    ck_assert_uint_eq(U(item), 2);
    rc = llll_fifo_get(q, &item, 0);
    ck_assert_msg(rc == -ETIMEDOUT, "get on empty: %d", rc);
    llll_fifo_free(q);
}
END_TEST

START_TEST(fifo_put_on_a_full_queue_times_out_after_timeout_ms)
{
    llll_fifo *q;
    ck_assert_int_eq(llll_fifo_new(&q, 1), 0);
    ck_assert_int_eq(llll_fifo_put(q, P(1), 0), 0);
    ck_assert_int_eq(llll_fifo_put(q, P(2), 30), -ETIMEDOUT);
    void *item;
    ck_assert_int_eq(llll_fifo_get(q, &item, 0), 0);
    ck_assert_uint_eq(U(item), 1);
    llll_fifo_free(q);
}
END_TEST

START_TEST(fifo_get_on_an_empty_queue_times_out_after_timeout_ms)
{
    llll_fifo *q;
    ck_assert_int_eq(llll_fifo_new(&q, 4), 0);
    void *item = P(99);
    ck_assert_int_eq(llll_fifo_get(q, &item, 30), -ETIMEDOUT);
    ck_assert_uint_eq(U(item), 99);
    llll_fifo_free(q);
}
END_TEST

/* A thread inside one put or get (or llll_gen_get) whose finite timeout is
 * far longer than the case: it publishes its tid, then calls; the test waits
 * until it sleeps in the call, then lets it through. */
enum { LONG_MS = 60000 };

typedef struct {
    llll_fifo *q;
    llll_gen *g;
    void *item;                 /* put's item; get's result */
    int rc;
    pid_t tid;
    sem_t started;
} waiter;

static void *fifo_get_waiter(void *arg)
{
    waiter *w = arg;
    w->tid = gettid();
    sem_post(&w->started);
    w->rc = llll_fifo_get(w->q, &w->item, LONG_MS);
    return NULL;
}

static void *fifo_put_waiter(void *arg)
{
    waiter *w = arg;
    w->tid = gettid();
    sem_post(&w->started);
    w->rc = llll_fifo_put(w->q, w->item, LONG_MS);
    return NULL;
}

static void *gen_get_waiter(void *arg)
{
    waiter *w = arg;
    w->tid = gettid();
    sem_post(&w->started);
    w->rc = llll_gen_get(w->g, &w->item, LONG_MS);
    return NULL;
}

/* Starts fn on w and returns once that thread sleeps inside its call. */
static void start_waiter(waiter *w, void *(*fn)(void *), pthread_t *t)
{
    w->rc = 1;
    ck_assert_int_eq(sem_init(&w->started, 0, 0), 0);
    ck_assert_int_eq(pthread_create(t, NULL, fn, w), 0);
    while (sem_wait(&w->started) != 0)
        ck_assert_int_eq(errno, EINTR);
    t_wait_until_sleeping(w->tid);
}

START_TEST(fifo_get_with_a_finite_timeout_waits_for_a_put)
{
    llll_fifo *q;
    ck_assert_int_eq(llll_fifo_new(&q, 2), 0);
    waiter w = {.q = q, .item = P(99)};
    pthread_t t;
    start_waiter(&w, fifo_get_waiter, &t);
    ck_assert_int_eq(llll_fifo_put(q, P(7), 0), 0);
    ck_assert_int_eq(pthread_join(t, NULL), 0);
    ck_assert_int_eq(w.rc, 0);
    ck_assert_uint_eq(U(w.item), 7);
    void *item;
    ck_assert_int_eq(llll_fifo_get(q, &item, 0), -ETIMEDOUT);
    sem_destroy(&w.started);
    llll_fifo_free(q);
}
END_TEST

START_TEST(fifo_put_on_a_full_queue_with_a_finite_timeout_waits_for_a_get)
{
    llll_fifo *q;
    ck_assert_int_eq(llll_fifo_new(&q, 1), 0);
    ck_assert_int_eq(llll_fifo_put(q, P(1), 0), 0);
    waiter w = {.q = q, .item = P(2)};
    pthread_t t;
    start_waiter(&w, fifo_put_waiter, &t);
    void *item = NULL;
    ck_assert_int_eq(llll_fifo_get(q, &item, 0), 0);
    ck_assert_uint_eq(U(item), 1);
    ck_assert_int_eq(pthread_join(t, NULL), 0);
    ck_assert_int_eq(w.rc, 0);
    ck_assert_int_eq(llll_fifo_get(q, &item, 0), 0);
    ck_assert_uint_eq(U(item), 2);
    ck_assert_int_eq(llll_fifo_get(q, &item, 0), -ETIMEDOUT);
    sem_destroy(&w.started);
    llll_fifo_free(q);
}
END_TEST

enum { PRODUCERS = 4, CONSUMERS = 4, PER_PRODUCER = 25000 };

typedef struct {
    llll_fifo *q;
    int id;
    atomic_uchar *seen;         /* PRODUCERS * PER_PRODUCER */
    int order_errors;
} pc_ctx;

/* Item of producer p, sequence s: p * PER_PRODUCER + s + 1 (never NULL). */
static void *producer_body(void *arg)
{
    pc_ctx *c = arg;
    for (uintptr_t s = 0; s < PER_PRODUCER; s++)
        if (llll_fifo_put(c->q, P((uintptr_t)c->id * PER_PRODUCER + s + 1), -1) != 0)
            break;
    return NULL;
}

/* Takes items until a NULL; items of one producer must come in its order. */
static void *consumer_body(void *arg)
{
    pc_ctx *c = arg;
    long last[PRODUCERS];
    for (int p = 0; p < PRODUCERS; p++)
        last[p] = -1;
    for (;;) {
        void *item;
        if (llll_fifo_get(c->q, &item, -1) != 0 || !item)
            break;
        uintptr_t v = U(item) - 1;
        atomic_fetch_add(&c->seen[v], 1);
        long p = (long)(v / PER_PRODUCER), s = (long)(v % PER_PRODUCER);
        if (s <= last[p])
            c->order_errors++;
        last[p] = s;
    }
    return NULL;
}

START_TEST(fifo_carries_100000_items_through_4_producers_and_4_consumers_without_loss_or_duplicates)
{
    llll_fifo *q;
    ck_assert_int_eq(llll_fifo_new(&q, 16), 0);
    atomic_uchar *seen = calloc(PRODUCERS * PER_PRODUCER, sizeof *seen);
    ck_assert_ptr_nonnull(seen);
    pc_ctx pc[PRODUCERS], cc[CONSUMERS];
    pthread_t pt[PRODUCERS], ct[CONSUMERS];
    for (int k = 0; k < CONSUMERS; k++) {
        cc[k] = (pc_ctx){q, k, seen, 0};
        ck_assert_int_eq(pthread_create(&ct[k], NULL, consumer_body, &cc[k]), 0);
    }
    for (int k = 0; k < PRODUCERS; k++) {
        pc[k] = (pc_ctx){q, k, seen, 0};
        ck_assert_int_eq(pthread_create(&pt[k], NULL, producer_body, &pc[k]), 0);
    }
    for (int k = 0; k < PRODUCERS; k++)
        pthread_join(pt[k], NULL);
    for (int k = 0; k < CONSUMERS; k++)
        ck_assert_int_eq(llll_fifo_put(q, NULL, -1), 0);
    for (int k = 0; k < CONSUMERS; k++) {
        pthread_join(ct[k], NULL);
        ck_assert_int_eq(cc[k].order_errors, 0);
    }
    size_t bad = PRODUCERS * PER_PRODUCER;
    for (size_t v = 0; v < PRODUCERS * PER_PRODUCER && bad == PRODUCERS * PER_PRODUCER; v++)
        if (atomic_load(&seen[v]) != 1)
            bad = v;
    ck_assert_msg(bad == PRODUCERS * PER_PRODUCER, "item %zu seen %u times", bad,
                  bad < PRODUCERS * PER_PRODUCER ? (unsigned)atomic_load(&seen[bad]) : 0);
    void *item;
    ck_assert_int_ne(llll_fifo_get(q, &item, 0), 0);
    free(seen);
    llll_fifo_free(q);
}
END_TEST

static Suite *fifo_suite(void)
{
    Suite *s = suite_create("fifo");
    TCase *tc = tcase_create("fifo");
    tcase_add_test(tc, fifo_new_rejects_capacity_zero);
    tcase_add_test(tc, fifo_returns_items_in_the_order_they_were_put_across_the_ring_end);
    tcase_add_test(tc, fifo_put_on_a_full_queue_with_timeout_0_fails_and_changes_nothing);
    tcase_add_test(tc, fifo_put_on_a_full_queue_times_out_after_timeout_ms);
    tcase_add_test(tc, fifo_get_on_an_empty_queue_times_out_after_timeout_ms);
    tcase_add_test(tc, fifo_get_with_a_finite_timeout_waits_for_a_put);
    tcase_add_test(tc, fifo_put_on_a_full_queue_with_a_finite_timeout_waits_for_a_get);
    tcase_add_test(tc, fifo_carries_100000_items_through_4_producers_and_4_consumers_without_loss_or_duplicates);
    suite_add_tcase(s, tc);
    return s;
}
T_SUITE(fifo_suite)

/* --------------------------------------------------------------- generator */

/* Hands out 1..limit once each, then NULL; counts the calls of fn. When block
 * is set, a call waits until release is set. */
typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uintptr_t next, limit;
    unsigned calls;
    bool block, release;
} count_ctx;

#define COUNT_CTX(limit) {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 1, (limit), 0, false, false}

static void *count_fn(void *ctx)
{
    count_ctx *c = ctx;
    pthread_mutex_lock(&c->mu);
    c->calls++;
    pthread_cond_broadcast(&c->cv);
    while (c->block && !c->release)
        pthread_cond_wait(&c->cv, &c->mu);
    void *item = c->next <= c->limit ? P(c->next++) : NULL;
    pthread_mutex_unlock(&c->mu);
    return item;
}

static void gen_delivers_all(int nthread, size_t capacity)
{
    enum { N = 20000 };
    count_ctx c = COUNT_CTX(N);
    llll_gen *g;
    ck_assert_int_eq(llll_gen_new(&g, count_fn, &c, nthread, capacity), 0);
    unsigned char *seen = calloc(N + 1, 1);
    ck_assert_ptr_nonnull(seen);
    void *item;
    int rc;
    size_t got = 0, bad = 0;
    while ((rc = llll_gen_get(g, &item, -1)) == 0) {
        if (U(item) < 1 || U(item) > N || seen[U(item)]) {
            bad = U(item);
            break;
        }
        seen[U(item)] = 1;
        got++;
    }
    ck_assert_msg(bad == 0, "item %zu out of range or seen twice", bad);
    ck_assert_int_eq(rc, LLLL_EOF);
    ck_assert_uint_eq(got, N);
    ck_assert_int_eq(llll_gen_get(g, &item, 0), LLLL_EOF);
    free(seen);
    llll_gen_free(g);
}

START_TEST(gen_delivers_every_item_exactly_once_then_eof)
{
    gen_delivers_all(3, 8);
}
END_TEST

START_TEST(gen_of_one_thread_and_capacity_one_delivers_every_item_then_eof)
{
    gen_delivers_all(1, 1);
}
END_TEST

START_TEST(gen_of_zero_threads_uses_the_processors_and_delivers_every_item)
{
    gen_delivers_all(0, 64);
}
END_TEST

START_TEST(gen_get_times_out_while_no_item_is_ready)
{
    count_ctx c = COUNT_CTX(10);
    c.block = true;
    llll_gen *g;
    ck_assert_int_eq(llll_gen_new(&g, count_fn, &c, 2, 4), 0);
    void *item = P(99);
    ck_assert_int_eq(llll_gen_get(g, &item, 30), -ETIMEDOUT);
    ck_assert_uint_eq(U(item), 99);
    pthread_mutex_lock(&c.mu);
    c.release = true;
    pthread_cond_broadcast(&c.cv);
    pthread_mutex_unlock(&c.mu);
    ck_assert_int_eq(llll_gen_get(g, &item, -1), 0);
    ck_assert_uint_ge(U(item), 1);
    llll_gen_free(g);
}
END_TEST

START_TEST(gen_get_with_a_finite_timeout_waits_for_the_generator)
{
    count_ctx c = COUNT_CTX(10);
    c.block = true;
    llll_gen *g;
    ck_assert_int_eq(llll_gen_new(&g, count_fn, &c, 1, 4), 0);
    waiter w = {.g = g, .item = P(99)};
    pthread_t t;
    start_waiter(&w, gen_get_waiter, &t);
    pthread_mutex_lock(&c.mu);
    c.release = true;
    pthread_cond_broadcast(&c.cv);
    pthread_mutex_unlock(&c.mu);
    ck_assert_int_eq(pthread_join(t, NULL), 0);
    ck_assert_int_eq(w.rc, 0);
    ck_assert_uint_eq(U(w.item), 1);
    sem_destroy(&w.started);
    llll_gen_free(g);
}
END_TEST

START_TEST(gen_free_returns_while_its_threads_are_blocked_on_a_full_queue)
{
    enum { NTHREAD = 3, CAP = 5 };
    count_ctx c = COUNT_CTX(UINTPTR_MAX - 1);   /* never runs out */
    llll_gen *g;
    ck_assert_int_eq(llll_gen_new(&g, count_fn, &c, NTHREAD, CAP), 0);
    /* CAP items fill the queue and each thread holds one more: then every
     * thread is in (or entering) a put that cannot complete. */
    pthread_mutex_lock(&c.mu);
    while (c.calls < CAP + NTHREAD)
        pthread_cond_wait(&c.cv, &c.mu);
    pthread_mutex_unlock(&c.mu);
    llll_gen_free(g);
    /* A producer woken by free quit: it did not call fn again. */
    ck_assert_uint_eq(c.calls, CAP + NTHREAD);
}
END_TEST

START_TEST(gen_free_of_an_untouched_generator_returns)
{
    count_ctx c = COUNT_CTX(UINTPTR_MAX - 1);
    llll_gen *g;
    ck_assert_int_eq(llll_gen_new(&g, count_fn, &c, 2, 1), 0);
    llll_gen_free(g);
    llll_gen_free(NULL);
}
END_TEST

START_TEST(gen_new_rejects_capacity_zero_and_a_missing_fn)
{
    count_ctx c = COUNT_CTX(1);
    llll_gen *g = (llll_gen *)&g;
    ck_assert_int_eq(llll_gen_new(&g, count_fn, &c, 1, 0), -EINVAL);
    ck_assert_ptr_null(g);
    ck_assert_int_eq(llll_gen_new(&g, NULL, &c, 1, 4), -EINVAL);
    ck_assert_int_eq(llll_gen_new(&g, count_fn, &c, -1, 4), -EINVAL);
    ck_assert_uint_eq(c.calls, 0);
}
END_TEST

START_TEST(mapper_fifo_and_gen_constructors_reject_a_null_out)
{
    ck_assert_int_eq(llll_mapper_new(NULL, 1), -EINVAL);
    ck_assert_int_eq(llll_fifo_new(NULL, 4), -EINVAL);
    count_ctx c = COUNT_CTX(1);
    ck_assert_int_eq(llll_gen_new(NULL, count_fn, &c, 1, 4), -EINVAL);
    ck_assert_uint_eq(c.calls, 0);
}
END_TEST

static void *one_fn(void *ctx)
{
    (void)ctx;
    return (void *)1;
}

/* A generator's threads, which run fn, block every signal. */
START_TEST(a_generators_threads_block_every_signal)
{
    T_SKIP_UNLESS(!t_under_valgrind(), "valgrind holds its threads' signals itself: /proc shows its masks");
    pid_t before[256];
    int nb = t_task_ids(before, 256);
    llll_gen *g;
    ck_assert_int_eq(llll_gen_new(&g, one_fn, NULL, 2, 4), 0);
    void *item = NULL;
    ck_assert_int_eq(llll_gen_get(g, &item, -1), 0);
    ck_assert_ptr_eq(item, (void *)1);
    ck_assert_int_eq(t_new_threads_block_every_signal(before, nb), 2);
    llll_gen_free(g);
}
END_TEST

static Suite *gen_suite(void)
{
    Suite *s = suite_create("gen");
    TCase *tc = tcase_create("gen");
    tcase_add_test(tc, a_generators_threads_block_every_signal);
    tcase_add_test(tc, gen_delivers_every_item_exactly_once_then_eof);
    tcase_add_test(tc, gen_of_one_thread_and_capacity_one_delivers_every_item_then_eof);
    tcase_add_test(tc, gen_of_zero_threads_uses_the_processors_and_delivers_every_item);
    tcase_add_test(tc, gen_get_times_out_while_no_item_is_ready);
    tcase_add_test(tc, gen_get_with_a_finite_timeout_waits_for_the_generator);
    tcase_add_test(tc, gen_free_returns_while_its_threads_are_blocked_on_a_full_queue);
    tcase_add_test(tc, gen_free_of_an_untouched_generator_returns);
    tcase_add_test(tc, gen_new_rejects_capacity_zero_and_a_missing_fn);
    tcase_add_test(tc, mapper_fifo_and_gen_constructors_reject_a_null_out);
    suite_add_tcase(s, tc);
    return s;
}
T_SUITE(gen_suite)
