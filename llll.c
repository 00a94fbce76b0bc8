/* llll.c - child processes (llll_proc), instances (llll_instance), errors. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "llll.h"

#define LLLL_STR2(x) #x
#define LLLL_STR(x) LLLL_STR2(x)

const char *llll_version(void)
{
    return LLLL_STR(LLLL_VERSION_MAJOR) "." LLLL_STR(LLLL_VERSION_MINOR) "." LLLL_STR(LLLL_VERSION_PATCH);
}

/* glibc (2.32 on) and musl return static or thread-local strings here. */
const char *llll_strerror(int rc)
{
    if (rc == 0)
        return "success";
    if (rc == LLLL_EOF)
        return "end of stream (peer closed the channel)";
    if (rc < 0 && rc > -4096)
        return strerror(-rc);
    return "unknown llll error";
}
