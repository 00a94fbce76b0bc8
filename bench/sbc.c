/* bench/sbc.c - llll_sbc against hand-written socketpair code, same run.
 *
 * (a) 16-byte frames, round trips parent <-> forked child: llll_sbc_pair vs a
 *     raw socketpair ping-pong with the same framing (one write of header and
 *     payload, one read). Across CPUs and pinned to CPU 0. Ratio of times.
 * (b) 16 MiB frames one way: llll vs a raw writev/read loop on a socketpair
 *     with the same socket buffers. Ratio of throughputs.
 * (c) Python multiprocessing.Pipe round trip, as a ratio to llll's.
 * The two sides alternate; each figure is the median of 5 runs.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "llll.h"
#include "bench.h"

#define RUNS 5
#define TRIPS 10000
#define SMALL 16
#define BIG ((size_t)16 << 20)
#define BIG_FRAMES 16
#define SOCKBUF (4 << 20)   /* what llll_sbc_pair asks for */

static void die(const char *what, int rc)
{
    fprintf(stderr, "bench/sbc: %s: %s\n", what, rc ? strerror(rc < 0 ? -rc : rc) : "failed");
    exit(1);
}

static void reap(pid_t pid)
{
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        die("child failed", 0);
}

/* ------------------------------------------------------------ raw framing */

static void raw_pair(int sv[2])
{
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        die("socketpair", errno);
    int size = SOCKBUF;
    for (int i = 0; i < 2; i++) {
        setsockopt(sv[i], SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
        setsockopt(sv[i], SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
    }
}

static int raw_writev_all(int fd, struct iovec *iov, int cnt)
{
    while (cnt > 0) {
        ssize_t n = writev(fd, iov, cnt);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        while (cnt > 0 && (size_t)n >= iov->iov_len) {
            n -= (ssize_t)iov->iov_len;
            iov++;
            cnt--;
        }
        if (cnt > 0) {
            iov->iov_base = (char *)iov->iov_base + n;
            iov->iov_len -= (size_t)n;
        }
    }
    return 0;
}

static int raw_read_all(int fd, void *p, size_t n)
{
    char *c = p;
    while (n > 0) {
        ssize_t r = read(fd, c, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        c += r;
        n -= (size_t)r;
    }
    return 0;
}

/* One small frame: header + payload in one write, the reply read with one
 * read (looping only if it came in pieces). */
static int raw_send_small(int fd, unsigned char *frame, size_t len)
{
    frame[0] = 0;
    frame[1] = 0;
    frame[2] = (unsigned char)(len >> 8);
    frame[3] = (unsigned char)len;
    struct iovec iov = { frame, 4 + len };
    return raw_writev_all(fd, &iov, 1);
}

static int raw_recv_small(int fd, unsigned char *buf, size_t cap)
{
    size_t got = 0;
    for (;;) {
        ssize_t r = read(fd, buf + got, cap - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        got += (size_t)r;
        if (got >= 4 && got >= 4 + ((size_t)buf[2] << 8 | buf[3]))
            return 0;
    }
}

/* ------------------------------------------------------------ (a) round trips */

static double rt_llll(void)
{
    llll_sbc *a, *b;
    int rc = llll_sbc_pair(&a, &b);
    if (rc)
        die("llll_sbc_pair", rc);
    pid_t pid = fork();
    if (pid < 0)
        die("fork", errno);
    if (pid == 0) {
        llll_sbc_close(a);
        llll_buf f = LLLL_BUF_INIT;
        while ((rc = llll_sbc_recv(b, &f, -1)) == 0)
            if (llll_sbc_send(b, f.data, f.len) != 0)
                _exit(2);
        _exit(rc == LLLL_EOF ? 0 : 3);
    }
    llll_sbc_close(b);
    unsigned char msg[SMALL] = "0123456789abcdef";
    llll_buf f = LLLL_BUF_INIT;
    double t0 = 0;
    for (int i = -100; i < TRIPS; i++) {
        if (i == 0)
            t0 = now();
        if ((rc = llll_sbc_send(a, msg, SMALL)) || (rc = llll_sbc_recv(a, &f, -1)))
            die("llll round trip", rc);
    }
    double t = (now() - t0) / TRIPS;
    llll_sbc_close(a);
    llll_buf_free(&f);
    reap(pid);
    return t;
}

static double rt_raw(void)
{
    int sv[2];
    raw_pair(sv);
    pid_t pid = fork();
    if (pid < 0)
        die("fork", errno);
    unsigned char buf[65536];
    if (pid == 0) {
        close(sv[0]);
        while (raw_recv_small(sv[1], buf, sizeof buf) == 0)
            if (raw_send_small(sv[1], buf, (size_t)buf[2] << 8 | buf[3]) != 0)
                _exit(2);
        _exit(0);
    }
    close(sv[1]);
    unsigned char frame[4 + SMALL] = "....0123456789abcdef";
    double t0 = 0;
    for (int i = -100; i < TRIPS; i++) {
        if (i == 0)
            t0 = now();
        if (raw_send_small(sv[0], frame, SMALL) || raw_recv_small(sv[0], buf, sizeof buf))
            die("raw round trip", errno);
    }
    double t = (now() - t0) / TRIPS;
    close(sv[0]);
    reap(pid);
    return t;
}

/* Python's multiprocessing.Pipe, same message size and count. */
static double rt_python(void)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "python3 -c '\n"
             "import multiprocessing as mp, time\n"
             "def echo(c):\n"
             "    while True:\n"
             "        m = c.recv_bytes()\n"
             "        if not m: break\n"
             "        c.send_bytes(m)\n"
             "if __name__ == \"__main__\":\n"
             "    a, b = mp.Pipe()\n"
             "    p = mp.Process(target=echo, args=(b,)); p.start()\n"
             "    m = b\"x\" * %d\n"
             "    for i in range(100): a.send_bytes(m); a.recv_bytes()\n"
             "    t = time.perf_counter()\n"
             "    for i in range(%d): a.send_bytes(m); a.recv_bytes()\n"
             "    t = (time.perf_counter() - t) / %d\n"
             "    a.send_bytes(b\"\"); p.join(); print(t)\n"
             "'",
             SMALL, TRIPS, TRIPS);
    FILE *p = popen(cmd, "r");
    double t = -1;
    if (!p || fscanf(p, "%lf", &t) != 1)
        t = -1;
    if (p)
        pclose(p);
    return t;
}

static void pin(int cpu, cpu_set_t *saved)
{
    sched_getaffinity(0, sizeof *saved, saved);
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(cpu, &one);
    if (sched_setaffinity(0, sizeof one, &one) < 0)
        die("sched_setaffinity", errno);
}

static void round_trips(const char *label, bool with_python)
{
    double l[RUNS], r[RUNS], ratio[RUNS], py[RUNS];
    for (int i = 0; i < RUNS; i++) {
        if (i % 2) {
            r[i] = rt_raw();
            l[i] = rt_llll();
        } else {
            l[i] = rt_llll();
            r[i] = rt_raw();
        }
        ratio[i] = l[i] / r[i];
    }
    double ml = median(l, RUNS), mr = median(r, RUNS), mq = median(ratio, RUNS);
    printf("(a) 16-byte round trip, %s: llll %.1f us, raw %.1f us, llll/raw time %.3f (target <= 1.15)\n",
           label, ml * 1e6, mr * 1e6, mq);
    if (!with_python)
        return;
    int n = 0;
    for (int i = 0; i < 3; i++) {
        double t = rt_python();
        if (t > 0)
            py[n++] = t;
    }
    if (n == 0) {
        printf("(c) python3 multiprocessing.Pipe, %s: not run (no python3?)\n", label);
        return;
    }
    double mp = median(py, n);
    printf("(c) python3 multiprocessing.Pipe, %s: %.1f us per round trip, %.2fx llll's time\n",
           label, mp * 1e6, mp / ml);
}

/* ------------------------------------------------------------ (b) bulk */

static double bulk_llll(void)
{
    llll_sbc *a, *b;
    int rc = llll_sbc_pair(&a, &b);
    if (rc)
        die("llll_sbc_pair", rc);
    pid_t pid = fork();
    if (pid < 0)
        die("fork", errno);
    if (pid == 0) {
        llll_sbc_close(a);
        llll_buf f = LLLL_BUF_INIT;
        for (int i = 0; i < BIG_FRAMES; i++)
            if (llll_sbc_recv(b, &f, -1) != 0 || f.len != BIG)
                _exit(2);
        _exit(llll_sbc_send(b, "k", 1) == 0 ? 0 : 3);
    }
    llll_sbc_close(b);
    unsigned char *data = calloc(1, BIG);
    llll_buf ack = LLLL_BUF_INIT;
    double t0 = now();
    for (int i = 0; i < BIG_FRAMES; i++)
        if ((rc = llll_sbc_send(a, data, BIG)))
            die("llll send", rc);
    if ((rc = llll_sbc_recv(a, &ack, -1)))
        die("llll ack", rc);
    double t = now() - t0;
    llll_sbc_close(a);
    llll_buf_free(&ack);
    free(data);
    reap(pid);
    return (double)BIG * BIG_FRAMES / t;
}

static double bulk_raw(void)
{
    int sv[2];
    raw_pair(sv);
    pid_t pid = fork();
    if (pid < 0)
        die("fork", errno);
    if (pid == 0) {
        close(sv[0]);
        unsigned char *buf = malloc(BIG), hdr[4];
        for (int i = 0; i < BIG_FRAMES; i++)
            if (raw_read_all(sv[1], hdr, 4) || raw_read_all(sv[1], buf, BIG))
                _exit(2);
        _exit(write(sv[1], "k", 1) == 1 ? 0 : 3);
    }
    close(sv[1]);
    unsigned char *data = calloc(1, BIG), hdr[4] = { 1, 0, 0, 0 };
    double t0 = now();
    for (int i = 0; i < BIG_FRAMES; i++) {
        struct iovec iov[2] = { { hdr, 4 }, { data, BIG } };
        if (raw_writev_all(sv[0], iov, 2))
            die("raw write", errno);
    }
    char k;
    if (raw_read_all(sv[0], &k, 1))
        die("raw ack", errno);
    double t = now() - t0;
    close(sv[0]);
    free(data);
    reap(pid);
    return (double)BIG * BIG_FRAMES / t;
}

static void bulk(const char *label)
{
    double l[RUNS], r[RUNS], ratio[RUNS];
    for (int i = 0; i < RUNS; i++) {
        if (i % 2) {
            r[i] = bulk_raw();
            l[i] = bulk_llll();
        } else {
            l[i] = bulk_llll();
            r[i] = bulk_raw();
        }
        ratio[i] = l[i] / r[i];
    }
    printf("(b) 16 MiB frames one way, %s: llll %.2f GB/s, raw %.2f GB/s, llll/raw throughput %.3f (target >= 0.9)\n",
           label, median(l, RUNS) / 1e9, median(r, RUNS) / 1e9, median(ratio, RUNS));
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("llll_sbc vs hand-written socketpair code; medians of %d alternating runs, %d round trips each\n",
           RUNS, TRIPS);
    round_trips("across CPUs", true);
    bulk("across CPUs");
    cpu_set_t saved;
    pin(0, &saved);
    round_trips("pinned to CPU 0", true);
    bulk("pinned to CPU 0");
    sched_setaffinity(0, sizeof saved, &saved);
    return 0;
}
