"""``GET /v1/snapshot``: a backup of the whole state, streamed.

After a linearizable read fence (``?consistency=serializable`` skips it),
one read transaction of the LMDB store is copied into a file on a worker
thread (LMDB copies in C with the GIL released), its SHA-256 computed
there, and the file streamed in 1 MiB pieces in the backup layout of
raftkv/storage/snapshot_stream_backup.py. The checksum is both in the
``X-Raftkv-Snapshot-Sha256`` header and in the body's trailer, so a saved
file can be checked on its own. The event loop never holds more than one
piece.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from raftkv.kv.store import LmdbStore
from raftkv.server.responses import ApiError
from raftkv.storage.snapshot_stream import FileSnapshotData
from raftkv.storage.snapshot_stream_backup import TRAILER_BYTES, backup_pieces, sha256_of
from raftkv.storage.snapshot_stream_install import write_lmdb_snapshot

if TYPE_CHECKING:
    from raftkv.server.http_api import HttpApi

SHA256_HEADER = "X-Raftkv-Snapshot-Sha256"
# Backups made at once per node: each copies the whole store to disk.
_MAX_CONCURRENT = 2


class SnapshotRoutes:
    def __init__(self, api: HttpApi) -> None:
        self.api = api
        self._running = 0

    async def get_snapshot(self, request: web.BaseRequest) -> web.StreamResponse:
        from raftkv.server.http_api import _query  # the API's own query checks

        api = self.api
        query = _query(request, {"consistency", "timeout"})
        store = api.machine.store
        if not isinstance(store, LmdbStore):
            raise ApiError(
                501, "not_supported", "snapshots are served by the native engine's LMDB store only "
                "(this node runs the pysyncobj engine, which keeps its state in memory)"
            )
        if self._running >= _MAX_CONCURRENT:
            raise ApiError(503, "busy", f"{_MAX_CONCURRENT} snapshots are being made on this node; retry later",
                           headers={"Retry-After": "5"})
        await api._read_fence(query)
        self._running += 1
        try:
            return await self._stream(request, store)
        finally:
            self._running -= 1

    async def _stream(self, request: web.BaseRequest, store: LmdbStore) -> web.StreamResponse:
        machine = self.api.machine
        status = self.api.engine.status()
        # No batch is open between the driver's Readys: this view is the
        # state as of exactly the applied index and revision read with it.
        view = store.frozen()
        header: dict[str, Any] = {
            "revision": machine.revision,
            "compact_revision": machine.compact_revision,
            "applied_index": machine.applied_index,
            "keys": machine.count(),
            "node_id": status.node_id,
            "members": [m.id for m in status.members],
            "created_unix": int(time.time()),
        }
        path = store.path.with_name(f"backup-{secrets.token_hex(6)}.tmp")
        try:
            data, digest = await asyncio.to_thread(_copy, store, view, path, header)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        try:
            pieces = backup_pieces(header, data)
            head = next(pieces)
            response = web.StreamResponse(
                headers={
                    "Content-Type": "application/octet-stream",
                    "Content-Disposition": f'attachment; filename="raftkv-{header["revision"]}.backup"',
                    SHA256_HEADER: digest,
                    "X-Raftkv-Revision": str(header["revision"]),
                },
            )
            response.content_length = len(head) + len(data) + TRAILER_BYTES
            await response.prepare(request)
            await response.write(head)
            for piece in pieces:
                await response.write(piece)
            await response.write_eof()
            return response
        finally:
            data.close()
            path.unlink(missing_ok=True)


def _copy(store: LmdbStore, view: Any, path: Path, header: dict[str, Any]) -> tuple[FileSnapshotData, str]:
    """(on a worker thread) The snapshot data in ``path`` and the backup's SHA-256."""
    try:
        with open(path, "wb") as out:
            write_lmdb_snapshot(store, view, out)
    finally:
        view.close()
    data = FileSnapshotData(path)
    header["data_bytes"] = len(data)
    os.unlink(path)  # the open data keeps it readable; nothing is left behind on a crash
    return data, sha256_of(header, data)


def install(api: HttpApi) -> SnapshotRoutes:
    routes = SnapshotRoutes(api)
    api.add_route("/v1/snapshot", "GET", routes.get_snapshot)
    return routes
