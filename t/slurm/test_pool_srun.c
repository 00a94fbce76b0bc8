/* Pools whose workers run through srun on a live one-node cluster (SLURM_CONF
 * set by t/slurm/cluster.sh), mixed with a local worker: calls. */
#define _GNU_SOURCE
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>

#include "pool_srun.h"

static const char *const srun_nowhere[] = { "srun", "-N1", "-n1", "--unbuffered",
                                            "--partition=llll-no-such-partition", NULL };

START_TEST(calls_are_served_by_srun_workers_and_a_local_one_together)
{
    llll_pool *p = start_mixed(NULL);
    struct hold w;
    hold_all(&w, p);
    ck_assert_ptr_nonnull(held_by(&w, "llll-w1"));
    ck_assert_ptr_nonnull(held_by(&w, "llll-w2"));
    ck_assert_ptr_nonnull(held_by(&w, "local"));
    release_all(&w);
    for (int k = 0; k < NW; k++) {
        ck_assert_msg(w.h[k].rc == 0, "hold: %s", llll_strerror(w.h[k].rc));
        ck_assert_ptr_nonnull(held_by(&w, strchr(w.h[k].answer, ' ') + 1));
    }
    square_calls(p, 300);
    llll_pool_free(p);
    t_assert_no_child();
}
END_TEST

START_TEST(a_worker_printing_to_stdout_through_srun_still_answers_right)
{
    llll_pool *p = start_mixed("--noisy");
    struct hold w;
    hold_all(&w, p);   /* every worker, srun ones included, answers while noisy */
    release_all(&w);
    for (int k = 0; k < NW; k++)
        ck_assert_msg(w.h[k].rc == 0, "hold: %s", llll_strerror(w.h[k].rc));
    square_calls(p, 60);
    llll_pool_free(p);
    /* the stray lines went to stderr, not into the channel */
    ck_assert(errlog_has("noise from worker"));
    t_assert_no_child();
}
END_TEST

START_TEST(killing_the_srun_of_a_busy_worker_fails_its_call_as_a_crash_and_relaunches_it)
{
    llll_pool *p = start_mixed(NULL);
    struct hold w;
    hold_all(&w, p);
    char before[128];
    ck_assert_ptr_nonnull(held_by(&w, "llll-w1"));
    snprintf(before, sizeof before, "%s", held_by(&w, "llll-w1"));
    pid_t srun = child_with_arg("llll-w1");
    ck_assert_int_gt(srun, 0);
    ck_assert_int_eq(kill(srun, SIGKILL), 0);   /* its pid only: never its group */
    release_all(&w);
    int crashed = 0;
    for (int k = 0; k < NW; k++) {
        if (w.h[k].rc == -ECONNRESET) {
            crashed++;
            continue;
        }
        ck_assert_msg(w.h[k].rc == 0, "hold: %s", llll_strerror(w.h[k].rc));
        ck_assert_str_ne(w.h[k].answer, before);
    }
    ck_assert_int_eq(crashed, 1);
    llll_pool_stats st;
    llll_pool_get_stats(p, &st);
    ck_assert_uint_eq(st.crashes, 1);

    /* All NW held again: llll-w1 is back, a new task through a new srun. */
    hold_all(&w, p);
    const char *after = held_by(&w, "llll-w1");
    ck_assert_ptr_nonnull(after);
    ck_assert_str_ne(after, before);
    pid_t srun2 = child_with_arg("llll-w1");
    ck_assert_int_gt(srun2, 0);
    ck_assert_int_ne(srun2, srun);
    release_all(&w);
    for (int k = 0; k < NW; k++)
        ck_assert_msg(w.h[k].rc == 0, "hold: %s", llll_strerror(w.h[k].rc));
    square_calls(p, 100);
    llll_pool_get_stats(p, &st);
    ck_assert_uint_ge(st.respawns, 1);
    llll_pool_free(p);
    t_assert_no_child();
}
END_TEST

START_TEST(killing_the_master_ends_its_srun_workers_and_their_sruns)
{
    /* A child process holds the pool and tells its workers' pids and its
     * sruns' pids; it is then killed with SIGKILL, as a crashed master. */
    int pfd[2];
    ck_assert_int_eq(pipe2(pfd, O_CLOEXEC), 0);
    pid_t master = fork();
    ck_assert_int_ge(master, 0);
    if (master == 0) {
        close(pfd[0]);
        llll_pool *p = start_mixed(NULL);
        struct hold w;
        hold_all(&w, p);
        release_all(&w);
        long pids[NW + 2];
        for (int k = 0; k < NW; k++)
            pids[k] = strtol(w.who[k], NULL, 10);
        pids[NW] = child_with_arg("llll-w1");
        pids[NW + 1] = child_with_arg("llll-w2");
        if (write(pfd[1], pids, sizeof pids) != (ssize_t)sizeof pids)
            _exit(1);
        for (;;)
            pause();
    }
    close(pfd[1]);
    long pids[NW + 2];
    ck_assert_int_eq(read(pfd[0], pids, sizeof pids), (ssize_t)sizeof pids);
    close(pfd[0]);
    struct pollfd pf[NW + 2];
    for (int k = 0; k < NW + 2; k++) {
        ck_assert_int_gt(pids[k], 0);
        pf[k].fd = (int)syscall(SYS_pidfd_open, (pid_t)pids[k], 0);
        ck_assert_msg(pf[k].fd >= 0, "pidfd_open %ld: %s", pids[k], strerror(errno));
        pf[k].events = POLLIN;
    }
    ck_assert_int_eq(kill(master, SIGKILL), 0);
    ck_assert_int_eq(waitpid(master, NULL, 0), master);
    /* Each worker reads EOF through its srun (or its socket) and ends; each
     * srun then ends with its task. */
    for (int k = 0; k < NW + 2; k++) {
        while (poll(&pf[k], 1, -1) < 0)
            ck_assert_int_eq(errno, EINTR);
        close(pf[k].fd);
    }
}
END_TEST

START_TEST(an_srun_to_a_missing_partition_fails_start_and_says_why)
{
    static const llll_host hosts[] = { { srun_nowhere, 1 }, { NULL, 1 } };
    llll_pool *p = (llll_pool *)&p;
    int rc = start(&p, hosts, 2, NULL);
    ck_assert_msg(rc == -ECONNRESET, "start: %s", llll_strerror(rc));   /* srun exited */
    ck_assert_ptr_null(p);
    ck_assert_msg(errlog_has("Invalid partition"), "stderr: %s", errlog.text);
    t_assert_no_child();
}
END_TEST

static Suite *pool_srun_suite(void)
{
    Suite *s = suite_create("pool_srun");
    TCase *tc = tcase_create("calls");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, calls_are_served_by_srun_workers_and_a_local_one_together);
    tcase_add_test(tc, a_worker_printing_to_stdout_through_srun_still_answers_right);
    tcase_add_test(tc, killing_the_srun_of_a_busy_worker_fails_its_call_as_a_crash_and_relaunches_it);
    tcase_add_test(tc, killing_the_master_ends_its_srun_workers_and_their_sruns);
    tcase_add_test(tc, an_srun_to_a_missing_partition_fails_start_and_says_why);
    suite_add_tcase(s, tc);
    return s;
}
T_SUITE(pool_srun_suite)
