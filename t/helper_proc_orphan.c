/* Starts a child with die_with_parent from a thread that then ends, checks
 * the child outlived that thread (it echoes a line back), prints its pid and
 * "ready", and waits to be killed. The child then execs `sleep 30`, the same
 * process, so neither EOF on its stdin nor anything but a signal ends it.
 * With the argument "group" it runs in a new group and first starts another
 * `sleep 30` there, whose pid is printed instead (a member of the group
 * other than the child). Exit status 10+ names a failing step. */
#define _GNU_SOURCE
#include <pthread.h>
#include <semaphore.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "llll.h"

static llll_proc *child;
static pid_t starter_tid;
static sem_t echoed;
static pid_t member = -1;  /* "group": the sleep's pid, the first line */
static bool in_group;

static void on_line(void *u, const char *line, size_t len)
{
    (void)u;
    if (len == 5 && memcmp(line, "ping\n", 5) == 0)
        sem_post(&echoed);
    else if (member < 0)
        member = (pid_t)atoi(line);
}

static void *starter(void *arg)
{
    const char *const *argv = arg;
    starter_tid = gettid();
    llll_proc_opts o = {.on_stdout = on_line, .die_with_parent = true, .new_group = in_group};
    if (llll_proc_start(&child, argv, &o) < 0)
        child = NULL;
    return NULL;
}

int main(int argc, char **argv)
{
    static const char *const one[] = {"sh", "-c", "read x; echo \"$x\"; exec sleep 30", NULL};
    static const char *const group[] = {"sh", "-c", "sleep 30 & echo $!; read x; echo \"$x\"; exec sleep 30",
                                        NULL};
    in_group = argc > 1 && strcmp(argv[1], "group") == 0;
    sem_init(&echoed, 0, 0);
    pthread_t t;
    if (pthread_create(&t, NULL, starter, (void *)(in_group ? group : one)) != 0)
        return 10;
    pthread_join(t, NULL);
    if (!child)
        return 11;
    /* The thread's task is gone from /proc only after the kernel sent the
     * parent-death signal it would send: wait for that (the test case's
     * timeout bounds it). */
    char path[64];
    snprintf(path, sizeof path, "/proc/self/task/%d", (int)starter_tid);
    struct stat st;
    while (stat(path, &st) == 0)
        sched_yield();
    /* A SIGKILLed child would never echo this. */
    if (llll_proc_write(child, "ping\n", 5) < 0)
        return 12;
    sem_wait(&echoed);
    printf("%d\nready\n", (int)(in_group ? member : llll_proc_pid(child)));
    fflush(stdout);
    for (;;)
        pause();
}
