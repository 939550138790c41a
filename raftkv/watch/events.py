"""Watch events and their wire encodings (SSE and NDJSON).

An event is one committed write as the state machine's change feed gave
it: ``(revision, sub, key, record)``, record None for a delete. Events of
one transaction share a revision and are ordered by ``sub``. The encoded
bytes of an event are cached on it, so a thousand watchers of one prefix
encode each event once (watchers asking for ``prev_kv`` get their own).
"""

from __future__ import annotations

import base64
from typing import Any

import orjson

from raftkv.kv.mvcc import Version

SSE = "sse"
NDJSON = "ndjson"


def value_fields(value: bytes) -> dict[str, str]:
    """``value`` as the watch API shows it: text, or ``value_base64`` when
    the bytes are not UTF-8 (issue #11's shape)."""
    try:
        return {"value": value.decode("utf-8")}
    except UnicodeDecodeError:
        return {"value_base64": base64.b64encode(value).decode("ascii")}


class Event:
    __slots__ = ("revision", "sub", "key", "record", "_encoded")

    def __init__(self, revision: int, sub: int, key: str, record: tuple[bytes, int, int, int] | None) -> None:
        self.revision = revision
        self.sub = sub
        self.key = key
        self.record = record  # (value, create_revision, mod_revision, version); None: deleted
        self._encoded: dict[str, bytes] = {}

    @property
    def kind(self) -> str:
        return "delete" if self.record is None else "put"

    @property
    def size(self) -> int:
        """Roughly the bytes this event holds (for queue bounds)."""
        return 64 + len(self.key) + (0 if self.record is None else len(self.record[0]))

    def to_json(self, prev: Version | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"type": self.kind, "key": self.key}
        if self.record is None:
            body.update(revision=self.revision, create_revision=0, mod_revision=self.revision, version=0)
        else:
            value, create_revision, _mod, version = self.record
            body.update(value_fields(value))
            body.update(
                revision=self.revision, create_revision=create_revision, mod_revision=self.revision, version=version
            )
        if prev is not None and prev[0] is not None:
            body["prev_kv"] = {
                "key": self.key,
                **value_fields(prev[0]),
                "create_revision": prev[1],
                "mod_revision": prev[2],
                "version": prev[3],
            }
        return body

    def encode(self, fmt: str) -> bytes:
        """The event without prev_kv, framed for ``fmt`` (cached)."""
        data = self._encoded.get(fmt)
        if data is None:
            data = frame(fmt, self.kind, self.revision, self.to_json())
            self._encoded[fmt] = data
        return data


def frame(fmt: str, kind: str, event_id: int | None, body: dict[str, Any]) -> bytes:
    """One message: an SSE event (``id:`` when ``event_id`` is given) or one NDJSON line."""
    data = orjson.dumps(body)
    if fmt == NDJSON:
        return data + b"\n"
    head = b"" if event_id is None else b"id: %d\n" % event_id
    return head + b"event: " + kind.encode() + b"\ndata: " + data + b"\n\n"


def progress(fmt: str, revision: int) -> bytes:
    """A progress notification: every event up to ``revision`` was delivered.
    In SSE it carries ``id: revision``, so an EventSource resumes after it."""
    return frame(fmt, "progress", revision, {"type": "progress", "revision": revision})


def end(fmt: str, error: dict[str, Any]) -> bytes:
    """The last message of a stream the server ends: why, and where to resume."""
    return frame(fmt, "end", None, {"type": "end", "error": error})


PING = b": ping\n\n"
