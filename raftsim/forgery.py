"""Forged and corrupted peer frames, and the rule that decides which may be
delivered.

Three kinds, each sent on a real link (the sender the transport
authenticated is a real node):

* **garbage**: the encoded bytes of a real message with random bytes
  flipped, cut off or appended, or random bytes outright. Delivered when the
  decoder refuses them (the node must drop them), or when they decode to the
  very message they came from. A mutation that decodes to a *different*
  well-formed message is not delivered: that is a Byzantine peer (or a
  corruption TCP's and TLS's checksums reject), which Raft does not
  tolerate and no validation can detect. The decoder must never raise
  anything but CodecError: anything else is recorded as a problem.
* **out of range**: a real message with one integer (term, index, commit,
  an entry's index or term, ...) replaced by a value the WAL cannot hold or
  a negative one, or an unknown message type. Always delivered; the codec's
  validation must refuse it.
* **impersonation**: a real message claiming another sender than the link's,
  or a message from a node that is not a member. Always delivered; the
  receiver's sender checks must drop it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import msgpack

from raftkv.raft.codec import CodecError, decode_message
from raftkv.raft.messages import Message

MAX_WIRE_INT = 2**63 - 1  # raftkv.raft.validation: the largest integer a peer may send
OUT_OF_RANGE = (2**63, 2**64 - 1, -1)
_INT_FIELDS = ("term", "log_term", "index", "commit", "hint", "read_seq", "snap_offset")
_packb = msgpack.Packer(use_bin_type=True).pack
OUTSIDER = "mallory"  # a node id that is never a member


@dataclass
class ForgeryStats:
    garbage: int = 0
    out_of_range: int = 0
    impersonations: int = 0
    withheld: int = 0  # mutations that decoded to another well-formed message
    problems: list[str] = field(default_factory=list)


def _raw(m: Message) -> list[Any]:
    fields: list[Any] = list(m)
    fields[6] = [list(e) for e in m.entries]
    if m.snapshot is not None:
        s = m.snapshot
        fields[12] = [s.index, s.term, [list(s.conf.voters), list(s.conf.learners)]]
    return fields


class Forger:
    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self.stats = ForgeryStats()

    def forge(self, frm: str, to: str, data: bytes, node_ids: list[str]) -> tuple[str, bytes] | None:
        """A forged frame to deliver to ``to``: (link sender, payload), or None."""
        rng = self._rng
        kind = rng.randrange(3)
        if kind == 0:
            return self._garbage(frm, data)
        original = decode_message(data)
        if kind == 1:
            self.stats.out_of_range += 1
            return frm, self._out_of_range(original)
        self.stats.impersonations += 1
        others = [n for n in node_ids if n not in (frm, to)]
        if others and rng.random() < 0.7:
            return frm, _packb(_raw(original._replace(frm=rng.choice(others))))
        return OUTSIDER, _packb(_raw(original._replace(frm=OUTSIDER)))

    def _garbage(self, frm: str, data: bytes) -> tuple[str, bytes] | None:
        rng = self._rng
        buf = bytearray(data)
        how = rng.randrange(4)
        if how == 0 or not buf:
            buf = bytearray(rng.randbytes(rng.randint(0, 40)))
        elif how == 1:
            del buf[rng.randrange(len(buf)) :]
        elif how == 2:
            buf += rng.randbytes(rng.randint(1, 8))
        else:
            for _ in range(rng.randint(1, 3)):
                buf[rng.randrange(len(buf))] = rng.randrange(256)
        payload = bytes(buf)
        try:
            decoded = decode_message(payload)
        except CodecError:
            self.stats.garbage += 1
            return frm, payload
        except Exception as exc:  # noqa: BLE001 - any other exception is the finding
            self.stats.problems.append(f"decode_message raised {exc!r} on {payload.hex()}")
            return None
        if decoded == decode_message(data):
            self.stats.garbage += 1
            return frm, payload
        self.stats.withheld += 1
        return None

    def _out_of_range(self, m: Message) -> bytes:
        rng = self._rng
        raw = _raw(m)
        value = rng.choice(OUT_OF_RANGE)
        targets: list[tuple[str, int]] = [("field", Message._fields.index(f)) for f in _INT_FIELDS]
        targets.append(("type", 0))
        if raw[6]:
            targets += [("entry", 0), ("entry", 1), ("entry", 2)]
        if raw[12] is not None:
            targets += [("snapshot", 0), ("snapshot", 1)]
        where, i = rng.choice(targets)
        if where == "field":
            raw[i] = value
        elif where == "type":
            raw[0] = rng.choice((15, 99, -1))
        elif where == "entry":
            entry = raw[6][rng.randrange(len(raw[6]))]
            entry[i] = value if i < 2 else rng.choice((7, 255, -1))
        else:
            raw[12][i] = value
        return _packb(raw)


def out_of_range_field(m: Message) -> str | None:
    """The first integer of ``m`` outside 0..MAX_WIRE_INT, or None."""
    for name in _INT_FIELDS:
        value = getattr(m, name)
        if not 0 <= value <= MAX_WIRE_INT:
            return f"{name}={value}"
    for e in m.entries:
        if not (0 <= e.index <= MAX_WIRE_INT and 0 <= e.term <= MAX_WIRE_INT):
            return f"entry ({e.index}, {e.term})"
    s = m.snapshot
    if s is not None and not (0 <= s.index <= MAX_WIRE_INT and 0 <= s.term <= MAX_WIRE_INT):
        return f"snapshot ({s.index}, {s.term})"
    return None
