/* Pools: llll_pool_* and llll_serve. Most pools run t/helper_pool_worker.c;
 * forked pools run the functions below. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <semaphore.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "llll.h"
#include "t.h"

/* ------------------------------------------------------------- helpers */

static const char *worker_argv[] = { NULL, NULL, NULL, NULL };

static const char *const *worker(void)
{
    worker_argv[0] = t_helper("pool_worker");
    return worker_argv;
}

/* Calls with a text command; returns the result as a string in *out. */
static int call_str(llll_pool *p, const char *cmd, llll_buf *res, char *out, size_t outsz)
{
    int rc = llll_pool_call(p, cmd, strlen(cmd), res);
    size_t n = res->len < outsz - 1 ? res->len : outsz - 1;
    if (n)
        memcpy(out, res->data, n);
    out[n] = '\0';
    return rc;
}

static long call_num(llll_pool *p, const char *cmd)
{
    llll_buf res = LLLL_BUF_INIT;
    char out[64];
    int rc = call_str(p, cmd, &res, out, sizeof out);
    llll_buf_free(&res);
    ck_assert_msg(rc == 0, "%s: %s", cmd, llll_strerror(rc));
    return strtol(out, NULL, 10);
}

/* Occupies every worker of p at once with a "hold" call and returns their
 * pids in pids[0..n): n threads call, each worker reports on a pipe when it
 * holds a call, and they are let go only once n arrived, so the n pids
 * belong to n distinct workers answering together. */
struct hold_arg {
    llll_pool *p;
    char cmd[64];
    int rc;
    long pid;
    bool warm;   /* make one quick call first, so that the thread has a worker it used last */
};

static void *hold_thread(void *a)
{
    struct hold_arg *h = a;
    llll_buf res = LLLL_BUF_INIT;
    char out[64];
    if (h->warm && (h->rc = call_str(h->p, "sq 2", &res, out, sizeof out)) != 0) {
        llll_buf_free(&res);
        return NULL;
    }
    h->rc = call_str(h->p, h->cmd, &res, out, sizeof out);
    h->pid = strtol(out, NULL, 10);
    llll_buf_free(&res);
    return NULL;
}

/* Pipes inherited by exec'd workers (no O_CLOEXEC on purpose). */
static int arrive[2], release[2];

static void make_hold_pipes(void)
{
    ck_assert_int_eq(pipe(arrive), 0);
    ck_assert_int_eq(pipe(release), 0);
}

static void close_hold_pipes(void)
{
    close(arrive[0]);
    close(arrive[1]);
    close(release[0]);
    close(release[1]);
}

/* Starts n hold calls and waits until n workers hold them. */
static void hold_start(llll_pool *p, int n, struct hold_arg *h, pthread_t *th, int *arrived_pids)
{
    for (int i = 0; i < n; i++) {
        h[i].p = p;
        snprintf(h[i].cmd, sizeof h[i].cmd, "hold %d %d", arrive[1], release[0]);
        ck_assert_int_eq(pthread_create(&th[i], NULL, hold_thread, &h[i]), 0);
    }
    for (int i = 0; i < n; i++)
        ck_assert_int_eq(read(arrive[0], &arrived_pids[i], sizeof(int)), (ssize_t)sizeof(int));
}

static void assert_all_workers_answer(llll_pool *p, int n)
{
    struct hold_arg h[16] = { 0 };
    pthread_t th[16];
    int arrived[16];
    ck_assert_int_le(n, 16);
    hold_start(p, n, h, th, arrived);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < i; j++)
            ck_assert_int_ne(arrived[i], arrived[j]);
    char go[16] = { 0 };
    size_t len = n > 0 && n <= 16 ? (size_t)n : 0;
    ck_assert_int_eq(write(release[1], go, len), n);
    for (int i = 0; i < n; i++) {
        pthread_join(th[i], NULL);
        ck_assert_int_eq(h[i].rc, 0);
        int found = 0;
        for (int j = 0; j < n; j++)
            found += h[i].pid == arrived[j];
        ck_assert_int_eq(found, 1);
    }
}

static llll_pool *start_worker_pool(int n, const llll_pool_opts *o)
{
    llll_pool *p;
    int rc = llll_pool_start(&p, worker(), n, o);
    ck_assert_msg(rc == 0, "start: %s", llll_strerror(rc));
    ck_assert_int_eq(llll_pool_size(p), n);
    return p;
}

/* ----------------------------------------------------- forked functions */

static long fib(long n) { return n < 2 ? n : fib(n - 1) + fib(n - 2); }

static int put_text(llll_buf *r, const char *s)
{
    return llll_buf_set(r, s, strlen(s));
}

/* arg: a long in binary; result: fib(arg) as a long. ctx: an offset added. */
static int fib_fn(void *ctx, const void *arg, size_t len, llll_buf *res)
{
    long n;
    if (len != sizeof n)
        return put_text(res, "want a long"), 1;
    memcpy(&n, arg, sizeof n);
    long v = fib(n) + *(const long *)ctx;
    return llll_buf_set(res, &v, sizeof v) ? 1 : 0;
}

/* Fails on odd numbers with a message naming them. */
static int picky_fn(void *ctx, const void *arg, size_t len, llll_buf *res)
{
    (void)ctx;
    char msg[64];
    snprintf(msg, sizeof msg, "%.*s is odd", (int)len, (const char *)arg);
    if (len > 0 && (((const char *)arg)[len - 1] - '0') % 2)
        return put_text(res, msg), 1;
    return put_text(res, "even");
}

/* -------------------------------------------------------------- results */

struct many_arg {
    llll_pool *p;
    int base, n;
    int wrong, errors;
};

static void *many_thread(void *a)
{
    struct many_arg *m = a;
    llll_buf res = LLLL_BUF_INIT;
    for (int k = 0; k < m->n; k++) {
        long x = m->base + k;
        char cmd[32], out[64], want[32];
        snprintf(cmd, sizeof cmd, "sq %ld", x);
        snprintf(want, sizeof want, "%ld", x * x);
        int rc = call_str(m->p, cmd, &res, out, sizeof out);
        if (rc)
            m->errors++;
        else if (strcmp(out, want) != 0)
            m->wrong++;
    }
    llll_buf_free(&res);
    return NULL;
}

START_TEST(calls_from_eight_threads_each_get_their_own_result)
{
    llll_pool *p = start_worker_pool(3, NULL);
    struct many_arg m[8];
    pthread_t th[8];
    for (int i = 0; i < 8; i++) {
        m[i] = (struct many_arg){ .p = p, .base = 1000 * (i + 1), .n = 300 };
        ck_assert_int_eq(pthread_create(&th[i], NULL, many_thread, &m[i]), 0);
    }
    for (int i = 0; i < 8; i++) {
        pthread_join(th[i], NULL);
        ck_assert_int_eq(m[i].errors, 0);
        ck_assert_int_eq(m[i].wrong, 0);
    }
    llll_pool_stats st;
    llll_pool_get_stats(p, &st);
    ck_assert_uint_eq(st.calls, 8 * 300);
    ck_assert_uint_eq(st.crashes + st.failures + st.timeouts + st.respawns, 0);
    llll_pool_free(p);
    t_assert_no_child();
}
END_TEST

START_TEST(a_fork_pool_computes_fibonacci_in_its_workers)
{
    static long offset = 1000000;   /* ctx reaches the forked workers */
    llll_pool *p;
    ck_assert_int_eq(llll_pool_fork(&p, fib_fn, &offset, 2, NULL), 0);
    ck_assert_int_eq(llll_pool_size(p), 2);
    llll_buf res = LLLL_BUF_INIT;
    for (long n = 0; n <= 25; n++) {
        ck_assert_int_eq(llll_pool_call(p, &n, sizeof n, &res), 0);
        long v;
        ck_assert_uint_eq(res.len, sizeof v);
        memcpy(&v, res.data, sizeof v);
        ck_assert_int_eq(v, fib(n) + offset);
    }
    llll_buf_free(&res);
    llll_pool_free(p);
    t_assert_no_child();
}
END_TEST

/* Thread a's worker is held by its call while thread b makes its first
 * call, so b gets another worker; once a's worker is idle again, b's next
 * call goes back to b's own worker (not to the first idle one, a's), and
 * a's to a's. */
struct last_used {
    llll_pool *p;
    long first, held, again;
    int rc;
    sem_t hold_done, go;
};

static void *call_hold_call(void *arg)
{
    struct last_used *u = arg;
    llll_buf res = LLLL_BUF_INIT;
    char out[64], cmd[64];
    snprintf(cmd, sizeof cmd, "hold %d %d", arrive[1], release[0]);
    if ((u->rc = call_str(u->p, "pid", &res, out, sizeof out)) == 0) {
        u->first = strtol(out, NULL, 10);
        if ((u->rc = call_str(u->p, cmd, &res, out, sizeof out)) == 0)
            u->held = strtol(out, NULL, 10);
    }
    sem_post(&u->hold_done);
    while (sem_wait(&u->go) && errno == EINTR) {
    }
    if (u->rc == 0 && (u->rc = call_str(u->p, "pid", &res, out, sizeof out)) == 0)
        u->again = strtol(out, NULL, 10);
    llll_buf_free(&res);
    return NULL;
}

START_TEST(a_thread_gets_back_the_worker_it_used_last)
{
    make_hold_pipes();
    llll_pool *p = start_worker_pool(3, NULL);
    struct last_used a = { .p = p };
    sem_init(&a.hold_done, 0, 0);
    sem_init(&a.go, 0, 0);
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, call_hold_call, &a), 0);
    int holder;
    ck_assert_int_eq(read(arrive[0], &holder, sizeof holder), (ssize_t)sizeof holder);
    long mine = call_num(p, "pid");   /* a's worker is busy */
    ck_assert_int_ne(mine, holder);
    ck_assert_int_eq(write(release[1], "", 1), 1);
    while (sem_wait(&a.hold_done) && errno == EINTR) {
    }
    ck_assert_int_eq(a.rc, 0);
    ck_assert_int_eq(a.first, holder);
    ck_assert_int_eq(a.held, holder);
    for (int i = 0; i < 20; i++)   /* a's worker is idle now */
        ck_assert_int_eq(call_num(p, "pid"), mine);
    sem_post(&a.go);
    pthread_join(th, NULL);
    ck_assert_int_eq(a.rc, 0);
    ck_assert_int_eq(a.again, holder);
    sem_destroy(&a.hold_done);
    sem_destroy(&a.go);
    llll_pool_free(p);
    close_hold_pipes();
    t_assert_no_child();
}
END_TEST

START_TEST(a_failing_fn_gives_eremoteio_with_its_message)
{
    llll_pool *p;
    ck_assert_int_eq(llll_pool_fork(&p, picky_fn, NULL, 1, NULL), 0);
    llll_buf res = LLLL_BUF_INIT;
    char out[64];
    ck_assert_int_eq(call_str(p, "41", &res, out, sizeof out), -EREMOTEIO);
    ck_assert_str_eq(out, "41 is odd");
    ck_assert_int_eq(call_str(p, "42", &res, out, sizeof out), 0);
    ck_assert_str_eq(out, "even");
    llll_pool_stats st;
    llll_pool_get_stats(p, &st);
    ck_assert_uint_eq(st.calls, 2);
    ck_assert_uint_eq(st.failures, 1);
    ck_assert_uint_eq(st.crashes + st.respawns, 0);
    llll_buf_free(&res);
    llll_pool_free(p);
}
END_TEST

/* ------------------------------------------------------ dying workers */

START_TEST(a_worker_that_crashes_gives_econnreset_and_is_replaced)
{
    make_hold_pipes();
    llll_pool *p = start_worker_pool(2, NULL);
    llll_buf res = LLLL_BUF_INIT;
    char out[64];
    ck_assert_int_eq(call_str(p, "crash", &res, out, sizeof out), -ECONNRESET);
    ck_assert_int_eq(llll_pool_size(p), 2);
    ck_assert_int_eq(call_num(p, "sq 12"), 144);
    llll_pool_stats st;
    llll_pool_get_stats(p, &st);
    ck_assert_uint_eq(st.crashes, 1);
    ck_assert_uint_eq(st.respawns, 1);
    ck_assert_uint_eq(st.calls, 1);
    assert_all_workers_answer(p, 2);
    llll_buf_free(&res);
    llll_pool_free(p);
    close_hold_pipes();
    t_assert_no_child();
}
END_TEST

START_TEST(a_request_a_dead_worker_never_read_goes_to_its_replacement)
{
    llll_pool *p = start_worker_pool(1, NULL);
    llll_buf res = LLLL_BUF_INIT;
    char out[64];
    /* The worker answers, then dies the moment the next request reaches
     * its socket, without reading it: fn never ran on that request. */
    ck_assert_int_eq(call_str(p, "ok, then die unread", &res, out, sizeof out), 0);
    ck_assert_str_eq(out, "ok");
    ck_assert_int_eq(call_str(p, "sq 9", &res, out, sizeof out), 0);
    ck_assert_str_eq(out, "81");
    llll_pool_stats st;
    llll_pool_get_stats(p, &st);
    ck_assert_uint_eq(st.crashes, 0);
    ck_assert_uint_eq(st.respawns, 1);
    ck_assert_uint_eq(st.calls, 2);
    llll_buf_free(&res);
    llll_pool_free(p);
    t_assert_no_child();
}
END_TEST

START_TEST(a_worker_that_died_while_idle_does_not_fail_the_next_call)
{
    llll_pool *p = start_worker_pool(1, NULL);
    long pid = call_num(p, "pid");
    ck_assert_int_eq(kill((pid_t)pid, SIGKILL), 0);
    /* Wait until it is dead (its socket closed) without reaping it: the
     * library's own thread may have reaped it already (ECHILD). */
    siginfo_t si;
    int r;
    while ((r = waitid(P_PID, (id_t)pid, &si, WEXITED | WNOWAIT)) < 0 && errno == EINTR) {
    }
    ck_assert(r == 0 || errno == ECHILD);
    ck_assert_int_eq(call_num(p, "sq 5"), 25);
    ck_assert_int_ne(call_num(p, "pid"), pid);
    llll_pool_stats st;
    llll_pool_get_stats(p, &st);
    ck_assert_uint_eq(st.crashes, 0);
    ck_assert_uint_eq(st.respawns, 1);
    llll_pool_free(p);
    t_assert_no_child();
}
END_TEST

START_TEST(a_hung_worker_times_out_and_is_replaced)
{
    make_hold_pipes();
    llll_pool *p = start_worker_pool(2, &(llll_pool_opts){ .call_timeout_ms = 300 });
    llll_buf res = LLLL_BUF_INIT;
    char out[64];
    ck_assert_int_eq(call_str(p, "hang", &res, out, sizeof out), -ETIMEDOUT);
    ck_assert_int_eq(llll_pool_size(p), 2);
    ck_assert_int_eq(call_num(p, "sq 7"), 49);
    llll_pool_stats st;
    llll_pool_get_stats(p, &st);
    ck_assert_uint_eq(st.timeouts, 1);
    ck_assert_uint_eq(st.respawns, 1);
    ck_assert_uint_eq(st.crashes, 0);
    assert_all_workers_answer(p, 2);
    llll_buf_free(&res);
    llll_pool_free(p);
    close_hold_pipes();
    t_assert_no_child();
}
END_TEST

START_TEST(without_respawn_dead_workers_stay_dead_then_calls_get_echild)
{
    llll_pool *p = start_worker_pool(2, &(llll_pool_opts){ .no_respawn = true });
    llll_buf res = LLLL_BUF_INIT;
    char out[64];
    ck_assert_int_eq(call_str(p, "crash", &res, out, sizeof out), -ECONNRESET);
    ck_assert_int_eq(llll_pool_size(p), 1);
    ck_assert_int_eq(call_num(p, "sq 3"), 9);
    ck_assert_int_eq(call_str(p, "crash", &res, out, sizeof out), -ECONNRESET);
    ck_assert_int_eq(llll_pool_size(p), 0);
    ck_assert_int_eq(call_str(p, "sq 3", &res, out, sizeof out), -ECHILD);
    llll_pool_stats st;
    llll_pool_get_stats(p, &st);
    ck_assert_uint_eq(st.crashes, 2);
    ck_assert_uint_eq(st.respawns, 0);
    llll_buf_free(&res);
    llll_pool_free(p);
    t_assert_no_child();
}
END_TEST

/* Copies the worker program to path (mode 0755). */
static void copy_worker(const char *path)
{
    t_copy_file(t_helper("pool_worker"), path);
}

START_TEST(a_worker_that_cannot_be_replaced_fails_calls_until_it_can)
{
    char dir[] = "/tmp/llll-pool-XXXXXX", prog[64], away[64];
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(prog, sizeof prog, "%s/worker", dir);
    snprintf(away, sizeof away, "%s/away", dir);
    copy_worker(prog);
    const char *argv[] = { prog, NULL };
    llll_pool *p;
    ck_assert_int_eq(llll_pool_start(&p, argv, 1, NULL), 0);
    ck_assert_int_eq(rename(prog, away), 0);   /* replacements cannot start */
    llll_buf res = LLLL_BUF_INIT;
    char out[64];
    ck_assert_int_eq(call_str(p, "crash", &res, out, sizeof out), -ECONNRESET);
    ck_assert_int_eq(llll_pool_size(p), 0);
    ck_assert_int_eq(call_str(p, "sq 2", &res, out, sizeof out), -ENOENT);
    ck_assert_int_eq(rename(away, prog), 0);
    ck_assert_int_eq(call_num(p, "sq 2"), 4);
    ck_assert_int_eq(llll_pool_size(p), 1);
    llll_pool_stats st;
    llll_pool_get_stats(p, &st);
    ck_assert_uint_eq(st.respawns, 1);
    llll_buf_free(&res);
    llll_pool_free(p);
    unlink(prog);
    rmdir(dir);
    t_assert_no_child();
}
END_TEST

/* The kill storm: callers record the pids that answered them; a killer
 * SIGKILLs one of them after every few answered calls, paced by the calls
 * themselves (no clock), until it has killed STORM_KILLS workers. */
#define STORM_KILLS 40
#define STORM_CALLS_PER_KILL 6
struct storm {
    llll_pool *p;
    pthread_mutex_t mu;
    pthread_cond_t cv;          /* a call was answered */
    pid_t pids[16];
    unsigned npids;
    unsigned since_kill;        /* answered calls since the last kill */
    atomic_bool stop;
    atomic_int ok, reset, wrong, other, kills;
};

static void storm_note(struct storm *s, pid_t pid)
{
    pthread_mutex_lock(&s->mu);
    s->pids[s->npids++ % 16] = pid;
    s->since_kill++;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

/* pid is still a child of this process (not reaped, so not recycled). */
static int is_our_child(pid_t pid)
{
    int ppid = 0;
    return t_proc_stat(pid, NULL, &ppid) && ppid == getpid();
}

/* SIGKILLs pid only if it is still our child: through a pidfd opened before
 * the check, so a worker the pool reaped meanwhile (its pid maybe recycled
 * by an unrelated process) is never signalled. */
static bool kill_our_child(pid_t pid)
{
    int fd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (fd < 0)
        return errno == ENOSYS && is_our_child(pid) && kill(pid, SIGKILL) == 0;
    bool done = is_our_child(pid) && syscall(SYS_pidfd_send_signal, fd, SIGKILL, NULL, 0) == 0;
    close(fd);
    return done;
}

static void *storm_killer(void *a)
{
    struct storm *s = a;
    unsigned seed = 12345;
    while (atomic_load(&s->kills) < STORM_KILLS) {
        pthread_mutex_lock(&s->mu);
        while (s->since_kill < STORM_CALLS_PER_KILL)
            pthread_cond_wait(&s->cv, &s->mu);
        s->since_kill = 0;
        pid_t pid = s->pids[rand_r(&seed) % (s->npids < 16 ? s->npids : 16)];
        pthread_mutex_unlock(&s->mu);
        if (pid > 0 && kill_our_child(pid))
            atomic_fetch_add(&s->kills, 1);
    }
    atomic_store(&s->stop, true);
    return NULL;
}

static void *storm_caller(void *a)
{
    struct storm *s = a;
    llll_buf res = LLLL_BUF_INIT;
    static atomic_long next = 1;
    while (!atomic_load(&s->stop)) {
        long x = atomic_fetch_add(&next, 1);
        char cmd[32], out[64];
        snprintf(cmd, sizeof cmd, "echo %ld", x);
        int rc = call_str(s->p, cmd, &res, out, sizeof out);
        long pid, y;
        if (rc == -ECONNRESET)
            atomic_fetch_add(&s->reset, 1);
        else if (rc != 0)
            atomic_fetch_add(&s->other, 1);
        else if (sscanf(out, "%ld %ld", &pid, &y) != 2 || y != x)
            atomic_fetch_add(&s->wrong, 1);
        else {
            atomic_fetch_add(&s->ok, 1);
            storm_note(s, (pid_t)pid);
        }
    }
    llll_buf_free(&res);
    return NULL;
}

START_TEST(calls_survive_a_storm_of_killed_workers)
{
    make_hold_pipes();
    struct storm s = { .p = start_worker_pool(3, NULL) };
    pthread_mutex_init(&s.mu, NULL);
    pthread_cond_init(&s.cv, NULL);
    pthread_t callers[4], killer;
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(pthread_create(&callers[i], NULL, storm_caller, &s), 0);
    ck_assert_int_eq(pthread_create(&killer, NULL, storm_killer, &s), 0);
    pthread_join(killer, NULL);
    for (int i = 0; i < 4; i++)
        pthread_join(callers[i], NULL);
    ck_assert_int_eq(atomic_load(&s.wrong), 0);
    ck_assert_int_eq(atomic_load(&s.other), 0);
    ck_assert_int_gt(atomic_load(&s.ok), 0);
    ck_assert_int_eq(atomic_load(&s.kills), STORM_KILLS);
    llll_pool_stats st;
    llll_pool_get_stats(s.p, &st);
    ck_assert_uint_eq(st.crashes, (uint64_t)atomic_load(&s.reset));
    ck_assert_uint_ge(st.respawns, st.crashes);
    ck_assert_int_eq(llll_pool_size(s.p), 3);
    assert_all_workers_answer(s.p, 3);
    llll_pool_free(s.p);
    close_hold_pipes();
    t_assert_no_child();
}
END_TEST

/* ------------------------------------------------------------- start */

START_TEST(start_fails_on_a_program_that_exits_without_hello)
{
    int fds = t_count_dir("/proc/self/fd");
    llll_pool *p = (llll_pool *)&p;
    const char *argv[] = { "true", NULL };
    ck_assert_int_eq(llll_pool_start(&p, argv, 3, NULL), -ECONNRESET);
    ck_assert_ptr_null(p);
    t_assert_no_child();
    ck_assert_int_eq(t_count_dir("/proc/self/fd"), fds);
}
END_TEST

START_TEST(start_times_out_on_a_program_that_never_says_hello)
{
    int fds = t_count_dir("/proc/self/fd");
    llll_pool *p;
    const char *argv[] = { "sleep", "30", NULL };
    ck_assert_int_eq(llll_pool_start(&p, argv, 2, &(llll_pool_opts){ .start_timeout_ms = 300 }), -ETIMEDOUT);
    ck_assert_ptr_null(p);
    t_assert_no_child();
    ck_assert_int_eq(t_count_dir("/proc/self/fd"), fds);
}
END_TEST

START_TEST(timeouts_of_minus_one_mean_forever_and_below_is_einval)
{
    llll_pool *p = start_worker_pool(1, &(llll_pool_opts){ .call_timeout_ms = -1, .start_timeout_ms = -1 });
    ck_assert_int_eq(call_num(p, "sq 7"), 49);
    llll_pool_free(p);
    ck_assert_int_eq(llll_pool_start(&p, worker(), 1, &(llll_pool_opts){ .call_timeout_ms = -2 }), -EINVAL);
    ck_assert_int_eq(llll_pool_start(&p, worker(), 1, &(llll_pool_opts){ .start_timeout_ms = -2 }), -EINVAL);
    t_assert_no_child();
}
END_TEST

START_TEST(start_rejects_a_worker_of_another_protocol_version)
{
    int fds = t_count_dir("/proc/self/fd");
    llll_pool *p;
    const char *argv[] = { t_helper("pool_worker"), "--v1", NULL };
    ck_assert_int_eq(llll_pool_start(&p, argv, 2, NULL), -EPROTO);
    ck_assert_ptr_null(p);
    t_assert_no_child();
    ck_assert_int_eq(t_count_dir("/proc/self/fd"), fds);
}
END_TEST

START_TEST(start_reports_enoent_for_a_missing_program)
{
    int fds = t_count_dir("/proc/self/fd");
    llll_pool *p;
    const char *argv[] = { "/nonexistent/llll-worker", NULL };
    ck_assert_int_eq(llll_pool_start(&p, argv, 2, NULL), -ENOENT);
    ck_assert_ptr_null(p);
    /* A fork pool whose workers cannot chdir. */
    llll_pool_opts o = { .instance.proc.cwd = "/nonexistent/llll-dir" };
    p = (llll_pool *)&p;
    ck_assert_int_eq(llll_pool_fork(&p, picky_fn, NULL, 2, &o), -ENOENT);
    ck_assert_ptr_null(p);
    t_assert_no_child();
    ck_assert_int_eq(t_count_dir("/proc/self/fd"), fds);
}
END_TEST

START_TEST(nproc_zero_starts_one_worker_per_online_cpu)
{
    static long zero;
    llll_pool *p;
    ck_assert_int_eq(llll_pool_fork(&p, fib_fn, &zero, 0, NULL), 0);
    ck_assert_int_eq(llll_pool_size(p), (int)sysconf(_SC_NPROCESSORS_ONLN));
    llll_pool_free(p);
}
END_TEST

/* ----------------------------------------------------- sizes, serve, free */

START_TEST(an_argument_over_max_frame_gives_emsgsize_and_the_pool_goes_on)
{
    llll_pool *p = start_worker_pool(1, &(llll_pool_opts){ .max_frame = 16 });
    llll_buf res = LLLL_BUF_INIT;
    char out[64];
    ck_assert_int_eq(call_str(p, "echo 123456789012", &res, out, sizeof out), -EMSGSIZE);
    ck_assert_int_eq(call_num(p, "sq 5"), 25);
    llll_pool_stats st;
    llll_pool_get_stats(p, &st);
    ck_assert_uint_eq(st.respawns, 0);
    llll_buf_free(&res);
    llll_pool_free(p);
}
END_TEST

START_TEST(a_result_over_max_frame_gives_emsgsize_and_the_worker_goes_on)
{
    llll_pool *p = start_worker_pool(1, &(llll_pool_opts){ .max_frame = 100 });
    llll_buf res = LLLL_BUF_INIT;
    char out[64];
    ck_assert_int_eq(call_str(p, "big 100", &res, out, sizeof out), 0);
    ck_assert_uint_eq(res.len, 100);
    long pid = call_num(p, "pid");
    ck_assert_int_eq(call_str(p, "big 101", &res, out, sizeof out), -EMSGSIZE);
    ck_assert_uint_eq(res.len, 0);
    ck_assert_int_eq(call_num(p, "sq 5"), 25);
    ck_assert_int_eq(call_num(p, "pid"), pid);
    llll_pool_stats st;
    llll_pool_get_stats(p, &st);
    ck_assert_uint_eq(st.respawns, 0);
    llll_buf_free(&res);
    llll_pool_free(p);
}
END_TEST

/* The wire format README and llll_pool(3) give, both ways: a worker written
 * against it by hand serves a pool, and llll_serve's frames are exactly it. */
START_TEST(a_worker_speaking_the_documented_wire_format_serves_a_pool)
{
    llll_pool *p;
    const char *argv[] = { t_helper("pool_worker"), "--raw", NULL };
    ck_assert_int_eq(llll_pool_start(&p, argv, 1, NULL), 0);
    llll_buf res = LLLL_BUF_INIT;
    ck_assert_int_eq(llll_pool_call(p, "abc", 3, &res), 0);
    ck_assert_uint_eq(res.len, 3);
    ck_assert_mem_eq(res.data, "cba", 3);
    ck_assert_int_eq(llll_pool_call(p, "fail", 4, &res), -EREMOTEIO);
    ck_assert_uint_eq(res.len, 4);
    ck_assert_mem_eq(res.data, "liaf", 4);
    llll_buf_free(&res);
    llll_pool_free(p);
    t_assert_no_child();
}
END_TEST

/* A request frame of protocol 2: id, limit, count, then each argument's
 * length and bytes (all integers 4 bytes, big-endian). */
static size_t request(unsigned char *f, unsigned id, unsigned limit, const char *const *args, unsigned n)
{
    size_t o = 12;
    unsigned char head[12] = { 0, 0, 0, (unsigned char)id, 0, 0, (unsigned char)(limit >> 8), (unsigned char)limit,
                               0, 0, 0, (unsigned char)n };
    memcpy(f, head, 12);
    for (unsigned k = 0; k < n; k++) {
        size_t len = strlen(args[k]);
        unsigned char l[4] = { 0, 0, 0, (unsigned char)len };
        memcpy(f + o, l, 4);
        memcpy(f + o + 4, args[k], len);
        o += 4 + len;
    }
    return o;
}

START_TEST(serve_sends_the_documented_wire_format)
{
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        close(sv[0]);   /* else the worker never sees the master's EOF */
        char v[16];
        snprintf(v, sizeof v, "%d", sv[1]);
        setenv("LLLL_SBC_FD", v, 1);
        _exit(llll_serve(picky_fn, NULL) == 0 ? 0 : 1);
    }
    close(sv[1]);
    llll_sbc *ch;
    ck_assert_int_eq(llll_sbc_open(&ch, sv[0], sv[0]), 0);
    llll_buf f = LLLL_BUF_INIT;
    ck_assert_int_eq(llll_sbc_recv(ch, &f, 5000), 0);
    ck_assert_uint_eq(f.len, 11);
    ck_assert_mem_eq(f.data, "llll-pool/2", 11);

    /* A batch of two: "2" is even (fn returns 0), "3" is odd (fn fails). */
    unsigned char req[256];
    const char *two[] = { "2", "3" };
    ck_assert_int_eq(llll_sbc_send(ch, req, request(req, 7, 1000, two, 2)), 0);
    ck_assert_int_eq(llll_sbc_recv(ch, &f, 5000), 0);
    static const unsigned char want[] = {
        'e', 'v', 'e', 'n', 0, 0, 0, 0, 4,                       /* result, status, length */
        '3', ' ', 'i', 's', ' ', 'o', 'd', 'd', 1, 0, 0, 0, 8,
        0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 2,                      /* id, first, count */
    };
    ck_assert_uint_eq(f.len, sizeof want);
    ck_assert_mem_eq(f.data, want, sizeof want);

    /* A limit of 30 bytes holds one result per reply frame: two frames,
     * the second saying it starts at item 1. */
    ck_assert_int_eq(llll_sbc_send(ch, req, request(req, 8, 30, two, 2)), 0);
    ck_assert_int_eq(llll_sbc_recv(ch, &f, 5000), 0);
    ck_assert_uint_eq(f.len, 9 + 12);
    ck_assert_mem_eq(f.data, want, 9);
    ck_assert_mem_eq((char *)f.data + 9, "\0\0\0\x08\0\0\0\0\0\0\0\x01", 12);
    ck_assert_int_eq(llll_sbc_recv(ch, &f, 5000), 0);
    ck_assert_uint_eq(f.len, 13 + 12);
    ck_assert_mem_eq(f.data, want + 9, 13);
    ck_assert_mem_eq((char *)f.data + 13, "\0\0\0\x08\0\0\0\x01\0\0\0\x01", 12);

    /* A result over the limit: status 2 and no bytes. */
    const char *one[] = { "4" };
    ck_assert_int_eq(llll_sbc_send(ch, req, request(req, 9, 20, one, 1)), 0);
    ck_assert_int_eq(llll_sbc_recv(ch, &f, 5000), 0);
    ck_assert_uint_eq(f.len, 17);
    ck_assert_mem_eq(f.data, "\x02\0\0\0\0\0\0\0\x09\0\0\0\0\0\0\0\x01", 17);
    llll_buf_free(&f);
    llll_sbc_close(ch);                                   /* EOF: serve returns 0 */
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}
END_TEST

START_TEST(serve_returns_enoent_outside_a_worker)
{
    unsetenv("LLLL_SBC_FD");
    ck_assert_int_eq(llll_serve(picky_fn, NULL), -ENOENT);
}
END_TEST

/* Each worker runs under a shell that waits for it, so that a worker slower
 * than the grace of free to see its EOF is not killed with its shell: it
 * still returns from llll_serve and writes the value to the pipe, whose read
 * end sees EOF once every worker is gone. */
START_TEST(serve_returns_zero_in_each_worker_when_the_pool_is_freed)
{
    int rep[2];
    ck_assert_int_eq(pipe(rep), 0);
    ck_assert_int_eq(fcntl(rep[0], F_SETFD, FD_CLOEXEC), 0);
    char script[128], file[32];
    snprintf(file, sizeof file, "/dev/fd/%d", rep[1]);
    snprintf(script, sizeof script, "\"$0\" --report \"$1\"; exit $?");
    const char *argv[] = { "sh", "-c", script, t_helper("pool_worker"), file, NULL };
    llll_pool *p;
    ck_assert_int_eq(llll_pool_start(&p, argv, 3, NULL), 0);
    close(rep[1]);
    ck_assert_int_eq(call_num(p, "sq 4"), 16);
    llll_pool_free(p);
    t_assert_no_child();
    char buf[64] = { 0 };
    size_t n = 0;
    ssize_t r;
    while (n < sizeof buf - 1 && (r = read(rep[0], buf + n, sizeof buf - 1 - n)) != 0) {
        ck_assert_int_gt(r, 0);
        n += (size_t)r;
    }
    close(rep[0]);
    ck_assert_str_eq(buf, "0\n0\n0\n");
}
END_TEST

START_TEST(free_releases_threads_blocked_in_calls)
{
    make_hold_pipes();
    llll_pool *p = start_worker_pool(2, NULL);
    struct hold_arg h[2] = { 0 };
    pthread_t th[2];
    int arrived[2];
    hold_start(p, 2, h, th, arrived);   /* both calls are inside their workers */
    llll_pool_free(p);
    for (int i = 0; i < 2; i++) {
        pthread_join(th[i], NULL);
        ck_assert_msg(h[i].rc == -ECANCELED, "%s", llll_strerror(h[i].rc));
    }
    close_hold_pipes();
    t_assert_no_child();
}
END_TEST

/* A thread that called before takes the worker it used last without the
 * pool's lock: free must still cancel its call, and wait for it. */
START_TEST(free_releases_a_thread_blocked_in_a_call_on_the_worker_it_used_last)
{
    make_hold_pipes();
    llll_pool *p = start_worker_pool(1, NULL);
    struct hold_arg h = { .warm = true };
    pthread_t th;
    int arrived;
    hold_start(p, 1, &h, &th, &arrived);
    llll_pool_free(p);
    pthread_join(th, NULL);
    ck_assert_msg(h.rc == -ECANCELED, "%s", llll_strerror(h.rc));
    close_hold_pipes();
    t_assert_no_child();
}
END_TEST

static void *call_sq2(void *a)
{
    struct hold_arg *h = a;
    llll_buf res = LLLL_BUF_INIT;
    char out[64];
    h->rc = call_str(h->p, "sq 2", &res, out, sizeof out);
    llll_buf_free(&res);
    return NULL;
}

/* A thread that calls twice: once at once, then again when told to. */
struct twice {
    llll_pool *p;
    int warmed[2], go[2];   /* pipes: it says it called once; it is told to go on */
    int rc;
    long pid1;              /* the worker of its first call */
    _Atomic pid_t tid;
    pthread_t th;
};

static void *call_twice(void *a)
{
    struct twice *t = a;
    llll_buf res = LLLL_BUF_INIT;
    char out[64], c = 0;
    t->tid = (pid_t)syscall(SYS_gettid);
    t->rc = call_str(t->p, "pid", &res, out, sizeof out);
    t->pid1 = strtol(out, NULL, 10);
    if (t->rc == 0 && write(t->warmed[1], &c, 1) == 1 && read(t->go[0], &c, 1) == 1)
        t->rc = call_str(t->p, "sq 2", &res, out, sizeof out);
    llll_buf_free(&res);
    return NULL;
}

/* Starts a thread calling twice and waits for its first call's end. */
static void twice_start(struct twice *t, llll_pool *p)
{
    *t = (struct twice){ .p = p };
    ck_assert_int_eq(pipe(t->warmed), 0);
    ck_assert_int_eq(pipe(t->go), 0);
    ck_assert_int_eq(pthread_create(&t->th, NULL, call_twice, t), 0);
    char c;
    ck_assert_int_eq(read(t->warmed[0], &c, 1), 1);
}

/* Joins it after its second call. */
static void twice_join(struct twice *t)
{
    pthread_join(t->th, NULL);
    close(t->warmed[0]);
    close(t->warmed[1]);
    close(t->go[0]);
    close(t->go[1]);
}

/* Threads' first calls take the workers in turn, so two of four threads
 * have the worker that a fifth then holds. Their next calls wait for it
 * only until the pool sees it stuck, then go to the idle one (were they
 * left there, the held call would never be let go: it is let go only after
 * they all return). */
START_TEST(calls_waiting_for_a_held_worker_move_to_an_idle_one)
{
    make_hold_pipes();
    llll_pool *p = start_worker_pool(2, NULL);
    struct twice q[4];
    for (int i = 0; i < 4; i++)   /* one at a time: worker 0, 1, 0, 1 */
        twice_start(&q[i], p);
    struct hold_arg h = { 0 };
    pthread_t th;
    int arrived;
    hold_start(p, 1, &h, &th, &arrived);   /* worker 0, the next in turn */
    int behind = 0;
    for (int i = 0; i < 4; i++)
        behind += q[i].pid1 == arrived;
    ck_assert_int_eq(behind, 2);   /* two threads last used the held worker */
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(write(q[i].go[1], "", 1), 1);
    for (int i = 0; i < 4; i++) {
        twice_join(&q[i]);
        ck_assert_msg(q[i].rc == 0, "%s", llll_strerror(q[i].rc));
    }
    char go = 0;
    ck_assert_int_eq(write(release[1], &go, 1), 1);
    pthread_join(th, NULL);
    ck_assert_msg(h.rc == 0, "%s", llll_strerror(h.rc));
    llll_pool_free(p);
    close_hold_pipes();
    t_assert_no_child();
}
END_TEST

/* A call waiting for the worker its thread used last, which another call
 * holds, learns -ECANCELED from free, as the held call does. */
START_TEST(free_cancels_a_call_waiting_for_a_held_worker)
{
    make_hold_pipes();
    llll_pool *p = start_worker_pool(1, NULL);
    struct twice q;
    twice_start(&q, p);
    struct hold_arg h = { 0 };
    pthread_t th;
    int arrived;
    hold_start(p, 1, &h, &th, &arrived);
    ck_assert_int_eq(write(q.go[1], "", 1), 1);
    /* Once it took the byte, its next sleep is in the call. */
    int left;
    while (ioctl(q.go[0], FIONREAD, &left) == 0 && left > 0)
        sched_yield();
    t_wait_until_sleeping(q.tid);
    llll_pool_free(p);
    twice_join(&q);
    pthread_join(th, NULL);
    ck_assert_msg(q.rc == -ECANCELED, "%s", llll_strerror(q.rc));
    ck_assert_msg(h.rc == -ECANCELED, "%s", llll_strerror(h.rc));
    close_hold_pipes();
    t_assert_no_child();
}
END_TEST

START_TEST(free_cancels_a_call_waiting_for_a_replacement_to_say_hello)
{
    char dir[] = "/tmp/llll-pool-XXXXXX", prog[64], away[64];
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(prog, sizeof prog, "%s/worker", dir);
    snprintf(away, sizeof away, "%s/away", dir);
    copy_worker(prog);
    const char *argv[] = { prog, NULL };
    llll_pool *p;
    ck_assert_int_eq(llll_pool_start(&p, argv, 1, NULL), 0);
    ck_assert_int_eq(rename(prog, away), 0);
    llll_buf res = LLLL_BUF_INIT;
    char out[64];
    ck_assert_int_eq(call_str(p, "crash", &res, out, sizeof out), -ECONNRESET);
    ck_assert_int_eq(llll_pool_size(p), 0);   /* the slot is dead */
    /* The next call starts a replacement that tells us it runs, then never
     * says hello. */
    int started[2];
    ck_assert_int_eq(pipe(started), 0);       /* inherited by the script */
    FILE *f = fopen(prog, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f, "#!/bin/sh\nprintf x >/dev/fd/%d\nexec sleep 30\n", started[1]);
    ck_assert_int_eq(fclose(f), 0);
    ck_assert_int_eq(chmod(prog, 0755), 0);
    struct hold_arg h = { .p = p, .rc = 1 };
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, call_sq2, &h), 0);
    char c;
    ck_assert_int_eq(read(started[0], &c, 1), 1);
    llll_pool_free(p);
    pthread_join(t, NULL);
    ck_assert_msg(h.rc == -ECANCELED, "%s", llll_strerror(h.rc));
    llll_buf_free(&res);
    close(started[0]);
    close(started[1]);
    unlink(prog);
    unlink(away);
    rmdir(dir);
    t_assert_no_child();
}
END_TEST

START_TEST(a_pool_leaves_no_fd_open_after_crashes_timeouts_and_free)
{
    int before = t_count_dir("/proc/self/fd");
    llll_pool *p = start_worker_pool(2, &(llll_pool_opts){ .call_timeout_ms = 300 });
    llll_buf res = LLLL_BUF_INIT;
    char out[64];
    ck_assert_int_eq(call_str(p, "crash", &res, out, sizeof out), -ECONNRESET);
    ck_assert_int_eq(call_str(p, "hang", &res, out, sizeof out), -ETIMEDOUT);
    ck_assert_int_eq(call_num(p, "sq 6"), 36);
    llll_buf_free(&res);
    llll_pool_free(p);
    ck_assert_int_eq(t_count_dir("/proc/self/fd"), before);
    t_assert_no_child();
}
END_TEST

/* Workers that ignore EOF: each runs under a shell that, once its worker
 * returned, waits for a line on an inherited pipe. free must give them one
 * grace together: once it killed the first, it kills the others without
 * waiting again. The on_end of the first one killed waits until the thread
 * in free sleeps, which it does only once it sent every kill; then it lets
 * every shell go. A free that waited for each in turn would sleep in the
 * grace of the second, which would then exit on its own, with status 0. */
#define LINGERERS 24
struct lingerers {
    pid_t free_tid;
    int release;               /* write end of the shells' pipe */
    atomic_flag first;
    atomic_int ended;
    int status[LINGERERS];
};

static void lingerer_ended(void *u, int status, const llll_buf *out, const llll_buf *err)
{
    (void)out;
    (void)err;
    struct lingerers *l = u;
    if (!atomic_flag_test_and_set(&l->first)) {
        t_wait_until_sleeping(l->free_tid);
        char lines[LINGERERS];
        memset(lines, '\n', sizeof lines);
        ck_assert_int_eq(write(l->release, lines, sizeof lines), (ssize_t)sizeof lines);
    }
    int i = atomic_fetch_add(&l->ended, 1);
    if (i < LINGERERS)
        l->status[i] = status;
}

START_TEST(free_gives_workers_that_ignore_eof_one_grace_together)
{
    int rel[2];
    ck_assert_int_eq(pipe(rel), 0);
    ck_assert_int_eq(fcntl(rel[1], F_SETFD, FD_CLOEXEC), 0);
    struct lingerers l = { .free_tid = (pid_t)syscall(SYS_gettid), .release = rel[1],
                           .first = ATOMIC_FLAG_INIT };
    atomic_init(&l.ended, 0);
    char script[128];
    snprintf(script, sizeof script, "\"$0\"; read x <&%d", rel[0]);
    const char *argv[] = { "sh", "-c", script, t_helper("pool_worker"), NULL };
    llll_pool_opts o = { .instance.proc = { .on_end = lingerer_ended, .userdata = &l } };
    llll_pool *p;
    ck_assert_int_eq(llll_pool_start(&p, argv, LINGERERS, &o), 0);
    ck_assert_int_eq(call_num(p, "sq 8"), 64);
    llll_pool_free(p);
    close(rel[0]);
    close(rel[1]);
    t_assert_no_child();
    ck_assert_int_eq(atomic_load(&l.ended), LINGERERS);
    for (int i = 0; i < LINGERERS; i++)
        ck_assert_msg(WIFSIGNALED(l.status[i]) && WTERMSIG(l.status[i]) == SIGKILL,
                      "the shell to end %d-th of %d had status 0x%x, not the kill", i + 1, LINGERERS,
                      (unsigned)l.status[i]);
}
END_TEST

START_TEST(free_accepts_null)
{
    llll_pool_free(NULL);
    ck_assert_int_eq(llll_pool_size(NULL), 0);
}
END_TEST

/* ------------------------------------------------------- lanes by CPU */

/* Answers the worker's pid, after sleeping arg ms (a long). */
static int pid_after_fn(void *ctx, const void *arg, size_t len, llll_buf *res)
{
    (void)ctx;
    long ms = 0;
    if (len == sizeof ms)
        memcpy(&ms, arg, sizeof ms);
    if (ms > 0) {
        struct timespec ts = { ms / 1000, ms % 1000 * 1000000L };
        while (nanosleep(&ts, &ts) && errno == EINTR) {
        }
    }
    pid_t pid = getpid();
    return llll_buf_set(res, &pid, sizeof pid) ? 1 : 0;
}

#define PINNED 6          /* threads, at most */
#define PINNED_WORKERS 2  /* the pool's workers */

struct pinned {
    llll_pool *p;
    int cpu;          /* the thread runs only there */
    long ms;          /* each call's sleep in the worker */
    int calls;
    sem_t *first_done;
    pthread_barrier_t *go;
    pid_t first;      /* the worker of its first call */
    pid_t pid[PINNED_WORKERS];   /* the workers that answered, and how often */
    int count[PINNED_WORKERS];
    int errors;
};

static void pinned_count(struct pinned *t, pid_t pid)
{
    for (int k = 0; k < PINNED_WORKERS; k++) {
        if (t->count[k] == 0 || t->pid[k] == pid) {
            t->pid[k] = pid;
            t->count[k]++;
            return;
        }
    }
    t->errors++;
}

static int pinned_call(struct pinned *t, llll_buf *res, pid_t *pid)
{
    int rc = llll_pool_call(t->p, &t->ms, sizeof t->ms, res);
    if (rc == 0 && res->len == sizeof *pid)
        memcpy(pid, res->data, sizeof *pid);
    return rc || res->len != sizeof *pid;
}

/* Pins itself, makes its first call, tells, waits for the others to have
 * made theirs, then calls. */
static void *pinned_thread(void *a)
{
    struct pinned *t = a;
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(t->cpu, &one);
    llll_buf res = LLLL_BUF_INIT;
    if (pthread_setaffinity_np(pthread_self(), sizeof one, &one) || pinned_call(t, &res, &t->first))
        t->errors++;
    sem_post(t->first_done);
    pthread_barrier_wait(t->go);
    for (int k = 0; k < t->calls; k++) {
        pid_t pid;
        if (pinned_call(t, &res, &pid))
            t->errors++;
        else
            pinned_count(t, pid);
    }
    llll_buf_free(&res);
    return NULL;
}

/* The worker that answered most of t's calls. */
static pid_t pinned_most(const struct pinned *t)
{
    int best = 0;
    for (int k = 1; k < PINNED_WORKERS; k++)
        if (t->count[k] > t->count[best])
            best = k;
    return t->pid[best];
}

/* Calls from nt threads (up to PINNED), thread i pinned to the first or
 * second CPU the process may run on (cpus[i] 0 or 1), on a forked pool of 2
 * workers started by a thread held to those two CPUs meanwhile (the test's
 * thread, whose mask the workers inherit). The threads make
 * their first calls one after another, so that a thread's own worker (the
 * one it used last) is that of its first call: threads of even index get
 * one worker, those of odd index the other. Then they call together.
 * Returns whether it ran (the process may run on two CPUs or more). */
static bool pinned_run(const int cpus[PINNED], int nt, long ms, int calls, struct pinned t[PINNED])
{
    cpu_set_t all, two;
    ck_assert_int_eq(sched_getaffinity(0, sizeof all, &all), 0);
    int a = -1, b = -1;
    for (int c = 0; c < CPU_SETSIZE && b < 0; c++)
        if (CPU_ISSET(c, &all))
            *(a < 0 ? &a : &b) = c;
    if (b < 0)
        return false;
    CPU_ZERO(&two);
    CPU_SET(a, &two);
    CPU_SET(b, &two);
    ck_assert_int_eq(sched_setaffinity(0, sizeof two, &two), 0);
    llll_pool *p;
    ck_assert_int_eq(llll_pool_fork(&p, pid_after_fn, NULL, PINNED_WORKERS, NULL), 0);
    sem_t first_done;
    pthread_barrier_t go;
    sem_init(&first_done, 0, 0);
    pthread_barrier_init(&go, NULL, (unsigned)nt + 1);
    pthread_t th[PINNED];
    for (int i = 0; i < nt; i++) {
        t[i] = (struct pinned){ .p = p, .cpu = cpus[i] ? b : a, .ms = ms, .calls = calls,
                                .first_done = &first_done, .go = &go };
        ck_assert_int_eq(pthread_create(&th[i], NULL, pinned_thread, &t[i]), 0);
        while (sem_wait(&first_done) && errno == EINTR) {
        }
    }
    pthread_barrier_wait(&go);
    for (int i = 0; i < nt; i++) {
        pthread_join(th[i], NULL);
        ck_assert_int_eq(t[i].errors, 0);
    }
    pthread_barrier_destroy(&go);
    sem_destroy(&first_done);
    llll_pool_free(p);
    ck_assert_int_eq(sched_setaffinity(0, sizeof all, &all), 0);
    ck_assert_int_ne(t[0].first, t[1].first);   /* the threads' own workers */
    for (int i = 2; i < nt; i++)
        ck_assert_int_eq(t[i].first, t[i % 2].first);
    return true;
}

/* Short calls from more threads than workers: the threads on one CPU share
 * a worker, whichever worker they used first. Under valgrind a call takes
 * about 0.1 ms: not short. */
START_TEST(short_calls_from_threads_on_one_cpu_share_a_worker)
{
    static const int cpus[PINNED] = { 0, 0, 0, 1, 1, 1 };
    struct pinned t[PINNED];
    T_SKIP_UNLESS(!t_under_valgrind(), "calls under valgrind are not short");
    T_SKIP_UNLESS(pinned_run(cpus, PINNED, 0, 2000, t), "the process may run on one CPU only");
    for (int i = 0; i < PINNED; i++)
        ck_assert_int_eq(pinned_most(&t[i]), pinned_most(&t[i < 3 ? 0 : 3]));
    ck_assert_int_ne(pinned_most(&t[0]), pinned_most(&t[3]));
}
END_TEST

/* Slow calls from threads all on one CPU do not go by CPU (which would send
 * them all to that CPU's worker): each thread keeps to its own worker, so
 * both workers serve. Counted over both workers, not per thread: on a busy
 * machine a frame of two calls may outlast the lane watcher's period, and
 * the watcher then hands calls to the idle worker, which spreads them too. */
START_TEST(slow_calls_from_threads_on_one_cpu_go_to_both_workers)
{
    static const int cpus[PINNED] = { 0 };
    struct pinned t[PINNED];
    T_SKIP_UNLESS(pinned_run(cpus, 4, 1, 30, t), "the process may run on one CPU only");
    int total = 0, served[2] = { 0, 0 };
    for (int i = 0; i < 4; i++) {
        for (int k = 0; k < PINNED_WORKERS; k++) {
            total += t[i].count[k];
            for (int w = 0; w < 2; w++)
                served[w] += t[i].pid[k] == t[w].first ? t[i].count[k] : 0;
        }
    }
    ck_assert_int_eq(served[0] + served[1], total);
    for (int w = 0; w < 2; w++)
        ck_assert_msg(4 * served[w] > total, "worker %d served %d of %d calls", w, served[w], total);
}
END_TEST

static Suite *pool_suite(void)
{
    Suite *s = suite_create("pool");
    TCase *tc = tcase_create("calls");
    tcase_add_test(tc, calls_from_eight_threads_each_get_their_own_result);
    tcase_add_test(tc, a_fork_pool_computes_fibonacci_in_its_workers);
    tcase_add_test(tc, a_thread_gets_back_the_worker_it_used_last);
    tcase_add_test(tc, a_failing_fn_gives_eremoteio_with_its_message);
    tcase_add_test(tc, an_argument_over_max_frame_gives_emsgsize_and_the_pool_goes_on);
    tcase_add_test(tc, a_result_over_max_frame_gives_emsgsize_and_the_worker_goes_on);
    tcase_add_test(tc, short_calls_from_threads_on_one_cpu_share_a_worker);
    tcase_add_test(tc, slow_calls_from_threads_on_one_cpu_go_to_both_workers);
    suite_add_tcase(s, tc);

    tc = tcase_create("dying workers");
    tcase_add_test(tc, a_worker_that_crashes_gives_econnreset_and_is_replaced);
    tcase_add_test(tc, a_hung_worker_times_out_and_is_replaced);
    tcase_add_test(tc, a_request_a_dead_worker_never_read_goes_to_its_replacement);
    tcase_add_test(tc, a_worker_that_died_while_idle_does_not_fail_the_next_call);
    tcase_add_test(tc, without_respawn_dead_workers_stay_dead_then_calls_get_echild);
    tcase_add_test(tc, a_worker_that_cannot_be_replaced_fails_calls_until_it_can);
    tcase_add_test(tc, calls_survive_a_storm_of_killed_workers);
    suite_add_tcase(s, tc);

    tc = tcase_create("start and free");
    tcase_add_test(tc, start_fails_on_a_program_that_exits_without_hello);
    tcase_add_test(tc, start_times_out_on_a_program_that_never_says_hello);
    tcase_add_test(tc, start_rejects_a_worker_of_another_protocol_version);
    tcase_add_test(tc, timeouts_of_minus_one_mean_forever_and_below_is_einval);
    tcase_add_test(tc, start_reports_enoent_for_a_missing_program);
    tcase_add_test(tc, nproc_zero_starts_one_worker_per_online_cpu);
    tcase_add_test(tc, serve_returns_enoent_outside_a_worker);
    tcase_add_test(tc, a_worker_speaking_the_documented_wire_format_serves_a_pool);
    tcase_add_test(tc, serve_sends_the_documented_wire_format);
    tcase_add_test(tc, serve_returns_zero_in_each_worker_when_the_pool_is_freed);
    tcase_add_test(tc, free_releases_threads_blocked_in_calls);
    tcase_add_test(tc, calls_waiting_for_a_held_worker_move_to_an_idle_one);
    tcase_add_test(tc, free_cancels_a_call_waiting_for_a_held_worker);
    tcase_add_test(tc, free_releases_a_thread_blocked_in_a_call_on_the_worker_it_used_last);
    tcase_add_test(tc, free_cancels_a_call_waiting_for_a_replacement_to_say_hello);
    tcase_add_test(tc, a_pool_leaves_no_fd_open_after_crashes_timeouts_and_free);
    tcase_add_test(tc, free_accepts_null);
    tcase_add_test(tc, free_gives_workers_that_ignore_eof_one_grace_together);
    suite_add_tcase(s, tc);
    return s;
}
T_SUITE(pool_suite)
