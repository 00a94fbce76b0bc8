/* Pools whose workers run through srun on a live one-node cluster (SLURM_CONF
 * set by t/slurm/cluster.sh), mixed with a local worker. Each pool has one
 * worker per launcher, told apart by their Slurm job names. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "llll.h"
#include "t.h"

#define NW 3   /* llll-w1 and llll-w2 through srun, one local */

static const char *const srun_w1[] = { "srun", "-N1", "-n1", "--unbuffered", "-J", "llll-w1", NULL };
static const char *const srun_w2[] = { "srun", "-N1", "-n1", "--unbuffered", "-J", "llll-w2", NULL };
static const char *const srun_nowhere[] = { "srun", "-N1", "-n1", "--unbuffered",
                                            "--partition=llll-no-such-partition", NULL };

/* ------------------------------------------------------------- helpers */

/* Every stderr line of the workers and their launchers, kept for checks. */
static struct {
    pthread_mutex_t mu;
    char text[1 << 16];
    size_t len;
} errlog = { .mu = PTHREAD_MUTEX_INITIALIZER };

static void on_stderr(void *ud, const char *line, size_t len)
{
    (void)ud;
    pthread_mutex_lock(&errlog.mu);
    size_t room = sizeof errlog.text - 1 - errlog.len;
    size_t n = len < room ? len : room;
    memcpy(errlog.text + errlog.len, line, n);
    errlog.len += n;
    errlog.text[errlog.len] = '\0';
    pthread_mutex_unlock(&errlog.mu);
    if (!strstr(line, "noise from worker"))
        fwrite(line, 1, len, stderr);   /* still shown, for a failing run */
}

static bool errlog_has(const char *s)
{
    pthread_mutex_lock(&errlog.mu);
    bool has = strstr(errlog.text, s) != NULL;
    pthread_mutex_unlock(&errlog.mu);
    return has;
}

static int start(llll_pool **p, const llll_host *hosts, size_t nhosts, const char *mode)
{
    static char worker[PATH_MAX];
    ck_assert_ptr_nonnull(realpath(t_helper("worker"), worker));
    const char *argv[] = { worker, mode, NULL };
    llll_pool_opts o = { 0 };
    o.hosts = hosts;
    o.nhosts = nhosts;
    o.instance.proc.on_stderr = on_stderr;
    return llll_pool_start(p, argv, 0, &o);
}

static llll_pool *start_mixed(const char *mode)
{
    static const llll_host hosts[] = { { srun_w1, 1 }, { srun_w2, 1 }, { NULL, 1 } };
    llll_pool *p;
    int rc = start(&p, hosts, 3, mode);
    ck_assert_msg(rc == 0, "start: %s", llll_strerror(rc));
    ck_assert_int_eq(llll_pool_size(p), NW);
    return p;
}

/* The test process (a fork of the runner) has no child left: every srun was
 * reaped. */
static void assert_no_child(void)
{
    errno = 0;
    ck_assert_int_eq(waitpid(-1, NULL, WNOHANG), -1);
    ck_assert_int_eq(errno, ECHILD);
}

/* The pid of our child process whose argv holds the word arg, or -1. */
static pid_t child_with_arg(const char *arg)
{
    DIR *d = opendir("/proc");
    ck_assert_ptr_nonnull(d);
    pid_t found = -1;
    struct dirent *e;
    while ((e = readdir(d)) && found < 0) {
        char path[300], buf[4096];
        long pid = strtol(e->d_name, NULL, 10);
        if (pid <= 0)
            continue;
        snprintf(path, sizeof path, "/proc/%ld/stat", pid);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[n] = '\0';
        const char *rp = strrchr(buf, ')');
        long ppid;
        if (!rp || sscanf(rp + 2, "%*c %ld", &ppid) != 1 || ppid != (long)getpid())
            continue;
        snprintf(path, sizeof path, "/proc/%ld/cmdline", pid);
        if (!(f = fopen(path, "r")))
            continue;
        n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        for (size_t i = 0; i < n; i += strlen(buf + i) + 1)
            if (strcmp(buf + i, arg) == 0)
                found = (pid_t)pid;
    }
    closedir(d);
    return found;
}

/* Holding every worker at once: NW threads each make a "hold" call; each
 * worker reports "PID NAME" on the FIFO out when it holds one, and all are
 * let go together through the FIFO in, so the NW reports come from NW
 * workers serving at the same time. */
struct holder {
    pthread_t t;
    llll_pool *p;
    char cmd[2 * PATH_MAX + 16];
    int rc;
    char answer[128];
};

struct hold {
    char dir[64], out[128], in[128];
    int fo;
    struct holder h[NW];
    char who[NW][128];   /* as reported on out */
};

static void *holder_main(void *arg)
{
    struct holder *h = arg;
    llll_buf res = LLLL_BUF_INIT;
    h->rc = llll_pool_call(h->p, h->cmd, strlen(h->cmd), &res);
    size_t n = res.len < sizeof h->answer - 1 ? res.len : sizeof h->answer - 1;
    memcpy(h->answer, res.data, n);
    h->answer[n] = '\0';
    llll_buf_free(&res);
    return NULL;
}

/* Starts the NW calls and returns once every worker holds one. */
static void hold_all(struct hold *w, llll_pool *p)
{
    strcpy(w->dir, "/tmp/llll-hold.XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(w->dir));
    snprintf(w->out, sizeof w->out, "%s/out", w->dir);
    snprintf(w->in, sizeof w->in, "%s/in", w->dir);
    ck_assert_int_eq(mkfifo(w->out, 0600), 0);
    ck_assert_int_eq(mkfifo(w->in, 0600), 0);
    w->fo = open(w->out, O_RDWR | O_CLOEXEC);   /* read side; RDWR: no wait for a writer */
    ck_assert_int_ge(w->fo, 0);
    for (int k = 0; k < NW; k++) {
        w->h[k].p = p;
        snprintf(w->h[k].cmd, sizeof w->h[k].cmd, "hold %s %s", w->out, w->in);
        ck_assert_int_eq(pthread_create(&w->h[k].t, NULL, holder_main, &w->h[k]), 0);
    }
    char buf[NW * 128];
    size_t got = 0;
    int lines = 0;
    while (lines < NW) {
        ssize_t r = read(w->fo, buf + got, sizeof buf - 1 - got);
        ck_assert_int_gt(r, 0);
        for (ssize_t i = 0; i < r; i++)
            lines += buf[got + (size_t)i] == '\n';
        got += (size_t)r;
    }
    buf[got] = '\0';
    char *save, *line = strtok_r(buf, "\n", &save);
    for (int k = 0; k < NW; k++, line = strtok_r(NULL, "\n", &save)) {
        ck_assert_ptr_nonnull(line);
        snprintf(w->who[k], sizeof w->who[k], "%s", line);
    }
}

/* The reported "PID NAME" of the worker named name, or NULL. */
static const char *held_by(const struct hold *w, const char *name)
{
    for (int k = 0; k < NW; k++) {
        const char *sp = strchr(w->who[k], ' ');
        if (sp && strcmp(sp + 1, name) == 0)
            return w->who[k];
    }
    return NULL;
}

/* Lets every held call answer and joins the threads. */
static void release_all(struct hold *w)
{
    int fi = open(w->in, O_WRONLY | O_CLOEXEC);
    ck_assert_int_ge(fi, 0);
    ck_assert_int_eq(write(fi, "go", 2), 2);
    close(fi);
    for (int k = 0; k < NW; k++)
        ck_assert_int_eq(pthread_join(w->h[k].t, NULL), 0);
    close(w->fo);
    unlink(w->out);
    unlink(w->in);
    rmdir(w->dir);
}

static long call_num(llll_pool *p, const char *cmd)
{
    llll_buf res = LLLL_BUF_INIT;
    int rc = llll_pool_call(p, cmd, strlen(cmd), &res);
    ck_assert_msg(rc == 0, "%s: %s", cmd, llll_strerror(rc));
    char s[64];
    size_t n = res.len < sizeof s - 1 ? res.len : sizeof s - 1;
    memcpy(s, res.data, n);
    s[n] = '\0';
    llll_buf_free(&res);
    return strtol(s, NULL, 10);
}

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

/* --------------------------------------------------------------- tests */

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
    for (long i = 0; i < 300; i++) {
        char cmd[32];
        snprintf(cmd, sizeof cmd, "sq %ld", i);
        ck_assert_int_eq(call_num(p, cmd), i * i);
    }
    llll_pool_free(p);
    assert_no_child();
}
END_TEST

START_TEST(a_map_over_srun_workers_returns_every_result_in_order)
{
    llll_pool *p = start_mixed(NULL);
    map_squares(p, 2000);
    struct sq_map m = { 0, 0 };
    int rc = llll_pool_map(p, 24, big_arg, big_result, &m, NULL);
    ck_assert_msg(rc == 0, "map: %s", llll_strerror(rc));
    ck_assert_uint_eq(m.next, 24);
    ck_assert_uint_eq(m.bad, 0);
    llll_pool_free(p);
    assert_no_child();
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
    ck_assert_int_eq(call_num(p, "sq 12"), 144);
    map_squares(p, 60);
    llll_pool_free(p);
    /* the stray lines went to stderr, not into the channel */
    ck_assert(errlog_has("noise from worker"));
    assert_no_child();
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
    for (long i = 0; i < 100; i++) {
        char cmd[32];
        snprintf(cmd, sizeof cmd, "sq %ld", i);
        ck_assert_int_eq(call_num(p, cmd), i * i);
    }
    map_squares(p, 300);
    llll_pool_get_stats(p, &st);
    ck_assert_uint_ge(st.respawns, 1);
    llll_pool_free(p);
    assert_no_child();
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
    assert_no_child();
}
END_TEST

static Suite *pool_srun_suite(void)
{
    Suite *s = suite_create("pool_srun");
    TCase *tc = tcase_create("srun");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, calls_are_served_by_srun_workers_and_a_local_one_together);
    tcase_add_test(tc, a_map_over_srun_workers_returns_every_result_in_order);
    tcase_add_test(tc, a_worker_printing_to_stdout_through_srun_still_answers_right);
    tcase_add_test(tc, killing_the_srun_of_a_busy_worker_fails_its_call_as_a_crash_and_relaunches_it);
    tcase_add_test(tc, killing_the_master_ends_its_srun_workers_and_their_sruns);
    tcase_add_test(tc, an_srun_to_a_missing_partition_fails_start_and_says_why);
    suite_add_tcase(s, tc);
    return s;
}
T_SUITE(pool_srun_suite)
