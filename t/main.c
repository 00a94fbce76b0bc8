/* The test runner: every registered suite, in fork mode, Check's summary line
 * and a line for each failing test (file, line, test, message).
 * CK_RUN_SUITE / CK_RUN_CASE select a part; CK_DEFAULT_TIMEOUT is 10 s;
 * CK_VERBOSITY=verbose lists every test, then each one's time;
 * CK_FORK=no runs every case in this process (for valgrind). */
#define _GNU_SOURCE
#include <check.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "t.h"

static Suite *(*makers[64])(void);
static int nmakers;

void t_register(Suite *(*make)(void))
{
    if (nmakers < 64)
        makers[nmakers++] = make;
}

/* The text between <tag> and </tag> on line, or NULL. */
static char *xml_field(char *line, const char *tag, char *out, size_t size)
{
    char open[32], close[32];
    snprintf(open, sizeof open, "<%s>", tag);
    snprintf(close, sizeof close, "</%s>", tag);
    char *a = strstr(line, open), *b = a ? strstr(a, close) : NULL;
    if (!b)
        return NULL;
    a += strlen(open);
    snprintf(out, size, "%.*s", (int)(b - a), a);
    return out;
}

/* Check measures every test but writes the times only to its XML log: one
 * line per test from it, "seconds suite:case:test" ("failed" for a test that
 * did not pass, which Check does not time). */
static void print_times(const char *xml)
{
    FILE *f = fopen(xml, "r");
    if (!f)
        return;
    char line[4096], suite[256] = "", id[256] = "", dur[64] = "", tc[256];
    printf("Times (seconds):\n");
    while (fgets(line, sizeof line, f)) {
        if (strstr(line, "<test "))
            id[0] = dur[0] = '\0';
        xml_field(line, "title", suite, sizeof suite);
        xml_field(line, "id", id, sizeof id);
        if (id[0])
            xml_field(line, "duration", dur, sizeof dur);
        if (id[0] && xml_field(line, "description", tc, sizeof tc)) {
            double s = atof(dur);
            if (s >= 0)
                printf("%9.3f  %s:%s:%s\n", s, suite, tc, id);
            else
                printf("   failed  %s:%s:%s\n", suite, tc, id);
            id[0] = '\0';
        }
    }
    fclose(f);
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
    /* The tests depend on no environment they did not set: programs come
     * from the usual folders whatever PATH make was given, text tools work
     * in one locale, sh reads no startup file or options of the caller's,
     * and no channel of a parent llll is taken for ours. */
    setenv("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", 1);
    setenv("LC_ALL", "C", 1);
    static const char *const drop[] = {"LLLL_SBC_FD", "ENV", "BASH_ENV", "SHELLOPTS", "BASHOPTS", "CDPATH"};
    for (size_t i = 0; i < sizeof drop / sizeof drop[0]; i++)
        unsetenv(drop[i]);
    if (nmakers == 0)
        return 1;
    SRunner *sr = srunner_create(makers[0]());
    for (int i = 1; i < nmakers; i++)
        srunner_add_suite(sr, makers[i]());
    if (!getenv("CK_FORK"))
        srunner_set_fork_status(sr, CK_FORK);

    const char *v = getenv("CK_VERBOSITY");
    bool times = v && strcmp(v, "verbose") == 0;
    char xml[] = "/tmp/llll-t-times-XXXXXX";
    bool own_xml = false;
    if (times && !srunner_has_xml(sr)) {
        int fd = mkstemp(xml);
        if (fd >= 0) {
            close(fd);
            srunner_set_xml(sr, xml);
            own_xml = true;
        }
    }
    srunner_run_all(sr, CK_ENV); /* CK_VERBOSITY: silent, minimal, normal, verbose */
    int failed = srunner_ntests_failed(sr);
    if (times && srunner_has_xml(sr))
        print_times(srunner_xml_fname(sr));
    if (own_xml)
        unlink(xml);
    srunner_free(sr);
    return failed ? 1 : 0;
}
