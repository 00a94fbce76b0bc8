/* Maps (llll_pool_map) over pools whose workers run through srun on a live
 * one-node cluster (SLURM_CONF set by t/slurm/cluster.sh), mixed with a
 * local worker. */
#define _GNU_SOURCE
#include "pool_srun.h"

/* A map of "sq i" over n items, checked item by item, in order. */
struct sq_map {
    size_t next;
    size_t bad;
};

static int sq_arg(void *ctx, size_t i, llll_buf *arg)
{
    (void)ctx;
    char s[32];
    int n = snprintf(s, sizeof s, "sq %zu", i);
    return llll_buf_set(arg, s, (size_t)n);
}

static int sq_result(void *ctx, size_t i, int rc, const void *result, size_t len)
{
    struct sq_map *m = ctx;
    char s[32], want[32];
    size_t n = len < sizeof s - 1 ? len : sizeof s - 1;
    if (n)
        memcpy(s, result, n);
    s[n] = '\0';
    snprintf(want, sizeof want, "%zu", i * i);
    if (i != m->next++ || rc != 0 || strcmp(s, want) != 0)
        m->bad++;
    return 0;
}

static void map_squares(llll_pool *p, size_t n)
{
    struct sq_map m = { 0, 0 };
    int rc = llll_pool_map(p, n, sq_arg, sq_result, &m, NULL);
    ck_assert_msg(rc == 0, "map: %s", llll_strerror(rc));
    ck_assert_uint_eq(m.next, n);
    ck_assert_uint_eq(m.bad, 0);
}

/* A map of 64 KiB frames, each echoed: frames srun carries in many pieces
 * (each of which may wait for a delayed TCP ACK between srun and the node:
 * keep the maps through srun short). */
#define BIG (64 * 1024)
static int big_arg(void *ctx, size_t i, llll_buf *arg)
{
    (void)ctx;
    int rc = llll_buf_reserve(arg, BIG);
    if (rc)
        return rc;
    for (size_t k = 0; k < BIG; k++)
        ((unsigned char *)arg->data)[k] = (unsigned char)(k * 31 + i);
    ((unsigned char *)arg->data)[0] = 'X';   /* not a command of the worker */
    arg->len = BIG;
    return 0;
}

static int big_result(void *ctx, size_t i, int rc, const void *result, size_t len)
{
    struct sq_map *m = ctx;
    const unsigned char *r = result;
    bool ok = i == m->next++ && rc == 0 && len == BIG && r[0] == 'X';
    for (size_t k = 1; ok && k < BIG; k++)
        ok = r[k] == (unsigned char)(k * 31 + i);
    m->bad += !ok;
    return 0;
}

static void map_big(llll_pool *p, size_t n)
{
    struct sq_map m = { 0, 0 };
    int rc = llll_pool_map(p, n, big_arg, big_result, &m, NULL);
    ck_assert_msg(rc == 0, "map: %s", llll_strerror(rc));
    ck_assert_uint_eq(m.next, n);
    ck_assert_uint_eq(m.bad, 0);
}

/* --------------------------------------------------------------- tests */

START_TEST(a_map_over_srun_workers_returns_every_result_in_order)
{
    llll_pool *p = start_mixed(NULL);
    map_squares(p, 2000);
    map_big(p, 24);
    llll_pool_free(p);
    t_assert_no_child();
}
END_TEST

START_TEST(a_map_over_srun_workers_printing_to_stdout_returns_every_result_right)
{
    llll_pool *p = start_mixed("--noisy");
    map_squares(p, 60);
    map_big(p, 8);
    llll_pool_free(p);
    ck_assert(errlog_has("noise from worker"));
    t_assert_no_child();
}
END_TEST

static Suite *pool_srun_map_suite(void)
{
    Suite *s = suite_create("pool_srun_map");
    TCase *tc = tcase_create("map");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, a_map_over_srun_workers_returns_every_result_in_order);
    tcase_add_test(tc, a_map_over_srun_workers_printing_to_stdout_returns_every_result_right);
    suite_add_tcase(s, tc);
    return s;
}
T_SUITE(pool_srun_map_suite)
