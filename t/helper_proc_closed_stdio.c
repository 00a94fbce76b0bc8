/* Closes fds 0, 1 and 2, then uses llll_proc, a channel pair, instances
 * (argv[1]: an echoing instance program) and die_with_parent: the library's
 * fds must not land on 0-2 (or the child's stdio would be crossed, or printf
 * would write into a channel). Exit status 0 when cat echoed stdin back,
 * stderr came apart and every fd stayed off 0-2; 10+ names the failing step. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdbool.h>
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

static bool stdio_closed(void)
{
    for (int fd = 0; fd < 3; fd++)
        if (fcntl(fd, F_GETFD) >= 0)
            return false;
    return true;
}

/* A forked instance's body: echoes one frame. */
static int echo_once(llll_sbc *ch, void *arg)
{
    (void)arg;
    llll_buf f = LLLL_BUF_INIT;
    int rc = llll_sbc_recv(ch, &f, -1);
    if (rc == 0)
        rc = llll_sbc_send(ch, f.data, f.len);
    llll_buf_free(&f);
    return rc < 0;
}

int main(int argc, char **args)
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
    if (!stdio_closed())
        return 16;

    /* A channel pair: printf would write into it if it sat on fd 1. */
    llll_sbc *a, *b;
    if (llll_sbc_pair(&a, &b) < 0)
        return 20;
    if (!stdio_closed())
        return 21;
    llll_buf f = LLLL_BUF_INIT;
    if (llll_sbc_send(a, "hi", 2) < 0 || llll_sbc_recv(b, &f, -1) < 0 || f.len != 2)
        return 22;
    llll_sbc_close(a);
    llll_sbc_close(b);

    /* Instances started and forked, and a child with die_with_parent. */
    const char *echo[] = {argc > 1 ? args[1] : "true", NULL};
    llll_instance *in;
    if (llll_instance_start(&in, echo, NULL) < 0 || !stdio_closed())
        return 30;
    if (llll_instance_send(in, "x", 1) < 0 || llll_instance_recv(in, &f, -1) < 0)
        return 31;
    llll_instance_free(in);
    if (llll_instance_fork(&in, echo_once, NULL, NULL) < 0 || !stdio_closed())
        return 32;
    if (llll_instance_send(in, "y", 1) < 0 || llll_instance_recv(in, &f, -1) < 0)
        return 33;
    llll_instance_free(in);
    const char *sh[] = {"sh", "-c", "exit 0", NULL};
    llll_proc_opts d = {.die_with_parent = true, .new_group = true};
    if (llll_proc_start(&p, sh, &d) < 0 || !stdio_closed())
        return 40;
    if (llll_proc_join(p, -1, &st) < 0 || st != 0)
        return 41;
    llll_proc_free(p);
    llll_buf_free(&f);
    return stdio_closed() ? 0 : 42;
}
