"""The replicated key-value state machine (etcd-style revisions and MVCC
history).

Engines call :meth:`KVStateMachine.apply` once per committed log entry, in
log order, on every replica. Its logic is pure and deterministic: no clock
or randomness, and its only I/O is the :class:`~raftkv.kv.store.Store` it
keeps its state in (in memory, or LMDB on disk), so the same entries in the
same order give byte-identical snapshots everywhere. A committed entry must
never crash a replica, so a malformed command yields an ``invalid_command``
result and changes nothing.

Writes go into one store write transaction per batch: an engine brackets a
run of entries with :meth:`begin_batch` and :meth:`commit_batch`, which
stores the log index applied in the same transaction as the data it covers.
A lone :meth:`apply` outside a batch commits on its own.

Results are plain dicts shared with the idempotency table: callers must
treat them as read-only.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Callable, Iterator
from typing import Any

from raftkv.kv import auth_state, commands, leases, mvcc, snapshot_format
from raftkv.kv.commands import InvalidCommand
from raftkv.kv.idempotency import DEFAULT_MAX_BYTES, DEFAULT_MAX_KEYS, Entry, IdempotencyTable
from raftkv.kv.integers import format_int, in_int64_range, parse_int64
from raftkv.kv.latest_cache import LatestCache
from raftkv.kv.mvcc import META_APPLIED_INDEX, META_COMPACT_REVISION, META_REVISION, int_bytes, pack, unpack
from raftkv.kv.snapshot_format import Record
from raftkv.kv.store import EXTRA_TABLES, MemoryStore, ReadTxn, Store, WriteTxn

KV = dict[str, Any]
Result = dict[str, Any]
# key -> what the running txn made of it so far (None: absent)
Overlay = dict[str, Record | None]
# One write as applied: (revision, sub, key, record); record None is a delete.
Change = tuple[int, int, str, Record | None]
# Told after each committed batch: its writes in order, or None when the
# whole state was replaced (a snapshot restore): re-read the store then.
ChangeListener = Callable[[list[Change] | None], None]

_COMPARE_OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
INVALID_COMMAND = "invalid_command"


class CompactedError(LookupError):
    """A read asked for a revision below the compact revision: that history is gone."""

    def __init__(self, revision: int, compact_revision: int, current_revision: int) -> None:
        super().__init__(
            f"revision {revision} is compacted: history before revision "
            f"{compact_revision} is gone (the current revision is {current_revision})"
        )
        self.compact_revision = compact_revision
        self.current_revision = current_revision


class FutureRevisionError(LookupError):
    """A read asked for a revision the store has not reached."""

    def __init__(self, revision: int, current_revision: int) -> None:
        super().__init__(f"revision {revision} is in the future: the current revision is {current_revision}")
        self.current_revision = current_revision


class _TxnOpFailed(Exception):
    """An op of the chosen txn branch cannot apply; the txn is rolled back."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class KVStateMachine:
    def __init__(
        self,
        max_idempotency_keys: int = DEFAULT_MAX_KEYS,
        max_idempotency_bytes: int = DEFAULT_MAX_BYTES,
        store: Store | None = None,
    ) -> None:
        """Both idempotency bounds decide whether a retry applies again, so
        every replica of a cluster must be built with the same values.
        Without ``store`` the state lives in memory (:class:`MemoryStore`)."""
        self._idempotency = IdempotencyTable(max_idempotency_keys, max_idempotency_bytes)
        self._handlers: dict[str, Callable[[commands.Command], Result]] = {
            "put": self._apply_put,
            "delete": self._apply_delete,
            "delete_prefix": self._apply_delete_prefix,
            "txn": self._apply_txn,
            "noop": self._apply_noop,
            "compact": self._apply_compact,
        }
        self._auth = auth_state.AuthMachine()  # users, roles, the auth switch
        self._handlers.update(self._auth.handlers(self._txn))
        self.leases = leases.LeaseCommands(self._txn, self._delete_keys, lambda: self._revision)
        self._handlers.update(self.leases.handlers())
        self._batch: WriteTxn | None = None
        # Recently used keys' latest state, kept exact by _write (latest_cache.py).
        self._latest = LatestCache()
        self._changes: list[Change] = []  # writes of the open batch, for listeners
        self._state_replaced = False  # the open batch restored a snapshot
        self._change_listeners: list[ChangeListener] = []
        self._revision = 0
        self._compact_revision = 0
        self._applied_index = 0
        self._store: Store = MemoryStore()
        self.attach_store(store if store is not None else self._store)

    def attach_store(self, store: Store) -> None:
        """Keep the state in ``store`` from now on, starting from what it
        holds (an engine opens its on-disk store at start)."""
        if self._batch is not None:
            raise RuntimeError("cannot change stores inside a batch")
        old, self._store = self._store, store
        self._latest.clear()
        txn = store.read()
        try:
            self._revision = mvcc.read_int(txn, META_REVISION)
            self._compact_revision = mvcc.read_int(txn, META_COMPACT_REVISION)
            self._applied_index = mvcc.read_int(txn, META_APPLIED_INDEX)
            self._idempotency.load(list(mvcc.idempotency_items(txn)))
            self._auth.load(txn)
        finally:
            txn.close()
        if old is not store:
            old.close()

    def swap_store(self, store: Store) -> Store:
        """Keep the state in ``store`` (an installed snapshot: a whole new
        state) from now on; return the old store, still open, for the
        caller to close off the event loop (closing syncs). Listeners hear
        that the whole state was replaced."""
        old = self._store
        self._store = store  # attach_store closes only a store it replaces
        self.attach_store(store)
        self._tell_listeners(None)
        return old

    @property
    def store(self) -> Store:
        return self._store

    def add_change_listener(self, listener: ChangeListener) -> None:
        """Call ``listener`` after every committed batch (see ChangeListener).

        Listeners run synchronously on the applying thread after the store
        committed the batch, so a listener reading the store sees the writes;
        they must be quick and must not raise (watch fan-out queues work and
        returns)."""
        self._change_listeners.append(listener)

    def _write(
        self, txn: WriteTxn, key: str, record: Record | None, revision: int, sub: int, lease: int = 0
    ) -> None:
        _write(txn, key, record, revision, sub)
        leases.set_key_lease(txn, key, lease)  # a write without the lease detaches it
        self._latest.put(key, record, lease)
        if self._change_listeners:
            self._changes.append((revision, sub, key, record))

    def _tell_listeners(self, changes: list[Change] | None) -> None:
        for listener in self._change_listeners:
            listener(changes)

    def close_store(self) -> None:
        """Close the store (an LMDB store syncs and marks itself clean)."""
        self._store.close()

    # ---- batches ----------------------------------------------------------

    def begin_batch(self) -> None:
        """Open the write transaction the next applies share."""
        if self._batch is not None:
            raise RuntimeError("a batch is already open")
        self._batch = self._store.write()

    def commit_batch(self, applied_index: int | None = None) -> None:
        """Commit the batch; ``applied_index`` (the last log index it
        covers) is stored in the same transaction as the data."""
        txn = self._batch
        if txn is None:
            raise RuntimeError("no batch is open")
        self._batch = None
        if applied_index is not None:
            self._applied_index = applied_index
        try:
            self._write_meta(txn)
            txn.commit()
        except BaseException:
            txn.abort()
            self._changes, self._state_replaced = [], False
            raise
        if self._state_replaced:
            self._changes, self._state_replaced = [], False
            self._tell_listeners(None)
        elif self._changes:
            changes, self._changes = self._changes, []
            self._tell_listeners(changes)

    def abort_batch(self) -> None:
        """Drop the open batch (the in-memory counters are reloaded from the store)."""
        txn, self._batch = self._batch, None
        self._changes, self._state_replaced = [], False
        self._latest.clear()  # it may hold the batch's writes
        if txn is not None:
            txn.abort()
            self.attach_store(self._store)

    def _write_meta(self, txn: WriteTxn) -> None:
        txn.put("meta", META_REVISION, int_bytes(self._revision))
        txn.put("meta", META_COMPACT_REVISION, int_bytes(self._compact_revision))
        txn.put("meta", META_APPLIED_INDEX, int_bytes(self._applied_index))
        changes = self._idempotency.drain_changes()
        for seq, entry in changes.items():
            if entry is None:
                txn.delete("idem", int_bytes(seq))
            else:
                txn.put("idem", int_bytes(seq), pack(list(entry)))

    @property
    def applied_index(self) -> int:
        """The last log index whose batch the store committed (0: none)."""
        return self._applied_index

    # ---- writes -----------------------------------------------------------

    def apply(self, data: bytes) -> Result:
        if self._batch is not None:
            return self._apply(data)
        self.begin_batch()
        try:
            result = self._apply(data)
        except BaseException:
            self.abort_batch()
            raise
        self.commit_batch()
        return result

    def _apply(self, data: bytes) -> Result:
        try:
            command = commands.decode(data)
        except InvalidCommand as exc:
            return self._invalid(exc)
        idem = command.get("idem")
        if idem is None:
            return self._dispatch(command)
        if type(idem) is not str or not idem:
            return self._invalid(InvalidCommand(f"'idem' must be a non-empty string, got {idem!r}"))
        fingerprint = commands.fingerprint(data)
        first = self._idempotency.get(idem)
        if first is not None:
            return self._answer_retry(idem, fingerprint, first, command)
        result = self._dispatch(command)
        if not _is_invalid(result):  # a malformed command does not spend its key
            self._idempotency.record(idem, fingerprint, _without_command_values(command, result))
        return result

    def apply_command(self, command: commands.Command) -> Result:
        """Apply a command given as a dict (tests, tools): as the engine would
        apply its encoding."""
        return self.apply(commands.encode(command))

    def _dispatch(self, command: commands.Command) -> Result:
        op = command.get("op")
        handler = self._handlers.get(op) if type(op) is str else None
        if handler is None:
            return self._invalid(
                InvalidCommand(f"unknown op {op!r}; expected one of {sorted(commands.WRITE_OPS)}")
            )
        try:
            return handler(command)
        except InvalidCommand as exc:
            return self._invalid(InvalidCommand(f"{op}: {exc}"))

    def _answer_retry(
        self, idem: str, fingerprint: bytes, first: Entry, command: commands.Command
    ) -> Result:
        """The answer to a command whose idempotency key was applied before:
        the first result if it is the same request, else an error; never a
        second application."""
        shown = _quote(idem)
        if first.fingerprint is None:
            return self._error(
                "idempotency_key_reused",
                f"Idempotency-Key {shown} was applied before this store kept request "
                "fingerprints, so this request cannot be matched to it; nothing was applied",
            )
        if first.fingerprint != fingerprint:
            return self._error(
                "idempotency_key_reused",
                f"Idempotency-Key {shown} was already used for a different request "
                "(another method, target or body); nothing was applied. Use a new key "
                "for a new request",
            )
        if first.result is None:
            return self._error(
                "idempotency_result_expired",
                f"the request with Idempotency-Key {shown} was applied once; its result is "
                "no longer kept (the idempotency table's byte bound), so it cannot be "
                "replayed; nothing was applied now",
            )
        return {**_with_command_values(command, first.result), "replayed": True}

    def _txn(self) -> WriteTxn:
        txn = self._batch
        assert txn is not None
        return txn

    def side_table_txn(self) -> WriteTxn:
        """The open batch's transaction, for a side table kept by the
        engine rather than by a command (the members table: a committed
        membership change writes there in the batch of its log index)."""
        return self._txn()

    def _apply_put(self, command: commands.Command) -> Result:
        key = command.get("key")
        value = command.get("value")
        if type(key) is not str or not key or type(value) is not bytes:
            commands.require_key(command)  # raises, naming the field
            commands.require_value(command)
        txn = self._txn()
        lease = command.get("lease", 0)
        if lease:
            lease = leases.require_lease_id(command, "lease")
            if leases.lease_record(txn, lease) is None:
                return leases.not_found(lease, self._revision)
        revision = self._revision + 1
        cached = self._latest.get(key)
        if cached is not None:
            old_record = cached[0]
            record = (
                (value, revision, revision, 1)
                if old_record is None
                else (value, old_record[1], revision, old_record[3] + 1)
            )
        else:
            # A put needs the old create_revision and version, not the old value.
            old = txn.get("latest", mvcc.latest_key(key.encode()))
            if old is None:
                record = (value, revision, revision, 1)
            else:
                create_revision, _mod, _sub, version = unpack(old)
                record = (value, create_revision, revision, version + 1)
        self._write(txn, key, record, revision, 0, lease)
        self._revision = revision
        return {"ok": True, "revision": revision, "kv": _kv(key, record, lease)}

    def _apply_delete(self, command: commands.Command) -> Result:
        key = commands.require_key(command)
        txn = self._txn()
        if txn.get("latest", mvcc.latest_key(key.encode())) is None:
            return {"ok": True, "revision": self._revision, "deleted": 0}
        self._revision += 1
        self._write(txn, key, None, self._revision, 0)
        return {"ok": True, "revision": self._revision, "deleted": 1}

    def _apply_delete_prefix(self, command: commands.Command) -> Result:
        prefix = commands.require_prefix(command)
        txn = self._txn()
        doomed = [key.decode() for key, _ in _scan_latest(txn, prefix, None)]
        if doomed:
            self._revision += 1
            for sub, key in enumerate(doomed):
                self._write(txn, key, None, self._revision, sub)
        return {"ok": True, "revision": self._revision, "deleted": len(doomed)}

    def _apply_noop(self, command: commands.Command) -> Result:
        return {"ok": True, "revision": self._revision}

    def _delete_keys(self, keys: list[str]) -> int:
        """Delete ``keys`` (all existing) at one new revision (lease revoke
        and expiry); the revision after."""
        txn = self._txn()
        self._revision += 1
        for sub, key in enumerate(keys):
            self._write(txn, key, None, self._revision, sub)
        return self._revision

    def _apply_compact(self, command: commands.Command) -> Result:
        revision = commands.require_int(command, "revision")
        if revision > self._revision:
            return self._error(
                "future_revision",
                f"cannot compact at revision {revision}: the current revision is {self._revision}",
            )
        if revision <= self._compact_revision:
            return {
                **self._error(
                    "compacted",
                    f"revision {revision} is already compacted (the compact revision is "
                    f"{self._compact_revision})",
                ),
                "compact_revision": self._compact_revision,
            }
        txn = self._txn()
        # Only the writes since the last compaction are visited: each one
        # supersedes its key's write before it, which goes; and a deletion
        # that is its key's last write at or below the compaction point goes
        # too. Every other write below that point was dropped by an earlier
        # compaction or is its key's state as of it, which stays.
        since = list(txn.scan("history", mvcc.rev_key(self._compact_revision + 1, 0), mvcc.rev_key(revision + 1, 0)))
        for rk, data in since:
            key, value = unpack(data)[:2]
            encoded = key.encode()
            write_revision, sub = mvcc.parse_rev_key(rk)
            previous = mvcc.previous_write(txn, encoded, write_revision, sub)
            if previous is not None:
                txn.delete("history", previous[1])
                txn.delete("index", previous[0])
            if value is None:
                newest = txn.floor("index", mvcc.index_key(encoded, revision, (1 << 32) - 1))
                if newest is not None and newest[0] == mvcc.index_key(encoded, write_revision, sub):
                    txn.delete("history", rk)
                    txn.delete("index", newest[0])
        self._compact_revision = revision
        return {"ok": True, "revision": self._revision, "compact_revision": revision}

    def _apply_txn(self, command: commands.Command) -> Result:
        compares, success, failure = commands.check_txn(command)
        txn = self._txn()
        succeeded = True
        for item in compares:
            if not _compare_holds(_record(txn, item["key"]), item):
                succeeded = False
                break
        branch = success if succeeded else failure
        revision = self._revision + 1
        # Ops see the writes of earlier ops through the overlay; nothing
        # reaches the store until every op of the branch has succeeded.
        overlay: Overlay = {}
        writes: list[tuple[str, Record | None, int]] = []
        results: list[Result] = []
        try:
            for op in branch:
                results.append(self._apply_txn_op(txn, op, revision, overlay, writes))
        except _TxnOpFailed as failed:
            where = f"txn {'success' if succeeded else 'failure'}[{len(results)}]"
            return {
                "ok": False,
                "revision": self._revision,
                "error": {"code": failed.code, "message": f"{where} {failed.message}"},
            }
        if writes:
            self._revision = revision
            for sub, (key, record, lease) in enumerate(writes):
                self._write(txn, key, record, revision, sub, lease)
        return {"ok": True, "succeeded": succeeded, "revision": self._revision, "results": results}

    def _apply_txn_op(
        self,
        txn: WriteTxn,
        op: dict[str, Any],
        revision: int,
        overlay: Overlay,
        writes: list[tuple[str, Record | None, int]],
    ) -> Result:
        name = op["op"]
        if name == "delete_prefix":
            prefix = op["prefix"]
            keys = {key.decode() for key, _ in _scan_latest(txn, prefix, None)}
            keys.update(key for key in overlay if key.startswith(prefix))
            deleted = 0
            for key in sorted(keys):
                if (overlay[key] if key in overlay else _record(txn, key)) is not None:
                    overlay[key] = None
                    writes.append((key, None, 0))
                    deleted += 1
            return {"deleted": deleted}
        key = op["key"]
        old = overlay[key] if key in overlay else _record(txn, key)
        if name == "get":
            return {"kv": None if old is None else _kv(key, old)}
        if name == "delete":
            if old is None:
                return {"deleted": 0}
            overlay[key] = None
            writes.append((key, None, 0))
            return {"deleted": 1}
        lease = 0
        if name == "put":
            value = op["value"]
            lease = op.get("lease", 0)
            if lease and leases.lease_record(txn, lease) is None:
                raise _TxnOpFailed("lease_not_found", f"put: lease {leases.format_id(lease)} does not exist")
        else:  # add
            current = 0 if old is None else parse_int64(old[0])
            if current is None:
                raise _TxnOpFailed(
                    "not_a_number",
                    f"add: key {_quote(key)} holds a value that is not a base-10 "
                    f"signed 64-bit integer, so nothing was applied",
                )
            total = current + op["delta"]
            if not in_int64_range(total):
                raise _TxnOpFailed(
                    "out_of_range",
                    f"add: key {_quote(key)} would become {total}, outside the "
                    f"signed 64-bit range, so nothing was applied",
                )
            value = format_int(total)
        record = (value, revision, revision, 1) if old is None else (value, old[1], revision, old[3] + 1)
        overlay[key] = record
        writes.append((key, record, lease))
        return {"kv": _kv(key, record, lease)}

    def _invalid(self, exc: InvalidCommand) -> Result:
        return self._error(INVALID_COMMAND, str(exc))

    def _error(self, code: str, message: str) -> Result:
        return {"ok": False, "revision": self._revision, "error": {"code": code, "message": message}}

    # ---- reads ------------------------------------------------------------

    @property
    def revision(self) -> int:
        return self._revision

    @property
    def auth(self) -> auth_state.AuthView:
        """Users, roles and the auth switch as of the last applied entry
        (an immutable view: safe to hold on another thread)."""
        return self._auth.view

    @property
    def compact_revision(self) -> int:
        """Reads below this revision answer CompactedError (0: nothing compacted)."""
        return self._compact_revision

    @property
    def max_idempotency_keys(self) -> int:
        return self._idempotency.max_keys

    @property
    def max_idempotency_bytes(self) -> int:
        return self._idempotency.max_bytes

    @property
    def idempotency_keys(self) -> int:
        """How many idempotency keys are currently remembered."""
        return len(self._idempotency)

    def _read(self) -> ReadTxn:
        return self._batch if self._batch is not None else self._store.read()

    def _done(self, txn: ReadTxn) -> None:
        if txn is not self._batch:
            txn.close()

    def _check_revision(self, revision: int) -> None:
        if revision > self._revision:
            raise FutureRevisionError(revision, self._revision)
        if revision < self._compact_revision:
            raise CompactedError(revision, self._compact_revision, self._revision)

    def get(self, key: str, revision: int | None = None) -> KV | None:
        """The key now, or as of ``revision`` (CompactedError below the
        compact revision, FutureRevisionError beyond the current one)."""
        if revision is None or revision == self._revision:
            cached = self._latest.get(key)
            if cached is None:
                cached = self._load_latest(key)
            record, lease = cached
            return None if record is None else _kv(key, record, lease)
        txn = self._read()
        try:
            self._check_revision(revision)
            found = mvcc.version_at(txn, key.encode(), revision)
            if found is None or found[0] is None:
                return None
            return _kv(key, found)  # type: ignore[arg-type]
        finally:
            self._done(txn)

    def _load_latest(self, key: str) -> tuple[Record | None, int]:
        """``key``'s latest record and lease from the store, now cached."""
        txn = self._read()
        try:
            record = _record(txn, key)
            lease = 0 if record is None else leases.lease_of(txn, key)
        finally:
            self._done(txn)
        self._latest.put(key, record, lease)
        return record, lease

    def range(
        self,
        prefix: str = "",
        limit: int | None = None,
        start_after: str | None = None,
        revision: int | None = None,
    ) -> tuple[list[KV], bool]:
        """Keys starting with ``prefix`` (after ``start_after``), sorted, now
        or as of ``revision``; and whether more such keys remain beyond ``limit``."""
        if limit is not None and (type(limit) is not int or limit < 1):
            raise ValueError(f"limit must be a positive integer or None, got {limit!r}")
        txn = self._read()
        try:
            kvs: list[KV] = []
            if revision is None or revision == self._revision:
                for key, data in _scan_latest(txn, prefix, start_after):
                    if limit is not None and len(kvs) == limit:
                        return kvs, True
                    name = key.decode()
                    kvs.append(_kv(name, _latest_record(txn, data), leases.lease_of(txn, name)))
                return kvs, False
            self._check_revision(revision)
            after = None if start_after is None else start_after.encode()
            for key, found in mvcc.range_at(txn, prefix.encode(), after, revision):
                if limit is not None and len(kvs) == limit:
                    return kvs, True
                kvs.append(_kv(key.decode(), found))  # type: ignore[arg-type]
            return kvs, False
        finally:
            self._done(txn)

    def count(self, prefix: str = "") -> int:
        txn = self._read()
        try:
            if not prefix:
                return txn.count("latest")
            return sum(1 for _ in _scan_latest(txn, prefix, None))
        finally:
            self._done(txn)

    def __len__(self) -> int:
        return self.count()

    # ---- snapshots --------------------------------------------------------

    def snapshot(self) -> bytes:
        txn = self._read()
        try:
            return _encode_snapshot(txn)
        finally:
            self._done(txn)

    def snapshot_job(self) -> Callable[[], bytes]:
        """The state as of now, to be encoded by calling the result, on any
        thread, while applies go on (a read transaction of the store)."""
        if self._batch is not None:
            raise RuntimeError("cannot snapshot inside a batch")
        view = self._store.frozen()

        def encode() -> bytes:
            try:
                return _encode_snapshot(view)
            finally:
                view.close()

        return encode

    def clear(self, applied_index: int) -> None:
        """Forget everything: the empty state, as of log index ``applied_index``."""
        self.restore(snapshot_format.encode(0, 0, [], []), applied_index)

    def restore(self, data: bytes, applied_index: int | None = None) -> None:
        """Replace all state with ``data`` (and store ``applied_index`` with
        it, when given); on ValueError nothing changed."""
        contents = snapshot_format.decode(data)
        own_batch = self._batch is None
        if own_batch:
            self.begin_batch()
        txn = self._txn()
        try:
            for table in ("latest", "index", "history", "idem", *EXTRA_TABLES):
                txn.clear(table)
            self._latest.clear()
            for table, items in contents.tables.items():
                for key, value in items:
                    txn.put(table, key, value)
            latest: dict[str, tuple[int, int, bytes | None, int, int]] = {}
            for rev, sub, key, value, create_revision, version in contents.history:
                rk = mvcc.rev_key(rev, sub)
                txn.put("history", rk, pack([key, value, create_revision, version]))
                txn.put("index", mvcc.index_key(key.encode(), rev, sub), b"")
                latest[key] = (rev, sub, value, create_revision, version)
            for key, (rev, sub, value, create_revision, version) in latest.items():
                if value is not None:
                    txn.put("latest", mvcc.latest_key(key.encode()), pack([create_revision, rev, sub, version]))
            self._idempotency.replace(contents.idempotency)
            self._auth.load(txn)
            self._revision = contents.revision
            self._compact_revision = contents.compact_revision
        except BaseException:
            self.abort_batch()
            raise
        self._changes, self._state_replaced = [], True
        if own_batch:
            self.commit_batch(applied_index)
        elif applied_index is not None:
            self._applied_index = applied_index


def _encode_snapshot(txn: ReadTxn) -> bytes:
    return snapshot_format.encode(
        mvcc.read_int(txn, META_REVISION),
        mvcc.read_int(txn, META_COMPACT_REVISION),
        mvcc.history_items(txn),
        ((idem, fingerprint, result) for _seq, idem, fingerprint, result in mvcc.idempotency_items(txn)),
        {table: txn.scan(table) for table in EXTRA_TABLES if txn.count(table)},
    )


def _record(txn: ReadTxn, key: str) -> Record | None:
    data = txn.get("latest", mvcc.latest_key(key.encode()))
    return None if data is None else _latest_record(txn, data)


def _latest_record(txn: ReadTxn, data: bytes) -> Record:
    create_revision, mod_revision, sub, version = unpack(data)
    value = mvcc.history_version(txn, mvcc.rev_key(mod_revision, sub))[0]
    assert value is not None
    return value, create_revision, mod_revision, version


def _write(txn: WriteTxn, key: str, record: Record | None, revision: int, sub: int) -> None:
    """Record a write of ``key`` (None: its deletion) at ``(revision, sub)``."""
    encoded = key.encode()
    rk = mvcc.rev_key(revision, sub)
    txn.put("index", mvcc.index_key(encoded, revision, sub), b"")
    if record is None:
        txn.put("history", rk, pack([key, None, 0, 0]))
        txn.delete("latest", mvcc.latest_key(encoded))
        return
    value, create_revision, _mod, version = record
    txn.put("history", rk, pack([key, value, create_revision, version]))
    txn.put("latest", mvcc.latest_key(encoded), pack([create_revision, revision, sub, version]))


def _scan_latest(txn: ReadTxn, prefix: str, start_after: str | None) -> Iterator[tuple[bytes, bytes]]:
    after = None if start_after is None else start_after.encode()
    return mvcc.scan_latest(txn, prefix.encode(), after)


def _compare_holds(record: Record | None, item: dict[str, Any]) -> bool:
    target = item["target"]
    actual: Any
    if target == "value":
        if record is None:
            return False
        actual = record[0]
    elif target == "number":
        actual = None if record is None else parse_int64(record[0])
        if actual is None:
            return False
    elif record is None:
        actual = 0
    elif target == "version":
        actual = record[3]
    elif target == "create_revision":
        actual = record[1]
    else:  # mod_revision
        actual = record[2]
    return _COMPARE_OPERATORS[item["cmp"]](actual, item["value"])


def _is_invalid(result: Result) -> bool:
    error = result.get("error")
    return error is not None and error["code"] == INVALID_COMMAND


def _without_command_values(command: commands.Command, result: Result) -> Result:
    """``result`` as the idempotency table keeps it: without the values the
    command itself carried (put values), which an identical retry carries
    again. So only values a write read count against the table's byte bound."""
    return _swap_command_values(command, result, keep=False)


def _with_command_values(command: commands.Command, kept: Result) -> Result:
    """A kept result with the command's values back: the first answer."""
    return _swap_command_values(command, kept, keep=True)


def _swap_command_values(command: commands.Command, result: Result, keep: bool) -> Result:
    op = command["op"]
    if op == "put" and "kv" in result:
        return {**result, "kv": _kv_value(result["kv"], command["value"] if keep else None)}
    if op != "txn" or "results" not in result:
        return result
    branch = command.get("success" if result["succeeded"] else "failure", [])
    items = []
    for txn_op, item in zip(branch, result["results"]):
        if txn_op["op"] == "put":
            item = {**item, "kv": _kv_value(item["kv"], txn_op["value"] if keep else None)}
        items.append(item)
    return {**result, "results": items}


def _kv_value(kv: KV, value: bytes | None) -> KV:
    """``kv`` with ``value`` (None: without a value), fields in _kv's order."""
    if value is None:
        return {name: field for name, field in kv.items() if name != "value"}
    return {"key": kv["key"], "value": value, **kv}


def _kv(key: str, record: Record, lease: int = 0) -> KV:
    kv = {
        "key": key,
        "value": record[0],
        "create_revision": record[1],
        "mod_revision": record[2],
        "version": record[3],
    }
    if lease:  # only current reads know a key's lease (docs/leases.md)
        kv["lease"] = lease
    return kv


def _quote(key: str) -> str:
    shown = key if len(key) <= 200 else key[:200] + "..."
    return json.dumps(shown, ensure_ascii=False)
