"""The seccomp filter programs run under: compiled here by libseccomp (``pyseccomp``) when
it is installed, installed by the helper after the program's uid drop."""

from __future__ import annotations

import errno
import logging
import tempfile

logger = logging.getLogger(__name__)


def _seccomp_filter() -> bytes:
    """The classic-BPF program denying ``socket()`` (and io_uring, which can open sockets)."""
    try:
        import pyseccomp
    except Exception as exc:  # noqa: BLE001 - ImportError, or libseccomp.so missing
        logger.warning("Sandbox: no seccomp filter (libseccomp unavailable: %s).", exc)
        return b""
    filt = pyseccomp.SyscallFilter(defaction=pyseccomp.ALLOW)
    filt.add_rule(pyseccomp.ERRNO(errno.EACCES), "socket")
    for name in ("io_uring_setup", "io_uring_enter", "io_uring_register"):
        filt.add_rule(pyseccomp.ERRNO(errno.EPERM), name)
    with tempfile.TemporaryFile() as handle:
        filt.export_bpf(handle)
        handle.seek(0)
        return handle.read()
