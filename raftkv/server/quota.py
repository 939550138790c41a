"""A space quota on the state machine's store, like etcd's
``--quota-backend-bytes``.

While the store's pages in use exceed the quota, a write that would grow
it is refused before it is proposed: 507 ``no_space``, nothing applied.
Reads, deletes and compaction go on, so an operator can free room (delete
keys, compact the history); once the pages in use drop under the quota,
writes are accepted again.

Why before proposing and not when applying: every replica must agree on
whether an entry applies. A check in the apply path would read each
replica's own file, which differ in free pages and timing, so replicas
could disagree. Here a command is refused on the node that received it
and never enters the log; every entry that does enter the log applies
everywhere. A node that proposes while a little under the quota can take
the store somewhat past it: the LMDB map is sized at twice the quota
(``map_size_for_quota``), so the apply path never hits the map's limit
because of that.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from raftkv.kv.store import Store
from raftkv.server.responses import ApiError

if TYPE_CHECKING:
    from raftkv.server.http_api import HttpApi

# Commands that add data; all others (deletes, compaction, lease revocation
# and keep-alives, no-ops) are allowed past the quota, as in etcd's NOSPACE
# alarm, so room can be freed.
_GROWING_OPS = frozenset({"put", "lease_grant"})
_GROWING_TXN_OPS = frozenset({"put", "add"})
# Measuring costs a few stat calls; under load one measure serves many writes.
_MEASURE_EVERY_SECONDS = 0.05

NO_SPACE_STATUS = 507


def grows_store(command: dict[str, Any]) -> bool:
    op = command.get("op")
    if op in _GROWING_OPS:
        return True
    if op == "txn":
        for branch in ("success", "failure"):
            ops = command.get(branch)
            if isinstance(ops, list) and any(isinstance(o, dict) and o.get("op") in _GROWING_TXN_OPS for o in ops):
                return True
    return False


class SpaceQuota:
    def __init__(
        self,
        store: Callable[[], Store],
        quota_bytes: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``store`` returns the state machine's current store (a snapshot
        install replaces it); ``quota_bytes`` 0 means no quota."""
        self._store = store
        self.quota_bytes = quota_bytes
        self._clock = clock
        self._measured_at = float("-inf")
        self._used: int | None = None

    def used_bytes(self, fresh: bool = False) -> int | None:
        now = self._clock()
        if fresh or now - self._measured_at >= _MEASURE_EVERY_SECONDS:
            self._used = self._store().used_bytes()
            self._measured_at = now
        return self._used

    @property
    def exceeded(self) -> bool:
        if not self.quota_bytes:
            return False
        used = self.used_bytes()
        return used is not None and used > self.quota_bytes

    def check(self, command: dict[str, Any]) -> None:
        """Raise 507 no_space for a command that would grow a store past its quota."""
        if not self.exceeded or not grows_store(command):
            return
        raise ApiError(
            NO_SPACE_STATUS,
            "no_space",
            f"the store holds {self._used} bytes, over its quota of {self.quota_bytes} bytes "
            "(--quota-backend-bytes); the write was not applied. Deletes and compaction "
            "(POST /v1/compaction) still work and free room; reads are unaffected",
            used_bytes=self._used,
            quota_bytes=self.quota_bytes,
        )

    def status(self) -> dict[str, Any]:
        """The ``quota`` section of /v1/status."""
        used = self.used_bytes(fresh=True)
        return {
            "quota_bytes": self.quota_bytes,
            "used_bytes": used,
            "no_space": bool(self.quota_bytes and used is not None and used > self.quota_bytes),
        }


def install(api: HttpApi, quota_bytes: int) -> SpaceQuota:
    """Guard ``api``'s writes with the quota and show it in /v1/status."""
    quota = SpaceQuota(lambda: api.machine.store, quota_bytes)
    api.write_guards.append(quota.check)
    api.status_sections["quota"] = quota.status
    return quota
