/* Shared by the tests of pools over hosts (t/test_hosts.c, t/remote/): the
 * lines a pool's on_stderr received, checked calls, fib from three threads. */
#ifndef LLLL_T_HOSTS_H
#define LLLL_T_HOSTS_H

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "llll.h"
#include "t.h"

/* Everything a pool's on_stderr received, from any thread. */
static pthread_mutex_t lines_mu = PTHREAD_MUTEX_INITIALIZER;
static llll_buf lines;

static void keep_line(void *ud, const char *line, size_t len)
{
    (void)ud;
    pthread_mutex_lock(&lines_mu);
    ck_assert_int_eq(llll_buf_reserve(&lines, lines.len + len + 1), 0);
    memcpy((char *)lines.data + lines.len, line, len);
    lines.len += len;
    ((char *)lines.data)[lines.len] = '\0';
    pthread_mutex_unlock(&lines_mu);
}

static const char *kept(void)
{
    return lines.len ? lines.data : "";
}

static void call_expect(llll_pool *p, const char *cmd, const char *want)
{
    llll_buf r = LLLL_BUF_INIT;
    int rc = llll_pool_call(p, cmd, strlen(cmd), &r);
    ck_assert_msg(rc == 0, "%s: %s", cmd, llll_strerror(rc));
    ck_assert_msg(r.len == strlen(want) && memcmp(r.data, want, r.len) == 0,
                  "%s: got '%.*s', want '%s'", cmd, (int)r.len, (char *)r.data, want);
    llll_buf_free(&r);
}

/* The pool's only host can no longer launch its worker: a crash, then the
 * relaunches fail (the crash's own at once, then one per call after each
 * back-off) until the fifth drops the host; calls then get -ECHILD. */
static void assert_dropped_after_five_failed_launches(llll_pool *p, llll_buf *r)
{
    ck_assert_int_eq(llll_pool_call(p, "crash", 5, r), -ECONNRESET);
    int calls = 0, rc;
    while ((rc = llll_pool_call(p, "fib 5", 5, r)) == -ECONNRESET && calls < 10)
        calls++;
    ck_assert_int_eq(rc, -ECHILD);
    ck_assert_int_eq(calls, 4);
    ck_assert_int_eq(llll_pool_size(p), 0);
    llll_pool_stats st;
    llll_pool_get_stats(p, &st);
    ck_assert_int_eq(st.launch_failures, 5);
    ck_assert_int_eq(st.hosts_dropped, 1);
    ck_assert_int_eq(st.crashes, 1);
}

static long fib(int n)
{
    return n < 2 ? n : fib(n - 1) + fib(n - 2);
}

struct fib_arg {
    llll_pool *p;
    int errors;
};

static void *fib_thread(void *a)
{
    struct fib_arg *f = a;
    llll_buf r = LLLL_BUF_INIT;
    for (int n = 1; n <= 30; n++) {
        char cmd[32], want[32];
        snprintf(cmd, sizeof cmd, "fib %d", n);
        snprintf(want, sizeof want, "%ld", fib(n));
        if (llll_pool_call(f->p, cmd, strlen(cmd), &r) != 0 || r.len != strlen(want) ||
            memcmp(r.data, want, r.len) != 0)
            f->errors++;
    }
    llll_buf_free(&r);
    return NULL;
}

/* fib over 1..30 from three threads at once; every result checked. */
static void fib_from_three_threads(llll_pool *p)
{
    pthread_t th[3];
    struct fib_arg a[3];
    for (int i = 0; i < 3; i++) {
        a[i] = (struct fib_arg){ .p = p };
        ck_assert_int_eq(pthread_create(&th[i], NULL, fib_thread, &a[i]), 0);
    }
    for (int i = 0; i < 3; i++) {
        pthread_join(th[i], NULL);
        ck_assert_int_eq(a[i].errors, 0);
    }
}

#endif
