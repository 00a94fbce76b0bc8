/* A small program linked against an installed, vendored or musl-built llll:
 * it touches every source file (version, a child, a channel, a mapper) and
 * exits 0 only when each answered correctly. */
#include <stdio.h>
#include <string.h>

#include "llll.h"

static int square(void *ctx, size_t i)
{
    ((size_t *)ctx)[i] = i * i;
    return 0;
}

static void on_end(void *ud, int status, const llll_buf *out, const llll_buf *err)
{
    (void)err;
    *(int *)ud = status == 0 && out && out->len == 6 && memcmp(out->data, "hello\n", 6) == 0;
}

int main(void)
{
    int ok = 0, rc;
    llll_proc_opts po = {.on_end = on_end, .userdata = &ok, .collect_output = true};
    llll_proc *p;
    const char *argv[] = {"echo", "hello", NULL};
    if ((rc = llll_proc_start(&p, argv, &po)) || (rc = llll_proc_join(p, -1, NULL)))
        return fprintf(stderr, "proc: %s\n", llll_strerror(rc)), 1;
    llll_proc_free(p);

    llll_sbc *a, *b;
    llll_buf f = LLLL_BUF_INIT;
    if ((rc = llll_sbc_pair(&a, &b)) || (rc = llll_sbc_send(a, "ping", 4)) || (rc = llll_sbc_recv(b, &f, -1)))
        return fprintf(stderr, "sbc: %s\n", llll_strerror(rc)), 1;
    int sbc_ok = f.len == 4 && memcmp(f.data, "ping", 4) == 0;
    llll_buf_free(&f);
    llll_sbc_close(a);
    llll_sbc_close(b);

    size_t sq[1000];
    llll_mapper *m;
    if ((rc = llll_mapper_new(&m, 2)) || (rc = llll_mapper_map(m, 1000, square, sq)))
        return fprintf(stderr, "mapper: %s\n", llll_strerror(rc)), 1;
    llll_mapper_free(m);
    int map_ok = sq[999] == 999 * 999 && sq[3] == 9;

    printf("llll %s: proc %s, sbc %s, mapper %s\n", llll_version(), ok ? "ok" : "WRONG",
           sbc_ok ? "ok" : "WRONG", map_ok ? "ok" : "WRONG");
    return ok && sbc_ok && map_ok ? 0 : 1;
}
