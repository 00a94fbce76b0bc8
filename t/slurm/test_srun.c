/* srun as a carrier of frames, against a live one-node cluster (SLURM_CONF set
 * by t/slurm/cluster.sh): what a pool's srun launcher relies on. */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "llll.h"
#include "srun.h"
#include "t.h"

/* srun -N1 -n1 --unbuffered env LLLL_SBC_FD=0,1 ECHO, with extra srun
 * options before the program. */
static struct launched start_echo(const char *opt)
{
    static char echo[PATH_MAX];
    ck_assert_ptr_nonnull(realpath(t_helper("echo"), echo));
    const char *argv[] = { "srun", "-N1", "-n1", "--unbuffered", opt ? opt : "--quiet",
                           "env", "LLLL_SBC_FD=0,1", echo, NULL };
    struct launched l;
    int rc = launch(&l, argv, opt != NULL);
    ck_assert_msg(rc == 0, "srun: %s", llll_strerror(rc));
    return l;
}

/* The echo's first frame: its pid, and its job id, which must be a number. */
static pid_t read_hello(llll_sbc *ch)
{
    llll_buf b = LLLL_BUF_INIT;
    ck_assert_int_eq(llll_sbc_recv(ch, &b, -1), 0);
    ck_assert_int_lt(b.len, 64);
    char s[64];
    memcpy(s, b.data, b.len);
    s[b.len] = '\0';
    long pid, job;
    ck_assert_msg(sscanf(s, "%ld %ld", &pid, &job) == 2, "hello '%s': not run by srun?", s);
    llll_buf_free(&b);
    return (pid_t)pid;
}

static void echo_back(llll_sbc *ch, const unsigned char *data, size_t len)
{
    llll_buf b = LLLL_BUF_INIT;
    ck_assert_int_eq(llll_sbc_send(ch, data, len), 0);
    ck_assert_int_eq(llll_sbc_recv(ch, &b, -1), 0);
    ck_assert_uint_eq(b.len, len);
    ck_assert(len == 0 || memcmp(b.data, data, len) == 0);
    llll_buf_free(&b);
}

static int wait_status(pid_t pid)
{
    int st;
    while (waitpid(pid, &st, 0) < 0)
        ck_assert_int_eq(errno, EINTR);
    return st;
}

/* An echo through srun, its hello read: the channel over srun's stdio. */
static llll_sbc *open_echo(pid_t *srun)
{
    struct launched l = start_echo(NULL);
    llll_sbc *ch;
    ck_assert_int_eq(llll_sbc_open(&ch, l.from, l.to), 0);
    read_hello(ch);
    *srun = l.pid;
    return ch;
}

/* Closes the channel: the echo reads EOF and ends, and so does srun, with 0. */
static void close_echo(llll_sbc *ch, pid_t srun)
{
    llll_sbc_close(ch);
    int st = wait_status(srun);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "srun status %#x", st);
}

/* A pidfd for process pid (not our child), or -1 when it is already gone. */
static int open_pidfd(pid_t pid)
{
    int fd = (int)syscall(SYS_pidfd_open, pid, 0);
    ck_assert_msg(fd >= 0 || errno == ESRCH, "pidfd_open: %s", strerror(errno));
    return fd;
}

/* Blocks until the process of pidfd has ended. */
static void wait_gone(int pidfd)
{
    if (pidfd < 0)
        return;
    struct pollfd pf = { .fd = pidfd, .events = POLLIN };
    while (poll(&pf, 1, -1) < 0)
        ck_assert_int_eq(errno, EINTR);
    close(pidfd);
}

START_TEST(srun_carries_every_byte_value_both_ways)
{
    pid_t srun;
    llll_sbc *ch = open_echo(&srun);
    /* around srun's and the pipes' own sizes, a newline-free frame first */
    static const size_t sizes[] = { 0, 1, 255, 256, 1023, 1024, 1025, 4096, 65535, 65536, 65537, 300000 };
    unsigned char *d = malloc(300000);
    ck_assert_ptr_nonnull(d);
    for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++) {
        for (size_t i = 0; i < sizes[k]; i++)
            d[i] = (unsigned char)(i * 7 + k);   /* every value, newlines scattered */
        echo_back(ch, d, sizes[k]);
    }
    free(d);
    close_echo(ch, srun);
}
END_TEST

START_TEST(srun_carries_8_mib_frames_both_ways)
{
    pid_t srun;
    llll_sbc *ch = open_echo(&srun);
    size_t n = (size_t)8 << 20;
    unsigned char *d = malloc(n);
    ck_assert_ptr_nonnull(d);
    for (int round = 0; round < 2; round++) {
        for (size_t i = 0; i < n; i++)
            d[i] = (unsigned char)(i % 251 + round);
        echo_back(ch, d, n);
    }
    free(d);
    close_echo(ch, srun);
}
END_TEST

START_TEST(closing_sruns_stdin_gives_the_task_eof_and_srun_exits_0)
{
    struct launched l = start_echo(NULL);
    /* The channel only receives here (its write fd is a second copy of the
     * read end, never written); one frame goes out by hand on srun's stdin,
     * which is then closed. */
    llll_sbc *ch;
    ck_assert_int_eq(llll_sbc_open(&ch, l.from, dup(l.from)), 0);
    pid_t task = read_hello(ch);
    int pidfd = open_pidfd(task);
    static const unsigned char frame[] = { 0, 0, 0, 1, 'x' };
    ck_assert_int_eq(write(l.to, frame, sizeof frame), (ssize_t)sizeof frame);
    ck_assert_int_eq(close(l.to), 0);
    llll_buf b = LLLL_BUF_INIT;
    ck_assert_int_eq(llll_sbc_recv(ch, &b, -1), 0);
    ck_assert(b.len == 1 && ((char *)b.data)[0] == 'x');
    int rc = llll_sbc_recv(ch, &b, -1);
    ck_assert_msg(rc == LLLL_EOF, "after closing stdin: %s", llll_strerror(rc));
    llll_buf_free(&b);
    llll_sbc_close(ch);
    wait_gone(pidfd);
    int st = wait_status(l.pid);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "srun status %#x", st);
}
END_TEST

START_TEST(sigkill_to_the_srun_pid_ends_the_task)
{
    struct launched l = start_echo(NULL);
    llll_sbc *ch;
    ck_assert_int_eq(llll_sbc_open(&ch, l.from, l.to), 0);
    pid_t task = read_hello(ch);
    int pidfd = open_pidfd(task);
    ck_assert_int_ge(pidfd, 0);
    echo_back(ch, (const unsigned char *)"busy", 4);
    ck_assert_int_eq(kill(l.pid, SIGKILL), 0);   /* the pid, never its group */
    int st = wait_status(l.pid);
    ck_assert(WIFSIGNALED(st));
    wait_gone(pidfd);   /* srun's helper child cancels the step */
    llll_buf b = LLLL_BUF_INIT;
    int rc = llll_sbc_recv(ch, &b, -1);
    ck_assert_msg(rc == LLLL_EOF, "after the kill: %s", llll_strerror(rc));
    llll_buf_free(&b);
    llll_sbc_close(ch);
}
END_TEST

START_TEST(srun_to_a_missing_partition_fails_and_says_why)
{
    struct launched l = start_echo("--partition=llll-no-such-partition");
    char err[4096];
    size_t got = 0;
    ssize_t r;
    while (got < sizeof err - 1 && (r = read(l.err, err + got, sizeof err - 1 - got)) != 0) {
        if (r < 0) {
            ck_assert_int_eq(errno, EINTR);
            continue;
        }
        got += (size_t)r;
    }
    err[got] = '\0';
    close(l.err);
    char c;
    ck_assert_int_eq(read(l.from, &c, 1), 0);   /* nothing on stdout, then EOF */
    close(l.from);
    close(l.to);
    int st = wait_status(l.pid);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) != 0, "srun status %#x", st);
    ck_assert_msg(strstr(err, "Invalid partition") != NULL, "srun said: %s", err);
}
END_TEST

static Suite *srun_suite(void)
{
    Suite *s = suite_create("srun");
    TCase *tc = tcase_create("frames");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, srun_carries_every_byte_value_both_ways);
    tcase_add_test(tc, srun_carries_8_mib_frames_both_ways);
    tcase_add_test(tc, closing_sruns_stdin_gives_the_task_eof_and_srun_exits_0);
    tcase_add_test(tc, srun_to_a_missing_partition_fails_and_says_why);
    suite_add_tcase(s, tc);
    /* A task orphaned by its srun lives on until the cluster's InactiveLimit
     * (10 s in cluster.sh) ends it: the case's bound, under that, is what
     * tells "ended by srun's cancel" from "ended by the controller later". */
    TCase *kill = tcase_create("kill");
    tcase_set_timeout(kill, 8);
    tcase_add_test(kill, sigkill_to_the_srun_pid_ends_the_task);
    suite_add_tcase(s, kill);
    return s;
}
T_SUITE(srun_suite)
