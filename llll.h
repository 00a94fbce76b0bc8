/*
 * llll.h - perform your tasks in parallel with ease.
 *
 * The C form of the Python library llll: child processes whose lines reach a
 * callback, framed channels to child programs, pools of worker processes, and a
 * thread-pool mapper with a bounded FIFO and a generator.
 *
 * Conventions that hold for every function below:
 * - A function that can fail returns int: 0 on success, a negative errno value
 *   on failure (-ENOENT, -EMSGSIZE, ...). llll_strerror() names any of them.
 *   LLLL_EOF is outside every errno range: the peer closed a channel cleanly,
 *   at a frame boundary.
 * - Constructors take an out-pointer first; on failure *out is set to NULL.
 *   The matching _free (or _close) accepts NULL, stops whatever the object
 *   still runs (kills, joins) and never hangs.
 * - Options come as a struct by pointer: NULL, a zeroed struct, or designated
 *   initialisers mean the documented defaults.
 * - timeout_ms: -1 waits forever, 0 does not wait. A wait that runs out returns
 *   -ETIMEDOUT and changes nothing. Every timeout field of an options struct
 *   accepts -1 for forever too.
 * - The library installs no signal handler, needs no global initialisation,
 *   never lets SIGPIPE reach the process, and creates every file descriptor
 *   close-on-exec, so a child started by one thread never inherits another
 *   thread's pipes. It prints nothing unless asked to (verbose, llll_print_line).
 *
 * POSIX.1-2008 plus pipe2/SOCK_CLOEXEC/dup3; libc and pthreads only.
 *
 * Build knobs (defines when compiling llll.c; none is needed anywhere):
 * - LLLL_SPAWN_FORK: start programs with fork + exec instead of the default
 *   vfork-style clone (which copies nothing of the parent). Chosen by itself
 *   under ThreadSanitizer (gcc's __SANITIZE_THREAD__ or clang's
 *   __has_feature(thread_sanitizer)), which cannot follow a clone child, and
 *   off Linux. A fork costs more the larger the parent is.
 * - LLLL_NO_PIDFD: do not use pidfd_open (Linux 5.3); the reader thread then
 *   notices a child's exit by polling with a back-off of up to 100 ms.
 * Either way an exec error is reported the same (also under qemu-user).
 */
#ifndef LLLL_H
#define LLLL_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- version */

#define LLLL_VERSION_MAJOR 0
#define LLLL_VERSION_MINOR 2
#define LLLL_VERSION_PATCH 0

/* The same as one number for #if: (MAJOR << 16) | (MINOR << 8) | PATCH, so
 * "#if LLLL_VERSION_NUMBER >= 0x000200" holds from 0.2.0 on. */
#define LLLL_VERSION_NUMBER \
    ((LLLL_VERSION_MAJOR << 16) | (LLLL_VERSION_MINOR << 8) | LLLL_VERSION_PATCH)

/* The version the library was built as, "MAJOR.MINOR.PATCH" (static storage).
 * Never fails. Thread-safety: any thread. */
const char *llll_version(void);

/* ------------------------------------------------------------------ errors */

/* The peer closed the channel cleanly, between two frames. Below every errno. */
#define LLLL_EOF (-100000)

/* A short English name for any return value of this library: 0, a negative
 * errno, or LLLL_EOF. Never NULL; the string has static storage. Never
 * fails. Thread-safety: any thread. */
const char *llll_strerror(int rc);

/* ------------------------------------------------------ buffers and codecs */

/* A growable byte buffer owned by the caller. Receives write into it, growing
 * it as needed (cap only grows), so a loop that reuses one buffer allocates
 * nothing per message once it is large enough. len is the payload's length.
 * Not thread-safe: one buffer per thread. */
typedef struct llll_buf {
    void *data;
    size_t len;
    size_t cap;
} llll_buf;
#define LLLL_BUF_INIT {0}

/* Frees data and zeroes the struct (which stays usable). Accepts NULL.
 * Thread-safety: one buffer per thread, as above. */
void llll_buf_free(llll_buf *b);

/* For codecs and pool functions that fill a buffer: makes cap at least need
 * (growing geometrically, contents and len kept).
 * Errors:
 * -ENOMEM   no memory for need bytes: b is as it was (still valid).
 * -EINVAL   b is NULL.
 * Thread-safety: one buffer per thread, as above. */
int llll_buf_reserve(llll_buf *b, size_t need);

/* Replaces b's contents with a copy of len bytes at data
 * (len may be 0; data may point into b's own bytes), growing b as needed.
 * Errors:
 * -ENOMEM   no memory for len bytes: b is as it was (still valid).
 * -EINVAL   b is NULL, or data is NULL with len > 0.
 * Thread-safety: one buffer per thread, as above. */
int llll_buf_set(llll_buf *b, const void *data, size_t len);

/* The caller's serialiser. encode appends nothing: it sets out->len to the
 * encoded size (growing out with llll_buf_reserve, say). decode makes a
 * new object from len bytes and stores it in *obj. Both return 0 or a negative
 * errno, which the _obj functions pass on. The library never looks inside a
 * payload. */
typedef struct llll_codec {
    int (*encode)(void *ctx, const void *obj, llll_buf *out);
    int (*decode)(void *ctx, const void *data, size_t len, void **obj);
    void *ctx;
} llll_codec;

/* ------------------------------------------------------- channels (sbc.c) */

/*
 * A channel carries frames: a 4-byte big-endian unsigned length, then that
 * many bytes (Python llll's framing, so a peer in any language can speak it).
 * It runs over a connected stream socket or over two one-way fds.
 *
 * Thread-safety: send and recv may each be called from several threads at
 * once; frames never interleave. One thread may send while another receives.
 * A peer that died makes send/recv return -EPIPE or -ECONNRESET, never a
 * signal.
 */
typedef struct llll_sbc llll_sbc;

/* Default largest frame either way: 64 MiB. */
#define LLLL_SBC_MAX_FRAME_DEFAULT ((size_t)64 << 20)

/* Wraps rfd (read side) and wfd (write side), which may be the same socket.
 * The channel owns them from now on (close closes them, also on failure).
 * They are used as they are: blocking or not, their flags are not changed
 * (a channel over pipes has no shutdown; see llll_sbc_shutdown).
 * Errors (the fds that are open are closed, *out is NULL):
 * -EBADF    rfd or wfd is not an open fd.
 * -ENOMEM   no memory for the channel.
 * -EINVAL   out is NULL.
 * Thread-safety: any thread. */
int llll_sbc_open(llll_sbc **out, int rfd, int wfd);

/* Two connected channels over a fresh close-on-exec AF_UNIX socketpair,
 * kept off fds 0-2 (so a process with stdio closed does not printf into
 * one), with socket buffers of 4 MiB asked for (the kernel may cap them),
 * which makes large frames several times faster.
 * Errors (*a and *b are NULL, no fd is left open):
 * -EMFILE, -ENFILE  out of fds: close some, or raise RLIMIT_NOFILE.
 * -ENOMEM   no memory for the sockets or the channels.
 * -EINVAL   a or b is NULL.
 * Thread-safety: any thread. */
int llll_sbc_pair(llll_sbc **a, llll_sbc **b);

/* In a child started by llll (an instance or a pool worker): the channel its
 * parent set up, named by the environment variable LLLL_SBC_FD, either one
 * decimal fd (a socket) or "R,W" (two fds, e.g. "0,1" when stdio is the
 * channel). On success the fds become close-on-exec and the variable is
 * removed from the environment (unsetenv), so grandchildren inherit neither.
 * A channel on fds 0-2 (a worker launched through ssh: "0,1") moves to fds
 * above 2 first; stdin then reads /dev/null and stdout writes to stderr, so
 * a stray printf cannot corrupt a frame (it shows on the parent's stderr).
 * Errors (*out is NULL):
 * -ENOENT   LLLL_SBC_FD is not set: this process was not started by llll
 *           as an instance or worker (run standalone, say).
 * -EINVAL   LLLL_SBC_FD is not exactly "N" or "N,M" in decimal, or out is
 *           NULL; the variable is left as it was.
 * -EBADF    it names fds that are not open (closed by a wrapper script, or
 *           by code that ran before); the variable is left as it was.
 * -EMFILE   no fd above 2 was free to move a channel on stdio to; the
 *           variable is left as it was.
 * -ENOMEM   no memory for the channel; its fds were closed.
 * Thread-safety: none: call it once, before starting threads (it changes
 * the environment). */
int llll_sbc_child(llll_sbc **out);

/* Sends one frame of len bytes (len may be 0) in one writev, looping on
 * partial writes. Blocks while the peer does not read (no timeout).
 * Errors:
 * -EMSGSIZE  len exceeds the maximum (llll_sbc_set_max_frame): nothing was
 *           sent and the channel is intact; split the message, or raise
 *           the maximum at both ends.
 * -EPIPE, -ECONNRESET  the peer is gone (exited, closed its end, or this
 *           end was shut down); no signal is raised (on a pipe the SIGPIPE
 *           is blocked in the calling thread and taken back, so no handler
 *           is needed). Part of a frame may have gone: close the channel.
 * -EINVAL   ch is NULL, or data is NULL with len > 0.
 * Any other negative errno of sendmsg/writev/poll (-EBADF for an fd closed
 *           behind the channel's back) also leaves the stream unusable.
 * Thread-safety: any number of threads at once; frames never interleave. */
int llll_sbc_send(llll_sbc *ch, const void *data, size_t len);

/* Receives one frame into frame (frame->len = its size), growing frame only
 * when the frame does not fit. On failure frame->len is unchanged, its
 * bytes are not.
 * Errors:
 * LLLL_EOF  the peer closed (or this end was shut down) between frames:
 *           the normal end of a conversation.
 * -ETIMEDOUT  no whole frame arrived within timeout_ms, also with 0 and also
 *           while another thread held the receive side: call again; a
 *           partly received frame is kept in the channel and completed by
 *           the next call, into any buffer.
 * -EPROTO   the stream ended inside a frame (the peer died while sending,
 *           or does not speak frames): close the channel.
 * -EMSGSIZE  the header announces more than the maximum; refused before
 *           anything is allocated, and every later call says so again
 *           unless the maximum is raised: close the channel.
 * -ECONNRESET  the peer is gone (a connection reset): close the channel.
 * -ENOMEM   frame could not grow: free memory and call again (the frame
 *           waits in the channel). If the part of a frame cut short by a
 *           timeout could not be kept, every later call fails with -ENOMEM:
 *           close the channel.
 * -EINVAL   ch or frame is NULL.
 * Any other negative errno of read/poll (-EBADF, say) leaves the stream
 *           unusable.
 * Thread-safety: any number of threads at once, one receiving at a time
 * (waiting for the others counts against timeout_ms); one thread may send
 * while another receives. */
int llll_sbc_recv(llll_sbc *ch, llll_buf *frame, int timeout_ms);

/* Copies into dst up to n of the bytes this end received but did not
 * deliver, in the order they arrived: the header of a frame being received
 * (or refused with -EMSGSIZE) and what came after it. Returns the count. For
 * messages about a peer that does not speak frames (a login banner, say).
 * Errors: none (0 when ch or dst is NULL).
 * Thread-safety: any thread; it takes the receive side, so it waits for a
 * receive in progress on another thread to return. */
size_t llll_sbc_peek(llll_sbc *ch, void *dst, size_t n);

/* encode obj with c, then send the bytes as one frame.
 * Errors:
 * the error encode returned (nothing sent);
 * every error of llll_sbc_send;
 * -EINVAL   ch, c or c->encode is NULL, or encode set out->len above
 *           out->cap.
 * Thread-safety: as llll_sbc_send; encode runs on the calling thread with
 * no lock held, so it may run on several threads at once. */
int llll_sbc_send_obj(llll_sbc *ch, const llll_codec *c, const void *obj);

/* recv one frame, then decode it with c into *obj (the caller owns it).
 * Errors (*obj is NULL unless decode set it):
 * every error of llll_sbc_recv (LLLL_EOF included);
 * the error decode returned: that frame is consumed;
 * -EINVAL   obj, ch, c or c->decode is NULL.
 * Thread-safety: as llll_sbc_recv; decode runs on the calling thread with
 * no lock held. */
int llll_sbc_recv_obj(llll_sbc *ch, const llll_codec *c, void **obj, int timeout_ms);

/* Sets the largest frame this end sends or accepts (0 restores the default;
 * above 0xffffffff, the largest a header can say, means that). Never fails;
 * ch NULL is ignored. Thread-safety: any thread, any time: a send checks it
 * before sending, a receive when it has read a header. */
void llll_sbc_set_max_frame(llll_sbc *ch, size_t max);

/* Ends both directions of a socket channel without freeing
 * it, from any thread: receivers blocked on this end wake with LLLL_EOF (or an
 * error), later sends fail, and the peer sees EOF. A pool uses it to release
 * callers in flight while it is freed.
 * Errors:
 * -ENOTSOCK  neither fd is a socket (a channel over pipes): nothing done;
 *           there is no way to wake its blocked threads but their peer.
 * -EINVAL   ch is NULL.
 * Any other negative errno of shutdown(2) (-EBADF for an fd closed behind
 *           the channel's back).
 * Thread-safety: any thread, while others are blocked on the channel. */
int llll_sbc_shutdown(llll_sbc *ch);

/* Closes the fds and frees the channel. Accepts NULL. Never fails.
 * Thread-safety: no other thread may be using the channel (use
 * llll_sbc_shutdown first to wake them). */
void llll_sbc_close(llll_sbc *ch);

/* ------------------------------------------------ child processes (llll.c) */

typedef struct llll_proc llll_proc;

/* One line of output: len bytes at line, its '\n' included if it had one. The
 * bytes may hold NULs; they are valid only during the call. */
typedef void llll_line_fn(void *userdata, const char *line, size_t len);

/* Called once, after the child exited and both streams were drained. status
 * is as from waitpid (WIFEXITED, WEXITSTATUS, WIFSIGNALED, ...), or -1 when
 * someone else reaped the child (see llll_proc_join). out and err
 * hold all stdout and stderr bytes when collect_output was set, else NULL;
 * they are valid only during the call. */
typedef void llll_end_fn(void *userdata, int status, const llll_buf *out, const llll_buf *err);

typedef struct llll_proc_opts {
    llll_line_fn *on_stdout;   /* each line of stdout; NULL: lines are dropped */
    llll_line_fn *on_stderr;   /* each line of stderr; NULL: lines are dropped */
    llll_end_fn *on_end;       /* once, after exit and drain; NULL: none */
    void *userdata;            /* passed to every callback */
    bool collect_output;       /* on_end gets all stdout and stderr bytes */
    bool verbose;              /* one line to stderr at start and at end */
    const char *const *env;    /* NULL-terminated "K=V" laid over the parent's
                                  environment ("K" alone removes K); NULL: none */
    const char *cwd;           /* NULL: the parent's */
    bool new_group;            /* child leads a new process group; kill and stop
                                  reach its descendants too */
    size_t max_line;           /* 0: 64 KiB; a longer line arrives in pieces of
                                  at most this size, whose concatenation is it */
    int stdin_mode;            /* the child's stdin: LLLL_STDIN_PIPE (0, the
                                  default): a pipe, see llll_proc_write;
                                  LLLL_STDIN_NULL: /dev/null, EOF at once;
                                  LLLL_STDIN_INHERIT: this process's stdin.
                                  Another value: -EINVAL. Instances and pool
                                  workers ignore it: their stdin is their
                                  code, or /dev/null */
    bool die_with_parent;      /* SIGKILL the child (its group with new_group)
                                  when this process dies, even if the thread
                                  that started it ended long before (Linux;
                                  elsewhere start fails with -ENOSYS) */
} llll_proc_opts;

/* Values of llll_proc_opts.stdin_mode. */
enum { LLLL_STDIN_PIPE = 0, LLLL_STDIN_NULL = 1, LLLL_STDIN_INHERIT = 2 };

/*
 * Starts argv[0] (looked up in PATH when it has no '/') with argv, its stdin a
 * pipe unless stdin_mode says otherwise (see llll_proc_write), its stdout
 * and stderr read by a library thread that calls the callbacks. The spawn
 * does not copy the parent's memory (vfork-style), so it costs the same
 * however large the parent is, and it is safe while other threads run.
 *
 * The child starts as a fresh program, whichever thread started it (a
 * callback's, a mapper worker's, which block every signal): no signal
 * blocked, every disposition at its default (a SIG_IGN or handler of this
 * process is not inherited; an instance's SIGINT is ignored unless
 * keep_sigint). It holds fds 0, 1, 2 (and 3, an instance's channel) and
 * none of the library's others; with die_with_parent a library thread that
 * lives as long as the child starts it (the kernel's parent-death signal
 * follows the starting thread), and a set-user-ID program clears it; with
 * new_group too, a /bin/sh guard in a group of its own kills the group when
 * this process dies. On Linux the start returns once the child has exec'd
 * (the clone suspends this thread until then). With a fork (LLLL_SPAWN_FORK,
 * ThreadSanitizer, off Linux, or an emulator such as qemu-user that runs the
 * clone as a fork) the exec's outcome is read from a close-on-exec pipe
 * until EOF: a fork without exec that another thread of the program makes
 * meanwhile delays the start until that fork's child execs or exits, and a
 * child that has not exec'd within 10 s is killed (-ETIMEDOUT).
 *
 * Callbacks of one child run on one library thread, never two at once, every
 * line callback before on_end. The end is seen when the child exits even while
 * a grandchild keeps its stdout open: what is readable then is delivered.
 * Callbacks may call any llll function except llll_proc_free and
 * llll_proc_join/stop on their own child (-EDEADLK).
 *
 * Errors (*out is NULL and no child is left behind):
 * -ENOENT   argv[0] was not found (in PATH when it has no '/'), or is "",
 *           or cwd does not exist: check the name, PATH in env, cwd.
 * -EACCES   argv[0] is not executable, or a directory on its way or cwd
 *           may not be searched.
 * -ENOEXEC, -ENOTDIR, -E2BIG, ...  any other errno of the exec or of
 *           chdir(cwd) that failed in the child, as execve(2) and chdir(2)
 *           give it.
 * -ENOSYS   die_with_parent off Linux: start without it.
 * -EINVAL   out or argv is NULL, argv is empty, or stdin_mode is none of
 *           the three.
 * -EMFILE, -ENFILE  out of fds for the pipes: close some, or raise
 *           RLIMIT_NOFILE.
 * -EAGAIN   out of processes (RLIMIT_NPROC) or threads: retry later, or
 *           start fewer at once.
 * -ENOMEM   out of memory.
 * -ETIMEDOUT  with a fork (see above), the child did not exec within 10 s:
 *           it was killed. qemu-user now and then hangs a child forked while
 *           other threads run, before it runs any code; a pthread_atfork
 *           handler that never returns does the same.
 * Thread-safety: any thread, a callback's included, while other threads
 * start children too.
 */
int llll_proc_start(llll_proc **out, const char *const argv[], const llll_proc_opts *opts);

/* Writes all len bytes to the child's stdin (blocking while its pipe is full).
 * Errors:
 * -EPIPE    the child closed its stdin or exited (no signal is raised): it
 *           reads no more; some of the bytes may have reached it.
 * -EBADF    after llll_proc_close_stdin, or stdin_mode gave the child no
 *           pipe.
 * -EINVAL   p is NULL, or data is NULL with len > 0.
 * Thread-safety: any number of threads at once; each call's bytes reach the
 * pipe whole, never interleaved with another call's. */
int llll_proc_write(llll_proc *p, const void *data, size_t len);

/* Closes the child's stdin, so it reads EOF. Idempotent. Never waits: a
 * llll_proc_write in progress on another thread finishes (all of its bytes
 * are written) and then closes stdin; later writes return -EBADF.
 * Errors:
 * -EBADF    stdin_mode gave the child no pipe (nothing to close).
 * -EINVAL   p is NULL.
 * Thread-safety: any thread, also while another blocks in llll_proc_write. */
int llll_proc_close_stdin(llll_proc *p);

/* Sends sig (0 means SIGKILL) to the child, or to its process group when
 * new_group was set.
 * Errors:
 * -ESRCH    the child was already reaped (a recycled pid is never
 *           signalled): nothing to kill; join it for its status.
 * -EINVAL   p is NULL, or sig is not a signal.
 * -EPERM    this process may not signal it (a set-user-ID program).
 * Thread-safety: any thread, the child's callbacks included. */
int llll_proc_kill(llll_proc *p, int sig);

/* SIGTERM, up to grace_ms for the child to end (-1: forever, 0: SIGKILL at
 * once), then SIGKILL, then join. status (may be NULL) as from waitpid.
 * Errors:
 * -ECHILD   someone else reaped the child: *status is -1 (as
 *           llll_proc_join).
 * -EDEADLK  called from one of this child's own callbacks: nothing done;
 *           use llll_proc_kill there.
 * -EINVAL   p is NULL.
 * Thread-safety: any thread but this child's callbacks, also while others
 * join it. */
int llll_proc_stop(llll_proc *p, int grace_ms, int *status);

/* Waits until the child was reaped and on_end returned; status (may be NULL)
 * as from waitpid.
 * Errors:
 * -ETIMEDOUT  timeout_ms ran out (also with 0): nothing changed; call
 *           again, or llll_proc_stop.
 * -ECHILD   its exit status is unknown (*status is -1): someone else reaped
 *           it (SIGCHLD set to SIG_IGN, or a waitpid(-1) of this program);
 *           no status is made up. The child has ended all the same.
 * -EDEADLK  called from one of this child's own callbacks: nothing done.
 * -EINVAL   p is NULL.
 * Thread-safety: any number of threads may join at once (not this child's
 * callbacks). */
int llll_proc_join(llll_proc *p, int timeout_ms, int *status);

/* The child's pid (still returned after it was reaped, for messages); -1
 * when p is NULL. Thread-safety: any thread. */
pid_t llll_proc_pid(const llll_proc *p);

/* Kills a child still running (SIGKILL, to its group with new_group), joins
 * it, frees everything. Accepts NULL. Never fails.
 * Thread-safety: once, from one thread, not from the child's own callbacks
 * (there it does nothing). Threads already blocked in llll_proc_join/stop
 * return (with the status) before it frees; no llll_proc_write may be in
 * progress and no call may start after it. */
void llll_proc_free(llll_proc *p);

/*
 * Runs argv to its end and returns what it printed: the whole of
 * llll_proc_start, write, close_stdin, join and free in one call.
 *
 * input_len bytes at input are written to the child's stdin, which is then
 * closed; they are written while its output is read, so a child that prints
 * much before it reads cannot block the call. A child that exits without
 * reading all of them is no error (its status tells). input NULL (input_len
 * 0): stdin reads /dev/null, or follows opts->stdin_mode when that is
 * LLLL_STDIN_INHERIT.
 *
 * out and err, owned by the caller, receive every byte of stdout and of
 * stderr (their contents replaced: len 0 first; a buffer is grown only when
 * too small, so one reused across calls stops allocating). Either may be
 * NULL: that stream is dropped. The opts' callbacks, if set, are called as
 * with llll_proc_start, whether or not out and err are given.
 *
 * timeout_ms: -1 forever. Once it runs out (0: at once), the child gets
 * SIGTERM (its group with new_group), 200 ms of grace, then SIGKILL; it is
 * reaped and the call returns -ETIMEDOUT, with *status set and out and err
 * holding what was read until then. *status (status may be NULL) is as from
 * waitpid, set whenever the child was started.
 *
 * Errors:
 * -ETIMEDOUT  timeout_ms ran out: the child was ended as above.
 * -ENOMEM     out or err could not grow: the child still ran to its end
 *             (*status set), the buffer holds what came before.
 * -EINVAL     argv NULL or empty, input NULL with input_len > 0, input
 *             given with a stdin_mode other than LLLL_STDIN_PIPE, or a
 *             stdin_mode that is none of the three.
 * -ECHILD     someone else reaped the child (see llll_proc_join): *status
 *             is -1; out and err hold what it printed.
 * -ENOENT, -EACCES, ... and every other error of llll_proc_start: nothing
 *             ran, *status is unchanged, out and err are empty.
 * Thread-safety: any number of threads may run commands at once; out and
 * err must be distinct buffers that no other thread uses meanwhile.
 */
int llll_proc_run(const char *const argv[], const llll_proc_opts *opts,
                  const void *input, size_t input_len, int timeout_ms,
                  int *status, llll_buf *out, llll_buf *err);

/* A ready on_stdout/on_stderr: writes the line to this process's stdout,
 * adding '\n' when the line had none, whole lines at once. userdata unused.
 * Errors are dropped (a closed stdout loses the line, raises no SIGPIPE).
 * Thread-safety: any thread; lines of different threads never interleave. */
void llll_print_line(void *userdata, const char *line, size_t len);

/* ------------------------------------------------------ instances (llll.c) */

/*
 * A child that talks to its parent in frames over a socketpair (Python
 * llll's PythonInstance). The child finds its end with llll_sbc_child()
 * (a started program gets it on fd 3, LLLL_SBC_FD=3). Its stdin reads code,
 * if any, then EOF (/dev/null without code); code is written by the library
 * thread, so start never blocks on it. Its stdout and stderr go to the
 * parent's stdout and stderr unless proc.on_stdout / proc.on_stderr (or
 * proc.collect_output) are set, then they reach those callbacks as lines. It
 * ignores SIGINT unless keep_sigint, so a Ctrl-C stops the parent's work, not
 * a child in the middle of a message.
 */
typedef struct llll_instance llll_instance;

/* Body of a forked instance: runs in the child; its return value is the
 * child's exit status. */
typedef int llll_main_fn(llll_sbc *channel, void *arg);

typedef struct llll_instance_opts {
    llll_proc_opts proc;       /* callbacks, env, cwd, verbose, new_group, ... */
    const char *code;          /* written to the child's stdin, then stdin is
                                  closed: an interpreter's script (argv
                                  {"python3", "-", NULL}, {"sh", NULL}) */
    bool keep_sigint;          /* leave SIGINT at its default in the child */
    bool stdio_channel;        /* the channel is the child's stdin and stdout
                                  (LLLL_SBC_FD=0,1), not fd 3: for a launcher
                                  that carries only stdio (ssh, srun). Then
                                  proc.on_stdout gets nothing, and code is
                                  refused (-EINVAL). Ignored by fork. */
} llll_instance_opts;

/* Starts a program as an instance.
 * Errors (*out is NULL and no child is left behind):
 * every error of llll_proc_start (-ENOENT, -EACCES, ... of the exec or
 * chdir, -ENOSYS, -EMFILE, -ENFILE, -EAGAIN, -ENOMEM) but the -EINVAL
 * of stdin_mode, which instances ignore;
 * -EINVAL   out or argv is NULL, argv is empty, or stdio_channel with
 *           code.
 * Thread-safety: any thread, a callback's included. */
int llll_instance_start(llll_instance **out, const char *const argv[], const llll_instance_opts *opts);

/* Runs fn(channel, arg) in a forked copy of this program; the child then ends
 * with _exit(return value & 0xff): no atexit handlers, no second flush of
 * stdio buffers (stdout and stderr are flushed before the fork, and the
 * child flushes them after fn). Only fn's thread exists in the child (see
 * Gotchas in README); before fn it makes system calls only, and allocates
 * nothing (the channel was made by the parent). The child closes the pipes
 * and channels llll made for its other children (and our end of its own
 * channel), so none of their peers waits for an EOF because of it; every
 * other fd stays open.
 * proc.env and proc.cwd apply; fn runs with no signal blocked. With
 * proc.die_with_parent the fork is made by a library thread (see
 * llll_proc_start). A fork copies the page tables: it costs more the larger
 * this process is.
 * Errors (*out is NULL and no child is left behind):
 * -ENOENT, -EACCES, -ENOTDIR, ...  the errno of chdir(proc.cwd) in the
 *           child.
 * -ENOSYS   proc.die_with_parent off Linux.
 * -EAGAIN   out of processes (RLIMIT_NPROC) or threads: retry later.
 * -EMFILE, -ENFILE  out of fds for the channel or the pipes.
 * -ENOMEM   out of memory.
 * -ETIMEDOUT  the child did not reach fn within 10 s (stuck before it ran
 *           any code of ours, as in llll_proc_start): it was killed.
 * -EINVAL   out or fn is NULL.
 * Thread-safety: any thread; the child has only the calling thread, so a
 * lock another thread held at the fork stays locked in it. */
int llll_instance_fork(llll_instance **out, llll_main_fn *fn, void *arg, const llll_instance_opts *opts);

/* llll_sbc_send / llll_sbc_recv on the instance's channel.
 * Errors: those of llll_sbc_send and llll_sbc_recv; those worth handling:
 * LLLL_EOF  (recv) the child closed its end between frames: it exited, or
 *           is about to; join it for its status.
 * -EPIPE, -ECONNRESET  (send; recv: -ECONNRESET) the child is gone, or
 *           llll_instance_free has begun: join it for its status.
 * -ETIMEDOUT  (recv) no whole frame within timeout_ms: call again.
 * -EPROTO   (recv) the child died inside a frame, or wrote something else
 *           than frames on its channel.
 * -EMSGSIZE  a frame over the maximum (llll_sbc_set_max_frame on
 *           llll_instance_channel).
 * -ENOMEM   (recv) frame could not grow.
 * -EINVAL   in is NULL (or as llll_sbc_send/recv).
 * Thread-safety: as a channel's: any number of threads at once. */
int llll_instance_send(llll_instance *in, const void *data, size_t len);
int llll_instance_recv(llll_instance *in, llll_buf *frame, int timeout_ms);

/* The channel, owned by the instance (for the _obj functions, say), valid
 * until llll_instance_free; NULL when in is NULL. Thread-safety: any
 * thread. */
llll_sbc *llll_instance_channel(llll_instance *in);

/* As llll_proc_kill / llll_proc_join.
 * Errors: theirs (-ESRCH, -EPERM; -ETIMEDOUT, -ECHILD, -EDEADLK), and
 * -EINVAL when in is NULL.
 * Thread-safety: as theirs. */
int llll_instance_kill(llll_instance *in, int sig);
int llll_instance_join(llll_instance *in, int timeout_ms, int *status);

/* Shuts the channel down (threads blocked in llll_instance_send/recv return
 * -EPIPE or LLLL_EOF, and free waits until they did) and closes it, gives
 * the child a short grace (200 ms) to exit on its own, kills it if it does
 * not, reaps it, frees everything. Accepts NULL. Never fails.
 * Thread-safety: once, from one thread, not from the child's own callbacks;
 * other threads may be blocked in send or recv (they are woken first), but
 * no call may start after it. */
void llll_instance_free(llll_instance *in);

/* ------------------------------------------------------------ pools (pool.c) */

typedef struct llll_pool llll_pool;

/* A worker's function: answers one call. arg/len is the caller's argument;
 * fn writes its answer into result (result->len = its size). result arrives
 * with len 0 and the memory of earlier calls; fn fills it with
 * llll_buf_set or grows it with llll_buf_reserve. Returning non-zero makes
 * the call fail with -EREMOTEIO, result still delivered (an error message,
 * say); the worker goes on serving. */
typedef int llll_serve_fn(void *ctx, const void *arg, size_t len, llll_buf *result);

/* A machine that runs workers of a pool (see llll_pool_opts.hosts). */
typedef struct llll_host {
    const char *const *launcher;  /* argv prefix that runs a command elsewhere,
                                     e.g. {"ssh", "-T", "-o", "BatchMode=yes", "box1", NULL};
                                     NULL: this machine */
    int slots;                    /* workers on this host; 0: 1 */
} llll_host;

typedef struct llll_pool_opts {
    llll_instance_opts instance;  /* how each worker is started */
    int call_timeout_ms;          /* 0 or -1: none. Bounds one call from the
                                     moment its request is sent to a worker (the
                                     send included) until its result is in; past
                                     it, that worker is killed and replaced, and
                                     the call gets -ETIMEDOUT (calls are then
                                     never run together). In a map, a batch gets
                                     it plus twice the time its items are
                                     expected to take; past that, its items are
                                     retried alone, each with call_timeout_ms */
    bool no_respawn;              /* a dead worker is replaced unless this is set */
    size_t max_frame;             /* largest argument or result; 0: 64 MiB;
                                     at most 4 GiB less 1 MiB */
    int start_timeout_ms;         /* how long a worker may take to send its hello
                                     (start, and each replacement); 0: 10 s;
                                     -1: forever */
    const llll_host *hosts;       /* NULL: nproc local workers */
    size_t nhosts;                /* with hosts, the pool has the sum of their slots
                                     and nproc is ignored (see Hosts below) */
    bool drop_failed_hosts;       /* a host whose workers fail to start makes start
                                     leave it out (its slots go to no one), not
                                     fail; start still fails if no worker started */
} llll_pool_opts;

/*
 * Hosts. With opts->hosts, the pool has the sum of the hosts' slots, each
 * slot's worker on its host. A host with a NULL launcher is this machine
 * (its workers start as without hosts); on any other, a worker is
 *     launcher... env LLLL_SBC_FD=0,1 [the K=V of instance.proc.env] argv...
 * with its channel on the launcher's stdin and stdout (stdio_channel): argv[0]
 * must be a path valid on that host (instance.proc.cwd, and env as a whole,
 * apply to the launcher; proc.new_group does not: the launcher is signalled
 * alone, never its process group, so that srun, say, can cancel its job). A
 * launcher whose program's name ends in "ssh" joins its words into one
 * command line for the remote shell: the words
 * after the launcher are then quoted for a POSIX shell, so spaces and shell
 * characters reach the worker intact. Other launchers (srun, docker exec -i,
 * kubectl exec -i, sudo -u) get them as separate words.
 * A launched worker's stderr (through ssh, the remote one's, and ssh's own
 * messages) reaches instance.proc.on_stderr, else this process's stderr,
 * line by line, each prefixed with "[the launcher's words] " when
 * proc.verbose. With verbose, a failed launch is told there too, with the
 * first bytes of a peer that is not a worker (a login script's output, say).
 * A launch fails when no hello comes: -ECONNRESET (the launcher exited: a
 * host down, a key refused, no worker at that path; ssh says which on
 * stderr), -EPROTO (something else answered), -ETIMEDOUT. At start that
 * fails start, unless drop_failed_hosts: then that host is left out. Later,
 * dead workers are relaunched as without hosts, with a back-off per host
 * after a failed launch (100 ms, doubling up to 5 s). While other workers
 * live, calls and maps wait for them rather than fail on a host's failed
 * relaunch; a call or a map that finds only slots backing off waits for the
 * first, tries it, and gets its error if it fails. A host whose launches
 * fail 5 times in a row is dropped and its slots go to no one
 * (llll_pool_size shows it, hosts_dropped counts it).
 * Remote workers end on EOF of their channel: when the pool is freed, when
 * this process dies, when the connection is cut (a worker busy in fn ends
 * when fn returns, its reply having nowhere to go). call_timeout_ms kills
 * the launcher: the remote worker, cut off, also ends when fn returns, so a
 * fn that never returns is the host's to kill. A forked pool takes only
 * local hosts, and instance.code no launched one (-EINVAL).
 */

/*
 * Starts nproc workers (0: the online processors) running argv, each of which
 * must call llll_serve. Returns once every worker answered a hello; a program
 * that is not a worker, or dies while it initialises, makes start fail and
 * leaves nothing running.
 * Errors (*out is NULL, no worker is left running):
 * -EPROTO   a worker sent something else than a hello, or the hello of
 *           another version of the pool protocol (with instance.proc.verbose
 *           both versions are named on stderr): argv is not a worker of
 *           this library's version.
 * -ECONNRESET  a worker exited before its hello (it crashed, or argv is not
 *           a worker: its stderr tells).
 * -ETIMEDOUT  no hello within start_timeout_ms (10 s by default): raise it
 *           for workers that initialise slowly.
 * -ENOENT, -EACCES, ... and every other error of llll_instance_start.
 *           With hosts, any of the above fails start unless
 *           drop_failed_hosts; then only when every host was left out,
 *           with the error of the last one.
 * -EAGAIN   out of processes or threads.
 * -ENOMEM   out of memory.
 * -EINVAL   out or argv is NULL, argv is empty, nproc < 0, or
 *           call_timeout_ms or start_timeout_ms below -1; with hosts: no
 *           slot at all (nhosts 0) or over INT_MAX of them, a negative
 *           slots, an empty launcher, or a launcher with instance.code.
 * Thread-safety: any thread.
 */
int llll_pool_start(llll_pool **out, const char *const argv[], int nproc, const llll_pool_opts *opts);

/* As llll_pool_start, the workers being forked copies of this program that
 * run llll_serve(fn, ctx) (see llll_instance_fork: a replacement is a copy of
 * the process as it is when the replacement is forked). A worker starts
 * with frame buffers reserved before its fork: it serves frames of up to
 * 128 KiB and results of up to 4 KiB without allocating (what fn allocates
 * is fn's).
 * Errors: those of llll_pool_start (those of llll_instance_fork in place of
 * llll_instance_start's; -ECONNRESET: a worker died before its hello), and
 * -EINVAL when out or fn is NULL, nproc < 0, a timeout is below -1, or a
 * host has a launcher (a forked pool takes only local hosts).
 * Thread-safety: any thread (see llll_instance_fork for what the copies
 * hold). */
int llll_pool_fork(llll_pool **out, llll_serve_fn *fn, void *ctx, int nproc, const llll_pool_opts *opts);

/*
 * Sends arg to an idle worker and waits for its answer, written into result.
 * Safe from any number of threads. A thread gets back the worker it used
 * last when that one is idle. With it busy (and no call_timeout_ms), the
 * call waits for it, sleeping: the thread whose call holds that worker, or
 * the oldest waiting there, sends the waiting calls together in one frame
 * and wakes each caller with its result. So the callers of one worker share
 * its frames, and more callers than workers keep every worker busy without
 * a lock shared by all (each worker's callers can keep to a CPU). While,
 * on average, more calls are in flight than the pool has workers and they
 * take under 50 us, and if the thread that started the pool may run on no
 * more CPUs than the pool has workers (none remote), a call goes to the
 * worker of the CPU its thread runs on instead (those CPUs in order, the
 * first to the first worker): the callers that the scheduler put on one
 * CPU share a worker. Slower calls go to the worker each thread used last,
 * which spreads the threads evenly over the workers wherever they run. A
 * call waits for its worker while another is idle only until the pool sees
 * that: a library thread (started the first time a call waits so, joined by
 * llll_pool_free, every signal blocked) looks every 10 ms, and the calls
 * waiting for a worker that ran one call that long, or all of them when a
 * worker stayed idle that long, go to the next idle worker. With
 * call_timeout_ms set, or no worker of its own, a call that finds every
 * worker busy waits in a queue, oldest first, and a thread that finished
 * its own call runs the waiting calls (one at a time with call_timeout_ms)
 * before it returns. When a worker dies during a frame of several calls,
 * the calls it had not answered run again, each alone, so a call may run
 * twice: fn should be idempotent (a call that kills a worker alone gets
 * -ECONNRESET, and only it). A worker found dead before it read the request
 * does not fail the call: the request goes to its replacement.
 * Errors (result->len is 0 but for -EREMOTEIO):
 * -EREMOTEIO  fn returned non-zero; result holds what it wrote (an error
 *           message, say). The worker goes on.
 * -ECONNRESET  the worker really died during this call (its channel ended);
 *           it was replaced before this returned. Retry if fn is not what
 *           kills it.
 * -ETIMEDOUT  call_timeout_ms ran out, be it while sending the argument or
 *           waiting for the result; the worker was killed and replaced.
 * -EMSGSIZE  arg is over max_frame (nothing sent), or the result was (the
 *           worker goes on): raise max_frame, or split the work.
 * -EPROTO   the worker's reply was malformed or answered another request:
 *           the worker was retired and replaced, and stats.protocol_errors
 *           counts it.
 * -ENOMEM   out of memory here, in this process (the worker is retired only
 *           when its reply was left half read).
 * -ECANCELED  the pool is being freed.
 * -ECHILD   no worker left, with no_respawn, or every host dropped.
 * -ENOENT, -EAGAIN, -ECONNRESET, -ETIMEDOUT, ...  starting a replacement
 *           for a dead worker this call needed failed with it (see
 *           llll_pool_start; on a host, only when no other worker is left:
 *           see Hosts); a later call tries again.
 * -EINVAL   pool or result is NULL, or arg is NULL with len > 0.
 * Thread-safety: any number of threads at once, and from a map's arg and
 * result functions; not after llll_pool_free began.
 */
int llll_pool_call(llll_pool *pool, const void *arg, size_t len, llll_buf *result);

/* Fills arg (arg->len = its size, with llll_buf_set or llll_buf_reserve) with
 * item i's argument. 0; LLLL_EOF: the input ends before n (n may be
 * SIZE_MAX); any other value stops the map, which returns it. Called on the
 * thread that called llll_pool_map, in index order. */
typedef int llll_arg_fn(void *ctx, size_t i, llll_buf *arg);

/* Receives item i's outcome, in index order, on the thread that called
 * llll_pool_map: rc 0 (result/len: what fn wrote), -EREMOTEIO (fn failed;
 * result: what it wrote), -ECONNRESET (its worker died while running it
 * alone), -ETIMEDOUT (it ran out of call_timeout_ms alone), -EMSGSIZE (its
 * argument or result is over max_frame), -EPROTO (its worker's reply was
 * malformed). result is valid only during the call. Non-zero stops the map,
 * which returns it. */
typedef int llll_result_fn(void *ctx, size_t i, int rc, const void *result, size_t len);

typedef struct llll_pool_map_opts {
    size_t batch;      /* items per frame; 0: adaptive (the default) */
} llll_pool_map_opts;  /* more fields may follow */

/*
 * Runs the pool's function over n items: their arguments come from arg, their
 * outcomes go to result, both on the calling thread and in index order. Items
 * travel in batches, one frame each way per batch, with frames sent ahead to
 * each worker (two, or more while they hold under a few milliseconds of work;
 * one near the end of a map of known n, so that the last items go to the
 * first worker free), so trivial items cost no round trip each. The batch size
 * adapts by itself: it starts at 1 and grows while items come back fast
 * (to thousands for items of microseconds), and stays small for slow items,
 * so that uneven work spreads over every worker; opts->batch fixes it.
 * n may be SIZE_MAX, arg ending the input with LLLL_EOF: a stream, held in
 * memory bounded by the workers times a few batches (the results are handed
 * on in order, so one slow item holds back the delivery, not the work).
 *
 * A worker that dies: every item it had not answered is retried once, alone,
 * on another worker or its replacement; an item that kills a worker when run
 * alone gets -ECONNRESET, and only it. call_timeout_ms applies per item the
 * same way (the item that runs out alone gets -ETIMEDOUT). So an item may
 * run twice: fn should be idempotent, as with any pool that retries.
 *
 * Returns 0 (per-item errors went to result), the first non-zero value of
 * arg or result (the map then stops early: items in flight are drained and
 * dropped, result is not called again), or a pool-level error. n == 0
 * returns 0 at once. Runs one helper thread per worker it uses (every signal
 * blocked); the pool keeps them for later maps, one per worker at most, and
 * llll_pool_free joins them.
 * Errors (pool-level; the map stops as above):
 * the value arg or result returned, when not 0 (nor LLLL_EOF from arg);
 * -ECANCELED  the pool is being freed.
 * -ECHILD   no worker left, with no_respawn, or every host dropped.
 * -ENOENT, -EAGAIN, -ECONNRESET, -ETIMEDOUT, ...  starting a replacement
 *           for the dead worker the map needed to begin failed with it (on
 *           a host, only when no other worker is left: see Hosts).
 * -EAGAIN   no helper thread could be started for the first worker.
 * -ENOMEM   out of memory.
 * -EINVAL   pool, arg or result is NULL.
 * Thread-safety: any number of threads at once, alongside llll_pool_call:
 * workers are shared (a map lets a worker go to a waiting caller as long as
 * it keeps one, and an idle one always), so arg and result may call the
 * same pool too; not after llll_pool_free began.
 */
int llll_pool_map(llll_pool *pool, size_t n, llll_arg_fn *arg, llll_result_fn *result,
                  void *ctx, const llll_pool_map_opts *opts);

/* The number of live workers: nproc (or the hosts' slots), less those that
 * died and were not (yet) replaced (with no_respawn, or while a replacement
 * failed to start, or whose host was dropped).
 * Errors: none; 0 when pool is NULL. Thread-safety: any thread, any time. */
int llll_pool_size(const llll_pool *pool);

/* Counters, read at any time from any thread. */
typedef struct llll_pool_stats {
    uint64_t calls;      /* calls and map items answered by a worker (fn's
                            result either way) */
    uint64_t failures;   /* calls whose fn returned non-zero */
    uint64_t crashes;    /* calls and items that lost their worker (-ECONNRESET) */
    uint64_t timeouts;   /* calls and items that ran out of call_timeout_ms */
    uint64_t respawns;   /* workers started to replace a dead one */
    uint64_t protocol_errors;  /* workers retired for a malformed reply, or one
                                  answering another request (-EPROTO) */
    uint64_t launch_failures; /* launches on a host that failed (start included) */
    uint64_t hosts_dropped;   /* hosts left out: at start (drop_failed_hosts),
                                 or after failing launches in a row */
} llll_pool_stats;
/* Copies the counters into *out (all 0 when pool is NULL; nothing when out
 * is). Never fails. Thread-safety: any thread, any time; each counter is
 * read atomically, not the set of them at one instant. */
void llll_pool_get_stats(const llll_pool *pool, llll_pool_stats *out);

/* Makes calls and maps in flight return -ECANCELED, closes the channels so
 * workers exit on EOF, kills those that do not within a short grace, reaps
 * them all. Accepts NULL. Never fails.
 * Thread-safety: once, from one thread, when no new call or map will start;
 * calls and maps in flight on other threads return before it frees. */
void llll_pool_free(llll_pool *pool);

/* In a worker: answers calls with fn until the master closes the channel
 * or goes away (returns 0, so the worker can exit cleanly).
 * Errors:
 * -ENOENT   this process was not started as a worker (LLLL_SBC_FD unset):
 *           run standalone, say.
 * -EINVAL, -EBADF  LLLL_SBC_FD is malformed or names closed fds (see
 *           llll_sbc_child); -EINVAL also when fn is NULL.
 * -EPROTO   the master sent a malformed request, or ended inside a frame:
 *           it is not a pool of this library's protocol version.
 * -EPIPE, -ECONNRESET  the master was gone before this worker's hello.
 * -ENOMEM   out of memory.
 * Thread-safety: none: call it once, before starting threads (it takes the
 * channel with llll_sbc_child, which changes the environment); fn runs on
 * the calling thread, one call at a time. It speaks version 2 of the pool protocol (batches of
 * arguments, a request id in every frame), described byte by byte at the top
 * of pool.c and in README, so a worker can be written in any language. */
int llll_serve(llll_serve_fn *fn, void *ctx);

/* ---------------------------------------- mapper, FIFO, generator (mapper.c) */

typedef struct llll_mapper llll_mapper;
typedef struct llll_fifo llll_fifo;
typedef struct llll_gen llll_gen;

/* One item: fn(ctx, i) writes its result by index; 0 or an error value. */
typedef int llll_map_fn(void *ctx, size_t i);

/* A pool of nthread threads (0: the online processors) counting the caller:
 * it starts nthread - 1 worker threads and the thread calling map is the
 * last one, so nthread 1 runs every item on the caller. Workers sleep on a
 * condition variable while there is no work and run with every signal
 * blocked.
 * Errors (*out is NULL, no thread is left running):
 * -EAGAIN   a thread could not be started (RLIMIT_NPROC, memory): ask for
 *           fewer.
 * -ENOMEM   out of memory.
 * -EINVAL   out is NULL, or nthread < 0 or above 4096.
 * Thread-safety: any thread. */
int llll_mapper_new(llll_mapper **out, int nthread);

/* Calls fn(ctx, i) once for every i in [0, n) and returns when all returned:
 * 0, or the value of the failing call with the lowest i (every i still runs).
 * n == 0 returns 0 at once; -EINVAL when fn is NULL. Safe from several
 * threads at once (idle workers help any map), and from inside fn: the caller
 * works on its own map until no item is left unstarted, then waits only for
 * items still running, so nesting cannot deadlock.
 *
 * The schedule adapts to the items' cost and needs no parameter. Each thread
 * runs a range of items in index order. It takes its next range from the
 * items not yet handed out, sized to last about 50 us at the speed its last
 * range ran: one item while items are slower than that, at most twice the
 * last range, and never more than what is left / (2 x nthread), so every
 * thread has work until the end. Once every item is handed out, a thread left
 * without work takes the back half of the unstarted items of the thread that
 * has the most. So items of a few nanoseconds run in long ranges, and a slow
 * item holds up only itself: while it runs, the rest of its thread's range
 * goes to threads that are free. On Linux a steal costs one membarrier(2)
 * call, and an item a plain store and load more than a bare loop; where
 * membarrier is missing or refused, that store is sequentially consistent
 * (an atomic exchange on x86).
 * Errors:
 * the value fn returned for the lowest failing i (every i still ran);
 * -EINVAL   m or fn is NULL (nothing ran).
 * Thread-safety: any number of threads at once, and from inside fn. */
int llll_mapper_map(llll_mapper *m, size_t n, llll_map_fn *fn, void *ctx);

/* Joins the threads. Accepts NULL. Never fails. Thread-safety: once, from
 * one thread; no map may be running. */
void llll_mapper_free(llll_mapper *m);

/* A bounded blocking FIFO of pointers (any pointer, NULL included, is an
 * item). put waits while the queue is full, get while it is empty, up to
 * timeout_ms (measured on CLOCK_MONOTONIC). q (and get's item) must not be
 * NULL.
 * Errors of new (*out is NULL):
 * -EINVAL   out is NULL, or capacity is 0 (or above
 *           SIZE_MAX / sizeof(void *)).
 * -ENOMEM   out of memory.
 * Errors of put and get:
 * -ETIMEDOUT  the queue stayed full (put) or empty (get) for timeout_ms,
 *           also with 0: nothing changed; call again.
 * Thread-safety: new from any thread; put and get from any number of
 * threads at once. */
int llll_fifo_new(llll_fifo **out, size_t capacity);
int llll_fifo_put(llll_fifo *q, void *item, int timeout_ms);
int llll_fifo_get(llll_fifo *q, void **item, int timeout_ms);
/* Frees the queue, not the items still in it. Accepts NULL. Never fails.
 * Thread-safety: no thread may be waiting on it, none may use it after. */
void llll_fifo_free(llll_fifo *q);

/* Makes one item; NULL means "no more" (that thread stops). */
typedef void *llll_gen_fn(void *ctx);

/* nthread threads (0: the online processors) call fn and keep up to capacity
 * items made ahead (each thread may hold one more while the queue is full).
 * fn must be thread-safe when nthread > 1; it runs with every signal blocked.
 * Errors (*out is NULL, no thread is left running):
 * -EAGAIN   a thread could not be started (RLIMIT_NPROC, memory): ask for
 *           fewer.
 * -ENOMEM   out of memory.
 * -EINVAL   out or fn is NULL, capacity is 0 (or above
 *           SIZE_MAX / sizeof(void *)), or nthread < 0 or above 4096.
 * Thread-safety: any thread. */
int llll_gen_new(llll_gen **out, llll_gen_fn *fn, void *ctx, int nthread, size_t capacity);

/* The next item. g and item must not be NULL.
 * Errors:
 * LLLL_EOF  every thread stopped (fn returned NULL) and all items were
 *           taken: the normal end; every later call says so again.
 * -ETIMEDOUT  no item came within timeout_ms (also with 0): call again.
 * Thread-safety: any number of threads at once, none during llll_gen_free. */
int llll_gen_get(llll_gen *g, void **item, int timeout_ms);

/* Stops the threads promptly, even those blocked on a full queue, and joins
 * them. Items not taken are dropped (not freed). A thread inside fn is not
 * interrupted: free waits for that call to return, drops its item and calls
 * fn no more. Accepts NULL. Never fails. Thread-safety: once, from one
 * thread; no llll_gen_get may be running. */
void llll_gen_free(llll_gen *g);

#ifdef __cplusplus
}
#endif
#endif /* LLLL_H */
