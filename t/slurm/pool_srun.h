/* Shared by the tests of pools through srun (SLURM_CONF set by
 * t/slurm/cluster.sh): pools of one worker per launcher, told apart by their
 * Slurm job names, and a way to hold every worker of a pool at once. */
#ifndef LLLL_T_POOL_SRUN_H
#define LLLL_T_POOL_SRUN_H

#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "llll.h"
#include "t.h"

#define NW 3   /* llll-w1 and llll-w2 through srun, one local */

static const char *const srun_w1[] = { "srun", "-N1", "-n1", "--unbuffered", "-J", "llll-w1", NULL };
static const char *const srun_w2[] = { "srun", "-N1", "-n1", "--unbuffered", "-J", "llll-w2", NULL };

/* Every stderr line of the workers and their launchers, kept for checks. */
static struct {
    pthread_mutex_t mu;
    char text[1 << 16];
    size_t len;
} errlog = { .mu = PTHREAD_MUTEX_INITIALIZER };

static inline void on_stderr(void *ud, const char *line, size_t len)
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

static inline bool errlog_has(const char *s)
{
    pthread_mutex_lock(&errlog.mu);
    bool has = strstr(errlog.text, s) != NULL;
    pthread_mutex_unlock(&errlog.mu);
    return has;
}

static inline int start(llll_pool **p, const llll_host *hosts, size_t nhosts, const char *mode)
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

static inline llll_pool *start_mixed(const char *mode)
{
    static const llll_host hosts[] = { { srun_w1, 1 }, { srun_w2, 1 }, { NULL, 1 } };
    llll_pool *p;
    int rc = start(&p, hosts, 3, mode);
    ck_assert_msg(rc == 0, "start: %s", llll_strerror(rc));
    ck_assert_int_eq(llll_pool_size(p), NW);
    return p;
}

/* The pid of our child process whose argv holds the word arg, or -1. */
static inline pid_t child_with_arg(const char *arg)
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
    char cmd[2 * PATH_MAX + 32];
    int rc;
    char answer[128];
};

struct hold {
    char dir[PATH_MAX], out[PATH_MAX + 8], in[PATH_MAX + 8];
    int fo;
    struct holder h[NW];
    char who[NW][128];   /* as reported on out */
};

static inline void *holder_main(void *arg)
{
    struct holder *h = arg;
    llll_buf res = LLLL_BUF_INIT;
    h->rc = llll_pool_call(h->p, h->cmd, strlen(h->cmd), &res);
    size_t n = res.len < sizeof h->answer - 1 ? res.len : sizeof h->answer - 1;
    if (n)
        memcpy(h->answer, res.data, n);
    h->answer[n] = '\0';
    llll_buf_free(&res);
    return NULL;
}

/* Starts the NW calls and returns once every worker holds one. */
static inline void hold_all(struct hold *w, llll_pool *p)
{
    /* in the cluster's folder, which goes when the cluster stops */
    const char *top = getenv("LLLL_SLURM_DIR");
    snprintf(w->dir, sizeof w->dir, "%s/hold.XXXXXX", top ? top : "/tmp");
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
static inline const char *held_by(const struct hold *w, const char *name)
{
    for (int k = 0; k < NW; k++) {
        const char *sp = strchr(w->who[k], ' ');
        if (sp && strcmp(sp + 1, name) == 0)
            return w->who[k];
    }
    return NULL;
}

/* Lets every held call answer and joins the threads. */
static inline void release_all(struct hold *w)
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

static inline long call_num(llll_pool *p, const char *cmd)
{
    llll_buf res = LLLL_BUF_INIT;
    int rc = llll_pool_call(p, cmd, strlen(cmd), &res);
    ck_assert_msg(rc == 0, "%s: %s", cmd, llll_strerror(rc));
    char s[64];
    size_t n = res.len < sizeof s - 1 ? res.len : sizeof s - 1;
    if (n)
        memcpy(s, res.data, n);
    s[n] = '\0';
    llll_buf_free(&res);
    return strtol(s, NULL, 10);
}

/* n calls "sq i", each result checked. */
static inline void square_calls(llll_pool *p, long n)
{
    for (long i = 0; i < n; i++) {
        char cmd[32];
        snprintf(cmd, sizeof cmd, "sq %ld", i);
        ck_assert_int_eq(call_num(p, cmd), i * i);
    }
}

#endif
