/* Compiled when the tests are built, never run: llll.h alone, with nothing
 * included before or after it, gives the names a caller compares results
 * with, every errno value its Errors lists name and LLLL_EOF. */
#include "llll.h"

static const int results[] = {
    -E2BIG, -EACCES, -EAGAIN, -EBADF, -ECANCELED, -ECHILD, -ECONNRESET,
    -EDEADLK, -EINVAL, -EMFILE, -EMSGSIZE, -ENFILE, -ENOENT, -ENOEXEC,
    -ENOMEM, -ENOSYS, -ENOTDIR, -ENOTSOCK, -EPERM, -EPIPE, -EPROTO,
    -EREMOTEIO, -ESRCH, -ETIMEDOUT, LLLL_EOF,
};

int t_header_alone(size_t i);

int t_header_alone(size_t i)
{
    return i < sizeof results / sizeof results[0] ? results[i] : 0;
}
