"""msgpack encoding with a reused Packer per thread.

``msgpack.packb`` builds a new Packer (and its buffer) on every call, which
costs several times the encoding of a small record; commands and MVCC
records are encoded on every write. A Packer is not safe to share between
threads, so each thread gets its own (the event loop's, a snapshot
thread's). A Packer resets itself after a failed pack, so an error leaves
the next call clean.
"""

from __future__ import annotations

import threading
from typing import Any

import msgpack

_local = threading.local()


def pack(value: Any) -> bytes:
    """``msgpack.packb(value, use_bin_type=True)``, faster."""
    try:
        packer = _local.packer
    except AttributeError:
        packer = _local.packer = msgpack.Packer(use_bin_type=True)
    return packer.pack(value)
