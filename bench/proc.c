/* bench/proc.c - llll_proc against hand-written code, same run.
 *
 * (a) Lines of `seq 1 5000000`: llll_proc with a counting on_stdout vs a
 *     hand-written pipe + posix_spawn + read(64 KiB) + memchr loop. Ratio of
 *     throughputs (target >= 0.8).
 * (b) Spawn + join of /bin/true from a parent that touched 1 GiB of heap:
 *     llll_proc vs posix_spawn + waitpid (target: time ratio <= 1.1), the
 *     same with die_with_parent (the reader thread spawns), and fork + exec
 *     + waitpid for contrast (it copies the page tables).
 * (c) Python's subprocess doing (a) and (b) (same 1 GiB), for reference.
 * The sides alternate; each figure is the median of 5 runs (3 for Python),
 * (b) of 21 runs of 20 spawns, with the median of the ratios of each run's
 * pair as well (on a loaded machine it drifts less than the ratio of the
 * medians).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "llll.h"
#include "bench.h"

extern char **environ;

#define RUNS 5
#define LINES 5000000L
#define SPAWN_RUNS 21   /* short runs, alternating: load drifts less within one */
#define SPAWNS 20
#define FORKS 1
#define HEAP ((size_t)1 << 30)

static void die(const char *what, int rc)
{
    fprintf(stderr, "bench/proc: %s: %s\n", what, llll_strerror(rc));
    exit(1);
}

/* ------------------------------------------------------------ (a) lines */

static const char *const seq_argv[] = {"seq", "1", "5000000", NULL};

static void count_line(void *u, const char *line, size_t len)
{
    (void)line;
    (void)len;
    (*(long *)u)++;
}

static double llll_lines(void)
{
    long n = 0;
    llll_proc_opts o = {.on_stdout = count_line, .userdata = &n};
    double t = now();
    llll_proc *p;
    int rc = llll_proc_start(&p, seq_argv, &o);
    if (rc < 0)
        die("llll_proc_start seq", rc);
    llll_proc_join(p, -1, NULL);
    t = now() - t;
    llll_proc_free(p);
    if (n != LINES)
        die("llll: wrong line count", -EPROTO);
    return (double)n / t;
}

static double hand_lines(void)
{
    long n = 0;
    double t = now();
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) < 0)
        die("pipe2", -errno);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
    pid_t pid;
    int rc = posix_spawnp(&pid, "seq", &fa, NULL, (char *const *)seq_argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0)
        die("posix_spawnp seq", -rc);
    close(fds[1]);
    static char buf[64 * 1024];
    ssize_t r;
    while ((r = read(fds[0], buf, sizeof buf)) != 0) {
        if (r < 0) {
            if (errno == EINTR)
                continue;
            die("read", -errno);
        }
        const char *c = buf, *end = buf + r;
        while ((c = memchr(c, '\n', (size_t)(end - c))) != NULL) {
            n++;
            c++;
        }
    }
    close(fds[0]);
    waitpid(pid, NULL, 0);
    t = now() - t;
    if (n != LINES)
        die("hand: wrong line count", -EPROTO);
    return (double)n / t;
}

/* ------------------------------------------------------------ (b) spawn */

static const char *const true_argv[] = {"/bin/true", NULL};

static double llll_spawns_with(const llll_proc_opts *o)
{
    double t = now();
    for (int i = 0; i < SPAWNS; i++) {
        llll_proc *p;
        int rc = llll_proc_start(&p, true_argv, o);
        if (rc < 0)
            die("llll_proc_start /bin/true", rc);
        llll_proc_join(p, -1, NULL);
        llll_proc_free(p);
    }
    return (now() - t) / SPAWNS;
}

static double llll_spawns(void)
{
    return llll_spawns_with(NULL);
}

static double llll_spawns_dwp(void)
{
    llll_proc_opts o = {.die_with_parent = true};
    return llll_spawns_with(&o);
}

static double posix_spawns(void)
{
    double t = now();
    for (int i = 0; i < SPAWNS; i++) {
        pid_t pid;
        int rc = posix_spawn(&pid, true_argv[0], NULL, NULL, (char *const *)true_argv, environ);
        if (rc != 0)
            die("posix_spawn", -rc);
        waitpid(pid, NULL, 0);
    }
    return (now() - t) / SPAWNS;
}

static double fork_execs(void)
{
    double t = now();
    for (int i = 0; i < FORKS; i++) {
        pid_t pid = fork();
        if (pid == 0) {
            execv(true_argv[0], (char *const *)true_argv);
            _exit(127);
        }
        if (pid < 0)
            die("fork", -errno);
        waitpid(pid, NULL, 0);
    }
    return (now() - t) / FORKS;
}

/* ----------------------------------------------------------- (c) Python */

static const char py_lines[] =
    "import statistics, subprocess, time\n"
    "def once():\n"
    "    t = time.perf_counter()\n"
    "    p = subprocess.Popen(['seq', '1', '5000000'], stdout=subprocess.PIPE)\n"
    "    n = sum(1 for _ in p.stdout)\n"
    "    p.wait()\n"
    "    assert n == 5000000\n"
    "    return n / (time.perf_counter() - t)\n"
    "print(statistics.median(once() for _ in range(3)))\n";

static const char py_spawn[] =
    "import statistics, subprocess, time\n"
    "heap = b'x' * (1 << 30)\n"
    "def once():\n"
    "    t = time.perf_counter()\n"
    "    for _ in range(50):\n"
    "        subprocess.run(['/bin/true'])\n"
    "    return (time.perf_counter() - t) / 50\n"
    "print(statistics.median(once() for _ in range(3)))\n";

static void keep_number(void *u, const char *line, size_t len)
{
    char tmp[64];
    if (len >= sizeof tmp)
        return;
    memcpy(tmp, line, len);
    tmp[len] = '\0';
    *(double *)u = strtod(tmp, NULL);
}

/* Runs python3 -c code: its one printed number, or -1 without python3. */
static double python_run(const char *code)
{
    const char *argv[] = {"python3", "-c", code, NULL};
    double v = -1;
    llll_proc_opts o = {.on_stdout = keep_number, .userdata = &v};
    llll_proc *p;
    if (llll_proc_start(&p, argv, &o) < 0)
        return -1;
    int st;
    llll_proc_join(p, -1, &st);
    llll_proc_free(p);
    return st == 0 ? v : -1;
}

int main(void)
{
    double a[RUNS], b[RUNS];

    /* (a) */
    for (int i = 0; i < RUNS; i++) {
        b[i] = hand_lines();
        a[i] = llll_lines();
    }
    double lines_llll = median(a, RUNS), lines_hand = median(b, RUNS);
    printf("(a) lines of `seq 1 5000000`, median of %d\n", RUNS);
    printf("    hand-written pipe+posix_spawn+read+memchr  %7.1f M lines/s\n", lines_hand / 1e6);
    printf("    llll_proc, counting on_stdout              %7.1f M lines/s\n", lines_llll / 1e6);
    printf("    ratio llll/hand                            %7.2f   (target >= 0.8)\n", lines_llll / lines_hand);
    fflush(stdout);

    /* (b) */
    char *heap = malloc(HEAP);
    if (!heap)
        die("malloc 1 GiB", -ENOMEM);
    memset(heap, 1, HEAP);
    enum { N = SPAWN_RUNS };
    double sa[N], sb[N], sc[N], sd[N], ra[N], rd[N];
    for (int i = 0; i < N; i++) {
        sb[i] = posix_spawns();
        sa[i] = llll_spawns();
        sd[i] = llll_spawns_dwp();
        sc[i] = fork_execs();
        ra[i] = sa[i] / sb[i];
        rd[i] = sd[i] / sb[i];
    }
    double sp_llll = median(sa, N), sp_posix = median(sb, N), sp_fork = median(sc, N);
    double sp_dwp = median(sd, N), pair_llll = median(ra, N), pair_dwp = median(rd, N);
    printf("(b) spawn + join of /bin/true, parent with 1 GiB touched, median of %d runs\n", N);
    printf("    posix_spawn + waitpid                      %7.0f us\n", sp_posix * 1e6);
    printf("    llll_proc start + join + free              %7.0f us\n", sp_llll * 1e6);
    printf("    the same with die_with_parent              %7.0f us\n", sp_dwp * 1e6);
    printf("    fork + exec + waitpid                      %7.0f us\n", sp_fork * 1e6);
    printf("    ratio llll/posix_spawn                     %7.2f   (target <= 1.1)\n", sp_llll / sp_posix);
    printf("      median of the runs' own ratios           %7.2f\n", pair_llll);
    printf("    ratio die_with_parent/posix_spawn          %7.2f\n", sp_dwp / sp_posix);
    printf("      median of the runs' own ratios           %7.2f\n", pair_dwp);
    printf("    ratio fork/posix_spawn                     %7.2f\n", sp_fork / sp_posix);
    fflush(stdout);
    free(heap);

    /* (c) each Python process takes the median of 3 runs itself */
    double py_l = python_run(py_lines), py_s = python_run(py_spawn);
    if (py_l <= 0 || py_s <= 0) {
        printf("(c) python3 not available: skipped\n");
        return 0;
    }
    printf("(c) Python subprocess, median of 3\n");
    printf("    lines: `for line in p.stdout`              %7.1f M lines/s = %.2fx hand, %.2fx llll\n",
           py_l / 1e6, py_l / lines_hand, py_l / lines_llll);
    printf("    spawn: subprocess.run, 1 GiB parent        %7.0f us = %.2fx posix_spawn, %.2fx llll\n",
           py_s * 1e6, py_s / sp_posix, py_s / sp_llll);
    return 0;
}
