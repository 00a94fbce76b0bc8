/* Shared by the tests: suite registration and the path of helper programs. */
#ifndef LLLL_T_H
#define LLLL_T_H

#include <check.h>
#include <stdio.h>
#include <stdlib.h>

/* Each t/test_*.c registers its suite(s) with T_SUITE(name_suite); main.c runs
 * them all in one SRunner, so one Check summary line closes the run. */
void t_register(Suite *(*make)(void));
#define T_SUITE(fn)                                                   \
    static void t_reg_##fn(void) __attribute__((constructor));       \
    static void t_reg_##fn(void) { t_register(fn); }

/* Full path of a helper program built from t/helper_NAME.c, in a static
 * buffer (the Makefile passes the folder as LLLL_T_DIR). */
static inline const char *t_helper(const char *name)
{
    static char path[4096];
    const char *dir = getenv("LLLL_T_DIR");
    snprintf(path, sizeof path, "%s/helper_%s", dir ? dir : "build/t", name);
    return path;
}

#endif
