/* pool_fib_worker.c - the worker program of pool_fib: answers "n" with fib(n),
 * both as decimal text, until its pool closes. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llll.h"

static long fib(long n) { return n < 2 ? n : fib(n - 1) + fib(n - 2); }

static int answer(void *ctx, const void *arg, size_t len, llll_buf *result)
{
    (void)ctx;
    char text[32];
    if (len == 0 || len >= sizeof text)
        return 1;
    memcpy(text, arg, len);
    text[len] = '\0';
    char out[32];
    int n = snprintf(out, sizeof out, "%ld", fib(strtol(text, NULL, 10)));
    return llll_buf_set(result, out, (size_t)n) ? 1 : 0;
}

int main(void)
{
    int rc = llll_serve(answer, NULL);
    if (rc) {
        fprintf(stderr, "pool_fib_worker: %s (run me through pool_fib)\n", llll_strerror(rc));
        return 1;
    }
    return 0;
}
