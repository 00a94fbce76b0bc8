/* subprocess.c - the original README's first example, in C: a long-running
 * child whose lines are printed as they arrive, killed after about 3 s, then
 * joined, and how it ended printed. */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "llll.h"

int main(void)
{
    const char *argv[] = {"sh", "-c", "i=0; while :; do i=$((i+1)); echo tick $i; sleep 0.5; done", NULL};
    llll_proc_opts opts = {
        .on_stdout = llll_print_line, /* each line to our stdout, whole */
        .on_stderr = llll_print_line,
        .new_group = true,            /* kill reaches sh's sleep too */
    };
    llll_proc *p;
    int rc = llll_proc_start(&p, argv, &opts);
    if (rc < 0) {
        fprintf(stderr, "subprocess: cannot start sh: %s\n", llll_strerror(rc));
        return 1;
    }
    printf("started pid %ld; its lines follow as they arrive\n", (long)llll_proc_pid(p));
    fflush(stdout);

    sleep(3); /* the main thread is free meanwhile: lines come on llll's thread */

    llll_proc_kill(p, SIGTERM);
    int status;
    rc = llll_proc_join(p, -1, &status);
    llll_proc_free(p);
    if (rc < 0) {
        fprintf(stderr, "subprocess: join: %s\n", llll_strerror(rc));
        return 1;
    }
    if (WIFSIGNALED(status))
        printf("child ended by signal %d (%s)\n", WTERMSIG(status), WTERMSIG(status) == SIGTERM ? "SIGTERM, ours" : "?");
    else
        printf("child exited with status %d\n", WEXITSTATUS(status));
    return 0;
}
