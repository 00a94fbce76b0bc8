/* Closes fds 0, 1 and 2, then uses llll_proc: the library's pipes must not
 * land on 0-2 (or the child's stdio would be crossed). Exit status 0 when
 * cat echoed stdin back and stderr came apart; 10+ names the failing step. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "llll.h"

struct seen {
    char out[64], err[64];
    size_t nout, nerr;
};

static void keep(char *dst, size_t *n, const char *line, size_t len)
{
    if (*n + len < 64) {
        memcpy(dst + *n, line, len);
        *n += len;
    }
}

static void on_out(void *u, const char *line, size_t len)
{
    struct seen *s = u;
    keep(s->out, &s->nout, line, len);
}

static void on_err(void *u, const char *line, size_t len)
{
    struct seen *s = u;
    keep(s->err, &s->nerr, line, len);
}

int main(void)
{
    close(0);
    close(1);
    close(2);
    struct seen s = {{0}, {0}, 0, 0};
    const char *argv[] = {"sh", "-c", "cat; echo oops >&2", NULL};
    llll_proc_opts o = {.on_stdout = on_out, .on_stderr = on_err, .userdata = &s};
    llll_proc *p;
    if (llll_proc_start(&p, argv, &o) < 0)
        return 10;
    if (llll_proc_write(p, "hello\n", 6) < 0)
        return 11;
    llll_proc_close_stdin(p);
    int st;
    if (llll_proc_join(p, -1, &st) < 0)
        return 12;
    llll_proc_free(p);
    if (st != 0)
        return 13;
    if (s.nout != 6 || memcmp(s.out, "hello\n", 6) != 0)
        return 14;
    if (s.nerr != 5 || memcmp(s.err, "oops\n", 5) != 0)
        return 15;
    /* Nothing of ours was left on 0-2. */
    for (int fd = 0; fd < 3; fd++)
        if (fcntl(fd, F_GETFD) >= 0)
            return 16;
    return 0;
}
