# A pool worker in Python for the tests, on python/llll.py: answers an
# argument with its bytes reversed; "fail" raises ValueError("no"), "pid"
# answers this worker's pid, "big N" N bytes.
import os
import llll


def answer(arg):
    if arg == b"fail":
        raise ValueError("no")
    if arg == b"pid":
        return str(os.getpid())
    if arg.startswith(b"big "):
        return b"x" * int(arg[4:])
    return arg[::-1]


llll.serve(answer)
