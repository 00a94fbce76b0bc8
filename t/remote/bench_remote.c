/* Pools through ssh against the same pools local: calls/s with 2 workers and
 * 2 calling threads, and map items/s with 2 workers, as a ratio of
 * medians over alternating runs; and the time to start a pool of 1 and of 4
 * workers through ssh, against `ssh host true` in the same run, then the same
 * through an ssh ControlMaster. Run by `make bench-remote`, under
 * t/remote/with_sshd. usage: remote_bench WORKER */
#define _GNU_SOURCE
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../bench/bench.h"
#include "llll.h"

#define RUNS 5
#define CALLS_PER_THREAD 5000

static const char *ssh[] = { "ssh", "-F", NULL, "-T", "llll-test", NULL };
static char control_path[PATH_MAX + 32];
static const char *ssh_cm[] = { "ssh", "-F", NULL, "-o", "ControlMaster=auto", "-o", control_path,
                                "-o", "ControlPersist=60", "-T", "llll-test", NULL };
static const char *argv_w[2];

static llll_pool *start(const char *const *launcher, int slots, double *secs)
{
    llll_host h = { launcher, slots };
    llll_pool_opts o = { .hosts = &h, .nhosts = 1 };
    llll_pool *p;
    double t0 = now();
    int rc = llll_pool_start(&p, argv_w, 0, &o);
    if (secs)
        *secs = now() - t0;
    if (rc) {
        fprintf(stderr, "bench-remote: start: %s\n", llll_strerror(rc));
        exit(1);
    }
    return p;
}

static void *caller(void *a)
{
    llll_pool *p = a;
    llll_buf r = LLLL_BUF_INIT;
    for (int i = 0; i < CALLS_PER_THREAD; i++)
        if (llll_pool_call(p, "fib 1", 5, &r) != 0)
            abort();
    llll_buf_free(&r);
    return NULL;
}

/* Runs launcher + words to its end; returns the seconds it took. */
static double run(const char **launcher, const char *const *words)
{
    const char *argv[24];
    int n = 0;
    for (const char **w = launcher; *w; w++)
        argv[n++] = *w;
    for (; *words; words++)
        argv[n++] = *words;
    argv[n] = NULL;
    llll_proc *pr;
    int status = -1;
    double t0 = now();
    if (llll_proc_start(&pr, argv, NULL) != 0 || llll_proc_close_stdin(pr) != 0 ||
        llll_proc_join(pr, -1, &status) != 0 || status != 0) {
        fprintf(stderr, "bench-remote: %s ... %s failed\n", argv[0], argv[n - 1]);
        exit(1);
    }
    llll_proc_free(pr);
    return now() - t0;
}

/* Median times of `launcher true` and of starting pools of 1 and 4. */
static void starts(const char **launcher, const char *how)
{
    static const char *const true_[] = { "true", NULL };
    double tt[RUNS], t1[RUNS], t4[RUNS];
    for (int r = 0; r < RUNS; r++) {
        tt[r] = run(launcher, true_);
        llll_pool_free(start(launcher, 1, &t1[r]));
        llll_pool_free(start(launcher, 4, &t4[r]));
    }
    printf("%s (median of %d): `ssh host true` %.1f ms; start a pool of 1 worker %.1f ms, of 4 workers %.1f ms\n",
           how, RUNS, median(tt, RUNS) * 1e3, median(t1, RUNS) * 1e3, median(t4, RUNS) * 1e3);
}

/* Calls per second with 2 calling threads. */
static double calls_per_s(llll_pool *p)
{
    pthread_t th[2];
    double t0 = now();
    for (int i = 0; i < 2; i++)
        if (pthread_create(&th[i], NULL, caller, p) != 0)
            abort();
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    return 2.0 * CALLS_PER_THREAD / (now() - t0);
}

#define MAP_ITEMS 200000
static int map_arg(void *ctx, size_t i, llll_buf *arg)
{
    (void)ctx;
    (void)i;
    return llll_buf_set(arg, "fib 1", 5);
}

static int map_result(void *ctx, size_t i, int rc, const void *result, size_t len)
{
    (void)ctx;
    (void)i;
    (void)result;
    (void)len;
    return rc;
}

static double items_per_s(llll_pool *p)
{
    double t0 = now();
    if (llll_pool_map(p, MAP_ITEMS, map_arg, map_result, NULL, NULL) != 0)
        abort();
    return MAP_ITEMS / (now() - t0);
}

int main(int argc, char **argv)
{
    static char path[PATH_MAX];
    ssh[2] = ssh_cm[2] = getenv("LLLL_T_SSH_CONFIG");
    snprintf(control_path, sizeof control_path, "ControlPath=%s/cm-%%C",
             getenv("LLLL_T_REMOTE_DIR") ? getenv("LLLL_T_REMOTE_DIR") : "/tmp");
    if (argc < 2 || !ssh[2] || !realpath(argv[1], path)) {
        fprintf(stderr, "usage: t/remote/with_sshd remote_bench WORKER\n");
        return 2;
    }
    argv_w[0] = path;

    starts(ssh, "through ssh");
    /* The first run starts the master; it lives on (ControlPersist) until
     * `ssh -O exit`. */
    run(ssh_cm, (const char *const[]){ "true", NULL });
    starts(ssh_cm, "through an ssh ControlMaster");
    const char *ctl[] = { "ssh", "-F", ssh[2], "-o", control_path, NULL };
    run(ctl, (const char *const[]){ "-O", "exit", "llll-test", NULL });

    llll_pool *remote = start(ssh, 2, NULL), *local = start(NULL, 2, NULL);
    double cr[RUNS], cl[RUNS];
    for (int r = 0; r < RUNS; r++) {
        cr[r] = calls_per_s(remote);
        cl[r] = calls_per_s(local);
    }
    double mr = median(cr, RUNS), ml = median(cl, RUNS);
    printf("calls/s, 2 workers, 2 threads (median of %d): ssh %.0f, local %.0f, ssh/local %.3f\n", RUNS,
           mr, ml, mr / ml);
    double ir[RUNS], il[RUNS];
    for (int r = 0; r < RUNS; r++) {
        ir[r] = items_per_s(remote);
        il[r] = items_per_s(local);
    }
    mr = median(ir, RUNS);
    ml = median(il, RUNS);
    printf("map items/s, 2 workers (median of %d): ssh %.0f, local %.0f, ssh/local %.3f\n", RUNS, mr, ml,
           mr / ml);
    llll_pool_free(remote);
    llll_pool_free(local);
    return 0;
}
