"""llll.py - the Python side of llll (the C library): framed channels and
pool workers. Standard library only; Python 3.6 or later.

A child that llll started (an instance, or a pool worker) imports this file,
or is fed it as the start of its `code`:

    import llll
    ch = llll.channel()          # the channel the parent set up
    frame = ch.recv()
    while frame is not None:     # None: the parent closed the channel
        ch.send(frame.upper())
        frame = ch.recv()

    llll.serve(lambda arg: arg[::-1])   # a pool worker: fn(bytes) -> bytes

A frame is a 4-byte big-endian length and that many bytes. A pool worker
speaks version 2 of the pool protocol on top (see llll's README).
"""

import os
import struct
import traceback

__all__ = ["Channel", "channel", "serve"]

_HEADER = struct.Struct(">I")
_REQUEST = struct.Struct(">III")    # id, limit, count
_RESULT = struct.Struct(">BI")      # status, length (after the result bytes)
_REPLY = struct.Struct(">III")      # id, first, count
_HELLO = b"llll-pool/2"
_READ = 1 << 16
_READ_MAX = 1 << 20     # bytes asked of one read: a frame's memory grows as it comes
MAX_FRAME = 64 << 20    # the default largest frame received, as in the C library


class Channel:
    """Frames over a read fd and a write fd (the same fd for a socket).
    recv refuses a frame over max_frame bytes (64 MiB by default)."""

    def __init__(self, rfd, wfd=None, max_frame=MAX_FRAME):
        self.rfd = rfd
        self.wfd = rfd if wfd is None else wfd
        self.max_frame = max_frame
        self._buf = bytearray()

    def send(self, data):
        """Sends one frame: data (bytes-like) after its 4-byte length."""
        data = memoryview(data).cast("B")
        frame = _HEADER.pack(len(data)) + data if len(data) < _READ else None
        if frame is not None:
            self._write(frame)
        else:   # a large frame is not copied
            self._write(_HEADER.pack(len(data)))
            self._write(data)

    def _write(self, data):
        view = memoryview(data)
        while view:
            view = view[os.write(self.wfd, view):]

    def recv(self):
        """The next frame's bytes, or None when the peer closed the channel
        between two frames. A channel that ends inside a frame raises
        EOFError; a frame over max_frame raises ValueError, before any of
        its bytes is read (the channel is then of no more use)."""
        head = self._read(4, at_start=True)
        if head is None:
            return None
        (n,) = _HEADER.unpack(head)
        if n > self.max_frame:
            raise ValueError("llll: a frame of %d bytes, over max_frame (%d)" % (n, self.max_frame))
        return self._read(n)

    def _read(self, n, at_start=False):
        buf = self._buf
        while len(buf) < n:
            chunk = os.read(self.rfd, min(max(_READ, n - len(buf)), _READ_MAX))
            if not chunk:
                if at_start and not buf:
                    return None
                raise EOFError("llll: the channel ended inside a frame")
            buf += chunk
        data = bytes(buf[:n])
        del buf[:n]
        return data

    def close(self):
        os.close(self.rfd)
        if self.wfd != self.rfd:
            os.close(self.wfd)


def channel():
    """The channel llll set up for this process, from LLLL_SBC_FD ("N": a
    socket, or "R,W": two fds). The variable is removed from the environment
    so that this process's children do not inherit it, and the fds are not
    inherited either. KeyError when this process was not started by llll."""
    spec = os.environ.pop("LLLL_SBC_FD")
    fds = [int(x) for x in spec.split(",")]
    if len(fds) not in (1, 2) or min(fds) < 0:
        raise ValueError("llll: LLLL_SBC_FD is not N or R,W: %r" % spec)
    for fd in fds:
        os.set_inheritable(fd, False)
    return Channel(*fds)


def _answer(fn, arg):
    """fn's result as (status, bytes): 0 and its bytes (None: none, a str:
    UTF-8), or 1 and the text of the exception it raised (or of a result of
    another type)."""
    try:
        res = fn(arg)
    except Exception as e:
        text = "".join(traceback.format_exception_only(type(e), e)).strip()
        return 1, text.encode("utf-8", "replace")
    if res is None:
        return 0, b""
    if isinstance(res, str):
        return 0, res.encode("utf-8")
    if isinstance(res, (bytes, bytearray, memoryview)):
        return 0, bytes(res)
    text = "TypeError: fn returned %s, not bytes or str" % type(res).__name__
    return 1, text.encode("utf-8")


def serve(fn):
    """Makes this process a pool worker: answers calls with fn(arg: bytes) ->
    bytes until the pool closes the channel, then returns 0. An exception
    raised by fn fails that call with -EREMOTEIO, the exception's text as the
    result; the worker goes on serving."""
    ch = channel()
    ch.max_frame = 0xFFFFFFFF   # the master bounds what it sends (its max_frame)
    try:
        ch.send(_HELLO)
        while _serve_one(ch, fn):
            pass
    except (BrokenPipeError, ConnectionResetError):
        pass    # the master went away while fn ran
    return 0


def _serve_one(ch, fn):
    """Answers one request frame; False at the end of the channel."""
    req = ch.recv()
    if req is None:
        return False
    rid, limit, count = _REQUEST.unpack_from(req, 0)
    pos, first, parts, size, n = _REQUEST.size, 0, [], 0, 0
    for _ in range(count):
        (length,) = _HEADER.unpack_from(req, pos)
        arg = req[pos + 4:pos + 4 + length]
        if len(arg) != length:
            raise ValueError("llll: a request frame that does not parse")
        pos += 4 + length
        status, res = _answer(fn, arg)
        if len(res) + _RESULT.size + _REPLY.size > limit:
            status, res = 2, b""     # over the master's limit
        if n and size + len(res) + _RESULT.size + _REPLY.size > limit:
            parts.append(_REPLY.pack(rid, first, n))
            ch.send(b"".join(parts))
            first, parts, size, n = first + n, [], 0, 0
        parts.append(res)
        parts.append(_RESULT.pack(status, len(res)))
        size += len(res) + _RESULT.size
        n += 1
    parts.append(_REPLY.pack(rid, first, n))
    ch.send(b"".join(parts))
    return True
