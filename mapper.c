/* mapper.c - a thread-pool mapper (llll_mapper), a bounded FIFO (llll_fifo)
 * and a generator that fills one from threads (llll_gen). */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/syscall.h>
#endif

#include "llll.h"

/* A claim from a job's shared counter takes at most remaining / (SHARE_K *
 * nthread) items, so every thread still finds work near the end; within that,
 * it is sized to last about CLAIM_NS at the rate the thread's last range ran,
 * growing at most twofold per claim. 50 us makes the cost of a claim (a lock,
 * two clock reads) noise, and makes every claim of items costing more than
 * that a single item, as with one item per hand-out. */
#define SHARE_K 2
#define CLAIM_NS 50000.0
#define MAX_THREADS 4096

static int online_cpus(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > MAX_THREADS ? MAX_THREADS : (int)n;
}

/* Starts a thread with every signal blocked, so the user's asynchronous
 * signals are delivered to the user's threads, never to ours. */
static int start_thread(pthread_t *t, void *(*body)(void *), void *arg)
{
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(t, NULL, body, arg);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return -rc;
}

/* ------------------------------------------------------------------ mapper */

/* The schedule. Each thread working on a job owns a range of items [pos, end)
 * in a slot, and runs it from the front, one item at a time. A thread with an
 * empty range claims the next one from the job's counter; once the counter is
 * spent, it steals the back half of the unstarted items of the slot that has
 * the most. A slow item thus delays only itself: the rest of its range goes
 * to threads that are free.
 *
 * An owner starts item i by publishing pos = i + 1, then reading end: i runs
 * only if i < end. A thief (holding the job's lock, so thieves and claims are
 * serialized) lowers end to cut, then reads pos. This is Dekker's pattern:
 * each side must see the other's write, which needs a store-load barrier
 * between the write and the read. On the owner's side that barrier would cost
 * as much as an item of a few nanoseconds, so on Linux the thief pays for
 * both: membarrier(PRIVATE_EXPEDITED) runs a full barrier on every thread of
 * the process, after which every pos the owner published is visible to the
 * thief, and every end the owner reads is the thief's. The owner needs only a
 * compiler barrier. Where membarrier is missing (other systems, kernels before
 * 4.14, a seccomp filter), the four accesses are seq_cst, which orders them.
 *
 * After the barrier, pos > cut means the owner took pos - 1 (or is deciding
 * on it from the old end): the thief gives [cut, pos) back by setting end =
 * pos. An owner that reads i >= end rereads end under the job's lock before
 * giving i up, so it sees that correction. */

struct slot {
    atomic_size_t pos;          /* 1 + the item the owner started last, or its range's start */
    atomic_size_t end;          /* lowered by thieves */
    struct slot *next;          /* in job.slots */
};

/* One call of llll_mapper_map. It lives on the caller's stack: it is linked
 * into the mapper's list while it may have unstarted items, and the caller
 * returns only once it is unlinked and no worker is attached to it. */
struct job {
    pthread_mutex_t mu;         /* taken: the counter, the slot list, every change of a range */
    size_t taken;               /* items [0, taken) were handed out to slots */
    size_t n;
    size_t div;                 /* SHARE_K * nthread */
    bool asym;                  /* thieves use membarrier; owners a compiler barrier */
    struct slot *slots;
    llll_map_fn *fn;
    void *ctx;
    /* Under the mapper's lock: */
    struct job *prev, *nextjob; /* in m->jobs while linked */
    bool linked;
    int users;                  /* threads working on it, the caller included */
    bool waiting;               /* the caller sleeps on cv until users == 0 */
    size_t err_i;               /* lowest failing index so far (SIZE_MAX: none) */
    int err;
    pthread_cond_t cv;
};

struct llll_mapper {
    pthread_mutex_t mu;
    pthread_cond_t work;        /* a job was linked, or stop */
    struct job *jobs;           /* newest first */
    int idle;                   /* workers asleep on work */
    bool stop;
    bool asym;                  /* membarrier(PRIVATE_EXPEDITED) is registered */
    int nthread;                /* workers + the caller of map */
    int nworker;
    pthread_t *th;
};

#if defined(__linux__) && defined(SYS_membarrier)
/* The values of linux/membarrier.h, which not every libc's headers carry. */
enum { MB_QUERY = 0, MB_PRIVATE_EXPEDITED = 1 << 3, MB_REGISTER_PRIVATE_EXPEDITED = 1 << 4 };

static bool membarrier_register(void)
{
    long cmds = syscall(SYS_membarrier, MB_QUERY, 0, 0);
    return cmds > 0 && (cmds & MB_PRIVATE_EXPEDITED) &&
           syscall(SYS_membarrier, MB_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0;
}

static bool membarrier_all(void)
{
    return syscall(SYS_membarrier, MB_PRIVATE_EXPEDITED, 0, 0) == 0;
}
#else
static bool membarrier_register(void) { return false; }
static bool membarrier_all(void) { return false; }
#endif

static size_t slot_left(struct slot *s)
{
    size_t p = atomic_load_explicit(&s->pos, memory_order_relaxed);
    size_t e = atomic_load_explicit(&s->end, memory_order_relaxed);
    return e > p ? e - p : 0;
}

static void slot_set(struct slot *s, size_t lo, size_t hi)
{
    atomic_store_explicit(&s->pos, lo, memory_order_relaxed);
    atomic_store_explicit(&s->end, hi, memory_order_relaxed);
}

/* With j->mu held: moves the back half of the unstarted items of the slot
 * with the most into self. False when no slot has any. */
static bool steal(struct job *j, struct slot *self)
{
    for (;;) {
        struct slot *v = NULL;
        size_t most = 0;
        for (struct slot *s = j->slots; s; s = s->next) {
            size_t left = s == self ? 0 : slot_left(s);
            if (left > most) {
                most = left;
                v = s;
            }
        }
        if (!v)
            return false;
        size_t e = atomic_load_explicit(&v->end, memory_order_relaxed);
        size_t cut = e - (most + 1) / 2;
        atomic_store(&v->end, cut);
        if (j->asym && !membarrier_all()) {
            /* Cannot happen once registered. Without the barrier nothing can
             * be taken safely: the owner keeps its range and runs it. */
            atomic_store(&v->end, e);
            return false;
        }
        size_t p = atomic_load(&v->pos);
        if (p > cut) {
            cut = p < e ? p : e;
            atomic_store_explicit(&v->end, cut, memory_order_relaxed);
        }
        if (cut < e) {
            slot_set(self, cut, e);
            return true;
        }
        /* The owner had gone past every item we looked at: look again (the
         * pos we now read is at least this one, so v is not picked twice). */
    }
}

/* With j->mu held: gives self its next range, at most want items from the
 * counter, else stolen. False when no item is left unstarted anywhere. */
static bool next_range(struct job *j, struct slot *self, size_t want)
{
    if (j->taken < j->n) {
        size_t c = (j->n - j->taken) / j->div;
        if (c == 0)
            c = 1;
        if (c > want)
            c = want;
        slot_set(self, j->taken, j->taken + c);
        j->taken += c;
        return true;
    }
    return steal(j, self);
}

/* The per-item loops below cost ~1.4 ns an item, and where they land moved
 * bench/mapper's llll/OpenMP ratio between ~0.75 and ~1.35 for the same
 * source (on x86, a loop with a jump that ends on a 32-byte boundary runs
 * from the legacy decoders). So they are small functions of their own, with
 * nothing else live in the loop, aligned and never inlined, which keeps the
 * layout the same whatever is linked around them. */
#if defined(__GNUC__)
#define HOT __attribute__((aligned(64), noinline))
#else
#define HOT
#endif

/* From item i, runs the items of s while i < end and fn returns 0. Returns
 * the index it stopped at: *rc is that item's failure, or 0 when the index
 * reached end. The owner's side of the protocol with membarrier: publishing
 * pos needs only a compiler barrier. */
HOT static size_t run_asym(struct slot *s, size_t i, llll_map_fn *fn, void *ctx, int *rc)
{
    for (;; i++) {
        atomic_store_explicit(&s->pos, i + 1, memory_order_relaxed);
        atomic_signal_fence(memory_order_seq_cst);
        if (i >= atomic_load_explicit(&s->end, memory_order_relaxed))
            break;
        int r = fn(ctx, i);
        if (r != 0) {
            *rc = r;
            return i;
        }
    }
    *rc = 0;
    return i;
}

/* The same where thieves have no membarrier. */
HOT static size_t run_sym(struct slot *s, size_t i, llll_map_fn *fn, void *ctx, int *rc)
{
    for (;; i++) {
        atomic_store(&s->pos, i + 1);
        if (i >= atomic_load(&s->end))
            break;
        int r = fn(ctx, i);
        if (r != 0) {
            *rc = r;
            return i;
        }
    }
    *rc = 0;
    return i;
}

/* Runs the items of s from i until the end of its range, recording the
 * lowest failure in err_i, err. Returns the index it stopped at. */
static size_t run_slot(struct slot *s, size_t i, bool asym, llll_map_fn *fn, void *ctx,
                       size_t *err_i, int *err)
{
    for (;;) {
        int rc;
        i = asym ? run_asym(s, i, fn, ctx, &rc) : run_sym(s, i, fn, ctx, &rc);
        if (rc == 0)
            return i;
        if (i < *err_i) {
            *err_i = i;
            *err = rc;
        }
        i++;
    }
}

/* Runs the range of s from lo until a thief's end stops it; records the
 * lowest failure in err_i, err. Returns the index it stopped at, with j->mu
 * held (the caller takes its next range under it). */
static size_t run_range(struct job *j, struct slot *s, size_t i, size_t *err_i, int *err)
{
    for (;;) {
        i = run_slot(s, i, j->asym, j->fn, j->ctx, err_i, err);
        pthread_mutex_lock(&j->mu);
        if (i >= atomic_load_explicit(&s->end, memory_order_relaxed))
            return i;
        /* A thief gave i back: publishing pos = i + 1 again changes nothing
         * for thieves, and now i < end. */
        pthread_mutex_unlock(&j->mu);
    }
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* The next claim after k items ran in ns: what lasts CLAIM_NS at that rate,
 * at most twice the last claim, at least 1. */
static size_t claim_size(size_t last, size_t k, uint64_t ns)
{
    if (k == 0)
        return last;            /* thieves took the whole range: no measure */
    double fit = ns > 0 ? (double)k * CLAIM_NS / (double)ns : 2.0 * (double)last;
    double grow = 2.0 * (double)last;
    double c = fit < grow ? fit : grow;
    return c < 1 ? 1 : c > (double)(SIZE_MAX / 4) ? SIZE_MAX / 4 : (size_t)c;
}

/* Runs items of j until none is left unstarted; records the lowest failure
 * in err_i, err. */
static void work_on(struct job *j, size_t *err_i, int *err)
{
    struct slot self;
    slot_set(&self, 0, 0);
    size_t want = 1;
    pthread_mutex_lock(&j->mu);
    self.next = j->slots;
    j->slots = &self;
    while (next_range(j, &self, want)) {
        size_t lo = atomic_load_explicit(&self.pos, memory_order_relaxed);
        pthread_mutex_unlock(&j->mu);
        uint64_t t = now_ns();
        size_t hi = run_range(j, &self, lo, err_i, err);
        want = claim_size(want, hi - lo, now_ns() - t);
    }
    struct slot **pp = &j->slots;
    while (*pp != &self)
        pp = &(*pp)->next;
    *pp = self.next;
    pthread_mutex_unlock(&j->mu);
}

static void unlink_job(llll_mapper *m, struct job *j)
{
    if (!j->linked)
        return;
    if (j->prev)
        j->prev->nextjob = j->nextjob;
    else
        m->jobs = j->nextjob;
    if (j->nextjob)
        j->nextjob->prev = j->prev;
    j->linked = false;
}

/* With m->mu held: a thread has finished with j (every item it started ran,
 * and no item is left unstarted). */
static void detach(llll_mapper *m, struct job *j, size_t err_i, int err)
{
    unlink_job(m, j);
    if (err_i < j->err_i) {
        j->err_i = err_i;
        j->err = err;
    }
    /* The caller may return (and its stack frame go) as soon as m->mu is
     * released: j must not be touched after this. */
    if (--j->users == 0 && j->waiting)
        pthread_cond_signal(&j->cv);
}

static void *worker(void *arg)
{
    llll_mapper *m = arg;
    pthread_mutex_lock(&m->mu);
    while (!m->stop) {
        struct job *j = m->jobs;
        if (!j) {
            m->idle++;
            pthread_cond_wait(&m->work, &m->mu);
            m->idle--;
            continue;
        }
        j->users++;
        pthread_mutex_unlock(&m->mu);
        size_t err_i = SIZE_MAX;
        int err = 0;
        work_on(j, &err_i, &err);
        pthread_mutex_lock(&m->mu);
        detach(m, j, err_i, err);
    }
    pthread_mutex_unlock(&m->mu);
    return NULL;
}

static void stop_workers(llll_mapper *m, int started)
{
    pthread_mutex_lock(&m->mu);
    m->stop = true;
    pthread_cond_broadcast(&m->work);
    pthread_mutex_unlock(&m->mu);
    for (int i = 0; i < started; i++)
        pthread_join(m->th[i], NULL);
}

int llll_mapper_new(llll_mapper **out, int nthread)
{
    if (!out)
        return -EINVAL;
    *out = NULL;
    if (nthread < 0 || nthread > MAX_THREADS)
        return -EINVAL;
    if (nthread == 0)
        nthread = online_cpus();
    llll_mapper *m = calloc(1, sizeof *m);
    if (!m)
        return -ENOMEM;
    m->nthread = nthread;
    m->th = calloc((size_t)nthread, sizeof *m->th);
    if (!m->th) {
        free(m);
        return -ENOMEM;
    }
    /* Registered here, not once per process: a forked child registers anew. */
    m->asym = nthread > 1 && membarrier_register();
    pthread_mutex_init(&m->mu, NULL);
    pthread_cond_init(&m->work, NULL);
    for (int i = 0; i < nthread - 1; i++) {
        int rc = start_thread(&m->th[i], worker, m);
        if (rc < 0) {
            stop_workers(m, i);
            pthread_cond_destroy(&m->work);
            pthread_mutex_destroy(&m->mu);
            free(m->th);
            free(m);
            return rc;
        }
        m->nworker++;
    }
    *out = m;
    return 0;
}

int llll_mapper_map(llll_mapper *m, size_t n, llll_map_fn *fn, void *ctx)
{
    if (!m || !fn)
        return -EINVAL;
    if (n == 0)
        return 0;

    /* A single item, or a mapper without workers: one range, no thief, no
     * lock and no wake-up. */
    if (m->nworker == 0 || n == 1) {
        struct slot alone;
        slot_set(&alone, 0, n);
        size_t err_i = SIZE_MAX;
        int err = 0;
        run_slot(&alone, 0, true, fn, ctx, &err_i, &err);
        return err;
    }

    struct job j;
    pthread_mutex_init(&j.mu, NULL);
    j.taken = 0;
    j.n = n;
    j.div = (size_t)SHARE_K * (size_t)m->nthread;
    j.asym = m->asym;
    j.slots = NULL;
    j.fn = fn;
    j.ctx = ctx;
    j.users = 1;
    j.waiting = false;
    j.err_i = SIZE_MAX;
    j.err = 0;
    pthread_cond_init(&j.cv, NULL);

    /* Newest first, so a nested map (whose caller holds an item of an outer
     * job) gets help before older jobs, whose callers are working on them
     * anyway. */
    pthread_mutex_lock(&m->mu);
    j.prev = NULL;
    j.nextjob = m->jobs;
    if (m->jobs)
        m->jobs->prev = &j;
    m->jobs = &j;
    j.linked = true;
    /* Wake no more sleepers than there are items for them. */
    if ((size_t)m->idle <= n - 1)
        pthread_cond_broadcast(&m->work);
    else
        for (size_t k = 0; k < n - 1; k++)
            pthread_cond_signal(&m->work);
    pthread_mutex_unlock(&m->mu);

    size_t err_i = SIZE_MAX;
    int err = 0;
    work_on(&j, &err_i, &err);

    pthread_mutex_lock(&m->mu);
    detach(m, &j, err_i, err);
    /* No item is left unstarted: wait only for items still running. */
    j.waiting = true;
    while (j.users > 0)
        pthread_cond_wait(&j.cv, &m->mu);
    err = j.err;
    pthread_mutex_unlock(&m->mu);
    pthread_cond_destroy(&j.cv);
    pthread_mutex_destroy(&j.mu);
    return err;
}

void llll_mapper_free(llll_mapper *m)
{
    if (!m)
        return;
    stop_workers(m, m->nworker);
    pthread_cond_destroy(&m->work);
    pthread_mutex_destroy(&m->mu);
    free(m->th);
    free(m);
}

/* -------------------------------------------------------------------- fifo */

struct llll_fifo {
    pthread_mutex_t mu;
    pthread_cond_t not_empty, not_full;
    void **ring;
    size_t cap, head, len;
    /* Used by llll_gen only. */
    bool closed;                /* put and get fail with -ECANCELED */
    bool eof;                   /* no more puts will come: get on empty -> LLLL_EOF */
};

static int fifo_init(llll_fifo *q, size_t capacity)
{
    if (capacity == 0 || capacity > SIZE_MAX / sizeof(void *))
        return -EINVAL;
    memset(q, 0, sizeof *q);
    q->ring = malloc(capacity * sizeof(void *));
    if (!q->ring)
        return -ENOMEM;
    q->cap = capacity;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&q->not_empty, &ca);
    pthread_cond_init(&q->not_full, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&q->mu, NULL);
    return 0;
}

static void fifo_destroy(llll_fifo *q)
{
    pthread_cond_destroy(&q->not_empty);
    pthread_cond_destroy(&q->not_full);
    pthread_mutex_destroy(&q->mu);
    free(q->ring);
}

static void deadline_in(struct timespec *ts, int timeout_ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += timeout_ms / 1000;
    ts->tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

/* With q->mu held: one wait on cv, bounded by the deadline when timeout_ms >= 0.
 * -ETIMEDOUT once the deadline passed. */
static int fifo_wait(llll_fifo *q, pthread_cond_t *cv, int timeout_ms, const struct timespec *dl)
{
    if (timeout_ms == 0)
        return -ETIMEDOUT;
    if (timeout_ms < 0) {
        pthread_cond_wait(cv, &q->mu);
        return 0;
    }
    return pthread_cond_timedwait(cv, &q->mu, dl) == ETIMEDOUT ? -ETIMEDOUT : 0;
}

int llll_fifo_new(llll_fifo **out, size_t capacity)
{
    if (!out)
        return -EINVAL;
    *out = NULL;
    llll_fifo *q = malloc(sizeof *q);
    if (!q)
        return -ENOMEM;
    int rc = fifo_init(q, capacity);
    if (rc < 0) {
        free(q);
        return rc;
    }
    *out = q;
    return 0;
}

int llll_fifo_put(llll_fifo *q, void *item, int timeout_ms)
{
    struct timespec dl;
    if (timeout_ms > 0)
        deadline_in(&dl, timeout_ms);
    pthread_mutex_lock(&q->mu);
    while (q->len == q->cap && !q->closed) {
        if (fifo_wait(q, &q->not_full, timeout_ms, &dl) < 0 && q->len == q->cap && !q->closed) {
            pthread_mutex_unlock(&q->mu);
            return -ETIMEDOUT;
        }
    }
    if (q->closed) {
        pthread_mutex_unlock(&q->mu);
        return -ECANCELED;
    }
    q->ring[(q->head + q->len) % q->cap] = item;
    q->len++;
    pthread_cond_signal(&q->not_empty);
    pthread_mutex_unlock(&q->mu);
    return 0;
}

int llll_fifo_get(llll_fifo *q, void **item, int timeout_ms)
{
    struct timespec dl;
    if (timeout_ms > 0)
        deadline_in(&dl, timeout_ms);
    pthread_mutex_lock(&q->mu);
    while (q->len == 0 && !q->eof && !q->closed) {
        if (fifo_wait(q, &q->not_empty, timeout_ms, &dl) < 0 && q->len == 0 && !q->eof && !q->closed) {
            pthread_mutex_unlock(&q->mu);
            return -ETIMEDOUT;
        }
    }
    int rc = 0;
    if (q->closed) {
        rc = -ECANCELED;
    } else if (q->len == 0) {
        rc = LLLL_EOF;
    } else {
        *item = q->ring[q->head];
        q->head = (q->head + 1) % q->cap;
        q->len--;
        pthread_cond_signal(&q->not_full);
    }
    pthread_mutex_unlock(&q->mu);
    return rc;
}

void llll_fifo_free(llll_fifo *q)
{
    if (!q)
        return;
    fifo_destroy(q);
    free(q);
}

/* --------------------------------------------------------------- generator */

struct llll_gen {
    llll_fifo q;                /* closed: free is stopping the threads */
    llll_gen_fn *fn;
    void *ctx;
    atomic_bool stop;
    int running;                /* threads not yet done, under q.mu */
    int nthread;
    pthread_t *th;
};

static void *producer(void *arg)
{
    llll_gen *g = arg;
    while (!atomic_load_explicit(&g->stop, memory_order_relaxed)) {
        void *item = g->fn(g->ctx);
        /* A put that fails was woken by llll_gen_free: the item is dropped. */
        if (!item || llll_fifo_put(&g->q, item, -1) < 0)
            break;
    }
    pthread_mutex_lock(&g->q.mu);
    if (--g->running == 0) {
        g->q.eof = true;
        pthread_cond_broadcast(&g->q.not_empty);
    }
    pthread_mutex_unlock(&g->q.mu);
    return NULL;
}

/* Wakes every thread blocked on the queue, makes them quit, joins them. */
static void stop_producers(llll_gen *g, int started)
{
    atomic_store(&g->stop, true);
    pthread_mutex_lock(&g->q.mu);
    g->q.closed = true;
    pthread_cond_broadcast(&g->q.not_full);
    pthread_cond_broadcast(&g->q.not_empty);
    pthread_mutex_unlock(&g->q.mu);
    for (int i = 0; i < started; i++)
        pthread_join(g->th[i], NULL);
}

int llll_gen_new(llll_gen **out, llll_gen_fn *fn, void *ctx, int nthread, size_t capacity)
{
    if (!out)
        return -EINVAL;
    *out = NULL;
    if (!fn || nthread < 0 || nthread > MAX_THREADS)
        return -EINVAL;
    if (nthread == 0)
        nthread = online_cpus();
    llll_gen *g = calloc(1, sizeof *g);
    if (!g)
        return -ENOMEM;
    int rc = fifo_init(&g->q, capacity);
    if (rc < 0) {
        free(g);
        return rc;
    }
    g->th = calloc((size_t)nthread, sizeof *g->th);
    if (!g->th) {
        fifo_destroy(&g->q);
        free(g);
        return -ENOMEM;
    }
    g->fn = fn;
    g->ctx = ctx;
    atomic_init(&g->stop, false);
    g->running = nthread;
    for (int i = 0; i < nthread; i++) {
        rc = start_thread(&g->th[i], producer, g);
        if (rc < 0) {
            stop_producers(g, i);
            fifo_destroy(&g->q);
            free(g->th);
            free(g);
            return rc;
        }
        g->nthread++;
    }
    *out = g;
    return 0;
}

int llll_gen_get(llll_gen *g, void **item, int timeout_ms)
{
    return llll_fifo_get(&g->q, item, timeout_ms);
}

void llll_gen_free(llll_gen *g)
{
    if (!g)
        return;
    stop_producers(g, g->nthread);
    fifo_destroy(&g->q);
    free(g->th);
    free(g);
}
