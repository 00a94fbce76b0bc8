/* pool_python.c - the Python original's PoolMaster/PoolSlave example, with a
 * C master: workers are Python processes fed a script that serves fib with
 * python/llll.py, and the C side maps fib over 1..32 through them (in
 * parallel, unlike the original's loop of blocking calls). Skips with a
 * message when python3 cannot run. Run from the source tree (make demo). */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "llll.h"

/* The original's slave code, on this library's Python module. */
static const char code[] =
    "def fib(n):\n"
    "    if n <= 2:\n"
    "        return 1\n"
    "    return fib(n-1) + fib(n-2)\n"
    "\n"
    "from llll import serve\n"
    "serve(lambda arg: str(fib(int(arg))))\n";

static int arg(void *ctx, size_t i, llll_buf *a)
{
    (void)ctx;
    char s[16];
    int n = snprintf(s, sizeof s, "%zu", i + 1);
    return llll_buf_set(a, s, (size_t)n);
}

static int result(void *ctx, size_t i, int rc, const void *r, size_t len)
{
    (void)ctx;
    if (rc)
        printf("%zu failed: %s: %.*s\n", i + 1, llll_strerror(rc), (int)len, (const char *)r);
    else
        printf("%zu %.*s\n", i + 1, (int)len, (const char *)r);
    return 0;
}

int main(void)
{
    const char *const argv[] = { "python3", "-", NULL };   /* reads code on stdin */
    const char *const env[] = { "PYTHONPATH=python", NULL };
    llll_pool_opts o = { .instance = { .code = code, .proc.env = env } };
    llll_pool *pm;
    int rc = llll_pool_start(&pm, argv, 6, &o);
    if (rc == -ENOENT) {
        printf("pool_python: skipped, python3 is not installed\n");
        return 0;
    }
    if (rc) {
        fprintf(stderr, "pool_python: cannot start the Python workers: %s\n", llll_strerror(rc));
        return 1;
    }
    rc = llll_pool_map(pm, 32, arg, result, NULL, NULL);
    llll_pool_free(pm);
    if (rc)
        fprintf(stderr, "pool_python: %s\n", llll_strerror(rc));
    return rc ? 1 : 0;
}
