"""A watch iterator that survives node failures (issue #11 part 5).

:class:`Watch` reads ``GET /v1/watch`` as NDJSON over plain blocking
sockets and yields each committed change once, in revision order. When its
node fails, goes silent, loses its leader, stops, or ends the stream because
the client fell behind, it reconnects (the next endpoint first) from the
last revision it has fully seen, and skips the events of a half-seen
transaction it already yielded: no gap, no duplicate. Only a start below
the compacted revision is final (:class:`WatchCompacted`).

It runs on the caller's thread (a plain iterator, no event loop), so the
CLI, tests and thread-based tools can use it as is. Over https:// it trusts
``ca_file`` and shows ``cert_file``; with ``user``/``password`` it logs in
and sends the token, and logs in again when a reconnect gets a 401 for an
expired or revoked token (an open stream is not ended by its token's expiry).
"""

from __future__ import annotations

import base64
import http.client
import socket
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import orjson

from raftkv.client.blocking import BearerAuth, connect, error_of
from raftkv.client.errors import ClientError, InvalidResponse, RequestRejected, TLSFailure
from raftkv.client.models import KeyValue
from raftkv.client.tls import FilePath, client_ssl_context, is_tls_failure, tls_error_text, tls_failure_hint

# A healthy stream sends a progress line this often (we ask for it) ...
PROGRESS_INTERVAL = 2.0
# ... so this much silence means the node or the path to it is gone.
SILENCE_TIMEOUT = 10.0


class WatchCompacted(ClientError):
    """The revision to watch from is compacted: read the current state and
    watch from its revision + 1."""

    def __init__(self, message: str, compact_revision: int) -> None:
        super().__init__(message)
        self.compact_revision = compact_revision


@dataclass(frozen=True)
class WatchEvent:
    type: str  # "put" or "delete"
    key: str
    value: bytes | None  # None for a delete
    revision: int
    create_revision: int
    mod_revision: int
    version: int
    prev_kv: KeyValue | None = None

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"type": self.type, "key": self.key}
        if self.value is not None:
            try:
                body["value"] = self.value.decode("utf-8")
            except UnicodeDecodeError:
                body["value_base64"] = base64.b64encode(self.value).decode("ascii")
        body.update(
            revision=self.revision,
            create_revision=self.create_revision,
            mod_revision=self.mod_revision,
            version=self.version,
        )
        if self.prev_kv is not None:
            body["prev_kv"] = self.prev_kv.to_json()
        return body


def _value(body: dict[str, Any]) -> bytes | None:
    if "value_base64" in body:
        return base64.b64decode(body["value_base64"])
    text = body.get("value")
    return None if text is None else str(text).encode("utf-8")


def parse_event(body: dict[str, Any]) -> WatchEvent:
    try:
        prev = body.get("prev_kv")
        return WatchEvent(
            type=body["type"],
            key=body["key"],
            value=_value(body) if body["type"] == "put" else None,
            revision=int(body["revision"]),
            create_revision=int(body["create_revision"]),
            mod_revision=int(body["mod_revision"]),
            version=int(body["version"]),
            prev_kv=None
            if prev is None
            else KeyValue(
                prev["key"], _value(prev), int(prev["create_revision"]), int(prev["mod_revision"]), int(prev["version"])
            ),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidResponse(f"bad watch event {body!r}: {exc}") from None


class _Reconnect(Exception):
    """This stream is over; continue on a node from the resume point."""


class Watch:
    """Iterate the committed changes to ``key`` or under ``prefix``.

    ``start_revision`` (inclusive) defaults to "now" as of a linearizable
    read on the first node that answers. :attr:`revision` is the last
    revision whose events were all yielded. ``max_reconnects`` (None:
    unlimited) bounds consecutive failed connection attempts. ``user`` and
    ``password``, ``ca_file``, ``cert_file`` and ``key_file`` as for
    :class:`~raftkv.client.Client`.
    """

    def __init__(
        self,
        endpoints: Sequence[str],
        key: str | None = None,
        prefix: str | None = None,
        start_revision: int | None = None,
        prev_kv: bool = False,
        filters: Sequence[str] = (),
        max_reconnects: int | None = None,
        silence_timeout: float = SILENCE_TIMEOUT,
        progress_interval: float = PROGRESS_INTERVAL,
        user: str | None = None,
        password: str | None = None,
        ca_file: FilePath | None = None,
        cert_file: FilePath | None = None,
        key_file: FilePath | None = None,
    ) -> None:
        if (key is None) == (prefix is None):
            raise ValueError("give exactly one of key and prefix")
        if not endpoints:
            raise ValueError("no endpoints")
        # Both checked here, so a bad file or a lone user fails before any connection.
        self._ssl = client_ssl_context(ca_file, cert_file, key_file)
        self._auth = BearerAuth(user, password, self._ssl)
        self.endpoints = [e.rstrip("/") for e in endpoints]
        self.key = key
        self.prefix = prefix
        self.prev_kv = prev_kv
        self.filters = tuple(filters)
        self.max_reconnects = max_reconnects
        self.silence_timeout = silence_timeout
        self.progress_interval = progress_interval
        # Every event below _resume was yielded, and _seen_at_resume events
        # of revision _resume (a transaction the last stream broke into).
        self._resume: int | None = start_revision
        self._seen_at_resume = 0
        self._endpoint = 0
        self._conn: http.client.HTTPConnection | None = None
        self._closed = False
        self.reconnects = 0  # streams started after the first (for tests and metrics)
        self.endpoint_in_use: str | None = None

    @property
    def revision(self) -> int | None:
        """The last revision all of whose events were yielded (None: not started)."""
        return None if self._resume is None else self._resume - 1

    def close(self) -> None:
        self._closed = True
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def __enter__(self) -> "Watch":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[WatchEvent]:
        failures = 0
        tls_failures = 0  # handshakes failed in a row: every node at once is a configuration error
        first = True
        while not self._closed:
            endpoint = self.endpoints[self._endpoint % len(self.endpoints)]
            try:
                lines = self._open(endpoint)
                if not first:
                    self.reconnects += 1
                first = False
                failures = tls_failures = 0
                yield from self._read(lines)
            except _Reconnect:
                pass
            except (OSError, http.client.HTTPException) as exc:
                if self._closed:
                    return
                failures += 1
                gave_up = self.max_reconnects is not None and failures > self.max_reconnects
                tls_failures = tls_failures + 1 if is_tls_failure(exc) else 0
                if tls_failures and (gave_up or tls_failures >= len(self.endpoints)):
                    text = tls_error_text(exc)
                    raise TLSFailure(
                        f"the TLS handshake failed with every endpoint: {tls_failure_hint(text)} ({endpoint}: {text})",
                        text,
                    ) from exc
                if gave_up:
                    raise
                time.sleep(min(0.05 * 2 ** min(failures, 5), 1.0))
            except Exception:
                if self._closed:
                    # close() from another thread took the connection from under
                    # a read; http.client then fails in its own ways (fp is None).
                    return
                raise
            finally:
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None
            self._endpoint += 1  # another node next

    def _params(self) -> dict[str, str]:
        params: dict[str, str] = {"progress_interval": f"{self.progress_interval:g}"}
        if self.key is not None:
            params["key"] = self.key
        else:
            params["prefix"] = self.prefix  # type: ignore[assignment]
        if self._resume is not None:
            params["start_revision"] = str(self._resume)
        if self.prev_kv:
            params["prev_kv"] = "true"
        if self.filters:
            params["filter"] = ",".join(self.filters)
        return params

    def _open(self, endpoint: str) -> Iterator[bytes]:
        resp = self._request(endpoint)
        if resp.status == 200:
            return self._lines(resp)
        error = error_of(resp.read())
        if self._auth.renew(resp.status, error.get("code")):
            # Our token expired or was revoked while we were away (or auth
            # was switched on): log in again, on this node, and ask once more.
            resp = self._request(endpoint)
            if resp.status == 200:
                return self._lines(resp)
            error = error_of(resp.read())
        if resp.status == 410:
            raise WatchCompacted(error.get("message", "compacted"), int(error.get("compact_revision", 0)))
        if resp.status >= 500:
            raise ConnectionError(f"{endpoint}: {resp.status} {error.get('code')}")  # try another node
        raise RequestRejected(resp.status, error.get("code", "unknown"), error.get("message", ""), error)

    def _request(self, endpoint: str) -> http.client.HTTPResponse:
        if self._conn is not None:
            self._conn.close()
        headers = {"Accept": "application/x-ndjson", **self._auth.headers(endpoint)}
        conn = connect(endpoint, self.silence_timeout, self._ssl)
        self._conn = conn
        self.endpoint_in_use = endpoint
        conn.request("GET", "/v1/watch?" + urlencode(self._params()), headers=headers)
        return conn.getresponse()

    def _lines(self, resp: http.client.HTTPResponse) -> Iterator[bytes]:
        if self._resume is None:
            self._resume = int(resp.headers["X-Raftkv-Start-Revision"])
            self._seen_at_resume = 0
        return iter(resp.readline, b"")

    def _read(self, lines: Iterator[bytes]) -> Iterator[WatchEvent]:
        skip = self._seen_at_resume  # events of a half-seen txn yielded before
        for line in lines:
            if not line.strip():
                continue
            try:
                body = orjson.loads(line)
            except orjson.JSONDecodeError:
                raise InvalidResponse(f"bad watch line {line[:200]!r}") from None
            kind = body.get("type")
            if kind == "progress":
                self._advance_to(int(body["revision"]) + 1)
                continue
            if kind == "end":
                error = body.get("error", {})
                if error.get("code") == "compacted":
                    raise WatchCompacted(error.get("message", "compacted"), int(error.get("compact_revision", 0)))
                raise _Reconnect()
            event = parse_event(body)
            assert self._resume is not None
            if event.revision < self._resume:
                continue  # cannot happen with a correct server; never yield twice
            if event.revision == self._resume and skip:
                skip -= 1
                continue
            if event.revision > self._resume:
                self._resume, self._seen_at_resume = event.revision, 0
            self._seen_at_resume += 1
            skip = 0
            yield event
        raise _Reconnect()  # the server closed the stream

    def _advance_to(self, resume: int) -> None:
        assert self._resume is not None
        if resume > self._resume:
            self._resume, self._seen_at_resume = resume, 0
