/* An instance child in C: echoes every frame back until EOF (exit 0); the
 * frame "quit" ends it with status 7. Not started as an instance, it exits
 * with 3 when llll_sbc_child says -ENOENT, 4 on any other error. */
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>

#include "llll.h"

int main(void)
{
    llll_sbc *ch;
    int rc = llll_sbc_child(&ch);
    if (rc < 0)
        return rc == -ENOENT ? 3 : 4;
    llll_buf f = LLLL_BUF_INIT;
    int status = 0;
    while ((rc = llll_sbc_recv(ch, &f, -1)) == 0) {
        if (f.len == 4 && memcmp(f.data, "quit", 4) == 0) {
            status = 7;
            break;
        }
        if (llll_sbc_send(ch, f.data, f.len) < 0) {
            status = 5;
            break;
        }
    }
    if (rc < 0 && rc != LLLL_EOF)
        status = 6;
    llll_buf_free(&f);
    llll_sbc_close(ch);
    return status;
}
