/* Shared by the Slurm tests and the srun bench: a program started with its
 * stdin and stdout as pipes (the way a launcher carries a worker's channel),
 * stderr inherited or into a pipe. */
#ifndef LLLL_T_SRUN_H
#define LLLL_T_SRUN_H

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

extern char **environ;

struct launched {
    pid_t pid;
    int to;     /* the program's stdin */
    int from;   /* the program's stdout */
    int err;    /* its stderr, or -1 when inherited */
};

/* Starts argv (looked up in PATH) with pipes on stdin and stdout, and on
 * stderr when want_err. 0 or a negative errno. */
static inline int launch(struct launched *l, const char *const argv[], int want_err)
{
    int in[2], out[2], er[2] = { -1, -1 };
    if (pipe2(in, O_CLOEXEC) < 0)
        return -errno;
    if (pipe2(out, O_CLOEXEC) < 0) {
        int e = errno;
        close(in[0]), close(in[1]);
        return -e;
    }
    if (want_err && pipe2(er, O_CLOEXEC) < 0) {
        int e = errno;
        close(in[0]), close(in[1]), close(out[0]), close(out[1]);
        return -e;
    }
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, in[0], 0);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    if (want_err)
        posix_spawn_file_actions_adddup2(&fa, er[1], 2);
    int rc = posix_spawnp(&l->pid, argv[0], &fa, NULL, (char *const *)argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(in[0]);
    close(out[1]);
    if (want_err)
        close(er[1]);
    if (rc) {
        close(in[1]), close(out[0]);
        if (want_err)
            close(er[0]);
        return -rc;
    }
    l->to = in[1];
    l->from = out[0];
    l->err = er[0];
    return 0;
}

#endif
