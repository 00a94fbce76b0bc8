/* Echoes frames on the channel named by LLLL_SBC_FD (through srun: its stdin
 * and stdout, LLLL_SBC_FD=0,1) until EOF. Its first frame says who it is:
 * "PID JOBID", JOBID from SLURM_JOB_ID ("-" outside Slurm). */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "llll.h"

int main(void)
{
    llll_sbc *ch;
    int rc = llll_sbc_child(&ch);
    if (rc) {
        fprintf(stderr, "echo: llll_sbc_child: %s\n", llll_strerror(rc));
        return 2;
    }
    const char *job = getenv("SLURM_JOB_ID");
    char hello[64];
    int n = snprintf(hello, sizeof hello, "%ld %s", (long)getpid(), job ? job : "-");
    rc = llll_sbc_send(ch, hello, (size_t)n);
    llll_buf b = LLLL_BUF_INIT;
    while (rc == 0 && (rc = llll_sbc_recv(ch, &b, -1)) == 0)
        rc = llll_sbc_send(ch, b.data, b.len);
    llll_buf_free(&b);
    llll_sbc_close(ch);
    return rc == LLLL_EOF ? 0 : 1;
}
