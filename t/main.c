/* The test runner: every registered suite, in fork mode, one summary line.
 * CK_RUN_SUITE / CK_RUN_CASE select a part; CK_DEFAULT_TIMEOUT is 10 s;
 * CK_FORK=no runs every case in this process (for valgrind). */
#define _GNU_SOURCE
#include <check.h>
#include <pthread.h>
#include <stdlib.h>

#include "t.h"

static Suite *(*makers[64])(void);
static int nmakers;

void t_register(Suite *(*make)(void))
{
    if (nmakers < 64)
        makers[nmakers++] = make;
}

#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define T_TSAN 1
#endif
#endif
#if defined(__SANITIZE_THREAD__)
#define T_TSAN 1
#endif

#ifdef T_TSAN
static void *nothing(void *arg)
{
    return arg;
}
#endif

int main(void)
{
#ifdef T_TSAN
    /* ThreadSanitizer starts a thread of its own at the first pthread_create
     * of a process, and never in a forked copy of one that did: start it now
     * so it appears in no case's count of threads. */
    pthread_t t;
    if (pthread_create(&t, NULL, nothing, NULL) == 0)
        pthread_join(t, NULL);
#endif
    setenv("CK_DEFAULT_TIMEOUT", "10", 0);
    if (nmakers == 0)
        return 1;
    SRunner *sr = srunner_create(makers[0]());
    for (int i = 1; i < nmakers; i++)
        srunner_add_suite(sr, makers[i]());
    if (!getenv("CK_FORK"))
        srunner_set_fork_status(sr, CK_FORK);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
