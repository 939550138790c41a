"""WAL tests on real files with real fsync."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import pytest

from raftkv.storage import (
    WAL,
    HardState,
    LogRecord,
    WALClosedError,
    WALCorruptError,
    WALFailedError,
    WALLockedError,
)
from raftkv.storage.records import RecordType, encode_record, find_valid_record_after, scan_records
from raftkv.storage.replay import LogReplay, check_append
from raftkv.storage.wal import DIRECT_BLOCK, ROLL_AT_COMPACT_BYTES

# Syncs are direct block writes (O_DIRECT | O_DSYNC) where the filesystem
# allows, else write + fsync: tests of what reaches the disk run both ways.
both_io_modes = pytest.mark.parametrize("direct_io", [False, True], ids=["fsync", "direct"])


def records(first: int, last: int, term: int = 1, size: int = 20) -> list[LogRecord]:
    return [LogRecord(i, term, i % 3, f"entry-{i}-".encode().ljust(size, b"x")) for i in range(first, last + 1)]


def reopen(directory: Path, **kwargs: int) -> WAL:
    return WAL.open(directory, **kwargs)


def test_fresh_wal_is_empty(tmp_path: Path) -> None:
    with WAL.open(tmp_path / "wal") as wal:
        rec = wal.recovered
        assert rec.entries == [] and rec.hard_state is None
        assert (rec.first_index, rec.last_index, rec.truncated_tail_bytes) == (1, 0, 0)


def test_round_trip_and_reopen(tmp_path: Path) -> None:
    written = records(1, 50) + [LogRecord(51, 2, 7, b""), LogRecord(52, 2, 0, bytes(range(256)))]
    with WAL.open(tmp_path) as wal:
        wal.append(written[:10])
        wal.set_hard_state(1, "n1", 5)
        wal.append(written[10:])
        wal.set_hard_state(2, None, 40)
        wal.sync()
    with reopen(tmp_path) as wal:
        rec = wal.recovered
        assert rec.entries == written
        assert rec.hard_state == HardState(2, None, 40)
        assert (rec.first_index, rec.last_index) == (1, 52)
        wal.append(records(53, 60, term=3))
        wal.set_hard_state(3, "nødé-ü", 55)
        wal.sync()
    with reopen(tmp_path) as wal:
        assert wal.recovered.entries == written + records(53, 60, term=3)
        assert wal.recovered.hard_state == HardState(3, "nødé-ü", 55)


def test_close_syncs_buffered_records(tmp_path: Path) -> None:
    wal = WAL.open(tmp_path)
    wal.append(records(1, 3))
    wal.close()
    with reopen(tmp_path) as wal:
        assert wal.recovered.entries == records(1, 3)


def test_append_of_existing_index_truncates_suffix(tmp_path: Path) -> None:
    with WAL.open(tmp_path) as wal:
        wal.append(records(1, 10, term=1))
        wal.sync()
        wal.append(records(6, 8, term=2))  # replaces 6..10
        wal.sync()
        assert wal.last_index == 8
        wal.append(records(2, 3, term=3))  # replaces 2..8
        wal.append(records(4, 5, term=3))
        wal.sync()
        size = os.path.getsize(wal.segment_paths()[-1])
    with reopen(tmp_path) as wal:
        assert wal.recovered.entries == records(1, 1) + records(2, 5, term=3)
        assert wal.recovered.last_index == 5
    # Nothing was rewritten in place: the file only grew.
    assert size > 10 * 20


def test_truncate_whole_log(tmp_path: Path) -> None:
    with WAL.open(tmp_path) as wal:
        wal.append(records(1, 5, term=1))
        wal.append(records(1, 2, term=4))
        wal.sync()
    with reopen(tmp_path) as wal:
        assert wal.recovered.entries == records(1, 2, term=4)


def test_gap_and_compacted_appends_are_refused_without_losing_anything(tmp_path: Path) -> None:
    with WAL.open(tmp_path) as wal:
        wal.append(records(1, 5))
        with pytest.raises(ValueError, match="gap"):
            wal.append(records(7, 8))
        with pytest.raises(ValueError, match="not index-contiguous"):
            wal.append([LogRecord(6, 1, 0, b"a"), LogRecord(8, 1, 0, b"b")])
        with pytest.raises(ValueError, match="invalid log record"):
            wal.append([LogRecord(6, -1, 0, b"a")])
        wal.compact(3)
        with pytest.raises(ValueError, match="compacted"):
            wal.append(records(3, 4))
        with pytest.raises(ValueError, match="invalid hard state"):
            wal.set_hard_state(-1, None, 0)
        with pytest.raises(ValueError, match="vote must be"):
            wal.set_hard_state(1, 2, 0)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="invalid log record"):
            wal.append([LogRecord(6, 1, 0, "text")])  # type: ignore[arg-type]
        wal.append(records(6, 6))
        wal.sync()
    with reopen(tmp_path) as wal:
        assert wal.recovered.entries == records(4, 6)


def test_compaction_deletes_only_segments_fully_covered(tmp_path: Path) -> None:
    with WAL.open(tmp_path, segment_bytes=4096) as wal:
        wal.set_hard_state(7, "n2", 0)
        for first in range(1, 1000, 50):
            wal.append(records(first, first + 49))
            wal.sync()
        before = wal.segment_paths()
        assert len(before) > 5
        wal.compact(600)
        after = wal.segment_paths()
        assert 1 < len(after) < len(before)
        assert set(after) == {p for p in tmp_path.iterdir() if p.suffix == ".wal"}
        assert all(p in before for p in after)
        wal.set_hard_state(8, "n3", 550)
        wal.sync()
    with reopen(tmp_path, segment_bytes=4096) as wal:
        rec = wal.recovered
        assert rec.compacted_index == 600
        assert rec.entries == records(601, 1000)
        assert (rec.first_index, rec.last_index) == (601, 1000)
        assert rec.hard_state == HardState(8, "n3", 550)


def test_hard_state_survives_compaction_of_the_segment_that_held_it(tmp_path: Path) -> None:
    with WAL.open(tmp_path, segment_bytes=4096) as wal:
        wal.set_hard_state(5, "n1", 3)
        wal.sync()
        for first in range(1, 2000, 100):
            wal.append(records(first, first + 99))
            wal.sync()
        wal.compact(2000)  # everything: only the current segment can stay
        assert len(wal.segment_paths()) == 1
    with reopen(tmp_path, segment_bytes=4096) as wal:
        rec = wal.recovered
        assert rec.hard_state == HardState(5, "n1", 3)
        assert rec.entries == [] and rec.last_index == 2000 and rec.first_index == 2001
        wal.append(records(2001, 2002))
        wal.sync()
    with reopen(tmp_path, segment_bytes=4096) as wal:
        assert wal.recovered.entries == records(2001, 2002)


@both_io_modes
def test_compaction_rolls_a_big_segment_so_the_next_one_deletes_it(tmp_path: Path, direct_io: bool) -> None:
    # A restart decodes every record of every segment: the entries a snapshot
    # covers must not pile up in the segment being written.
    with WAL.open(tmp_path, direct_io=direct_io) as wal:
        wal.set_hard_state(4, "n2", 10)
        for first in range(1, 3000, 100):
            wal.append(records(first, first + 99, size=1000))
            wal.sync()
        wal.compact(2000)
        first_segment, rolled = wal.segment_paths()
        assert first_segment.stat().st_size > ROLL_AT_COMPACT_BYTES
    with reopen(tmp_path) as wal:  # as if it crashed here: the roll lost nothing
        rec = wal.recovered
        assert rec.hard_state == HardState(4, "n2", 10)
        assert rec.compacted_index == 2000 and rec.entries == records(2001, 3000, size=1000)
        wal.append(records(3001, 3010))
        wal.sync()
        wal.compact(3005)
        assert wal.segment_paths() == [rolled]  # small: compacted without another roll
    with reopen(tmp_path) as wal:
        rec = wal.recovered
        assert rec.hard_state == HardState(4, "n2", 10)
        assert (rec.compacted_index, rec.entries) == (3005, records(3006, 3010))


def test_pending_bytes_is_what_the_next_sync_writes(tmp_path: Path) -> None:
    with WAL.open(tmp_path) as wal:
        assert wal.pending_bytes() == 0
        wal.append(records(1, 10, size=1000))
        assert 10_000 < wal.pending_bytes() < 11_000
        before = wal.tail_bytes
        pending = wal.pending_bytes()
        wal.sync()
        assert wal.pending_bytes() == 0 and wal.tail_bytes == before + pending


def test_compact_beyond_last_index_restarts_log_after_snapshot(tmp_path: Path) -> None:
    with WAL.open(tmp_path) as wal:
        wal.append(records(1, 5))
        wal.compact(100)  # installed a snapshot at 100 from the leader
        assert wal.last_index == 100
        wal.append(records(101, 103, term=5))
        wal.sync()
    with reopen(tmp_path) as wal:
        assert wal.recovered.entries == records(101, 103, term=5)
        assert wal.recovered.first_index == 101


def test_truncation_after_compacted_prefix_segments(tmp_path: Path) -> None:
    with WAL.open(tmp_path, segment_bytes=4096) as wal:
        for first in range(1, 500, 50):
            wal.append(records(first, first + 49))
            wal.sync()
        wal.append(records(450, 460, term=2))
        wal.append(records(461, 700, term=2))
        wal.sync()
        wal.compact(440)
    with reopen(tmp_path, segment_bytes=4096) as wal:
        assert wal.recovered.entries == records(441, 449) + records(450, 700, term=2)


def test_many_segments_reopen_in_order(tmp_path: Path) -> None:
    with WAL.open(tmp_path, segment_bytes=4096) as wal:
        for first in range(1, 3000, 30):
            wal.append(records(first, first + 29, term=first // 300 + 1))
            wal.sync()
        paths = wal.segment_paths()
    assert len(paths) > 30
    assert paths == sorted(paths)
    # A segment rolls once past segment_bytes; direct writes pad its last block.
    assert all(os.path.getsize(p) < 4096 + 30 * 60 + DIRECT_BLOCK for p in paths)
    with reopen(tmp_path, segment_bytes=4096) as wal:
        assert [e.index for e in wal.recovered.entries] == list(range(1, 3001))
        assert wal.recovered.entries[-1].term == 2999 // 300 + 1


def _build_log_with_last_record(directory: Path, direct_io: bool) -> tuple[Path, int, int]:
    """Nine synced entries, then a tenth: returns (segment, start and end of the tenth)."""
    with WAL.open(directory, direct_io=direct_io) as wal:
        assert wal.direct_io == direct_io
        wal.set_hard_state(1, "n1", 0)
        wal.append(records(1, 9))
        wal.sync()
        segment = wal.segment_paths()[-1]
        start = wal.tail_bytes
        wal.append(records(10, 10, size=40))
        wal.sync()
        end = wal.tail_bytes
    assert start < end <= os.path.getsize(segment)
    return segment, start, end


def _rewrite_tenth_and_reopen(wal: WAL, directory: Path) -> None:
    """After recovering nine entries: a new tenth is appended, and a reopen finds exactly that."""
    wal.append([LogRecord(10, 2, 0, b"rewritten")])
    wal.sync()
    wal.close()
    with WAL.open(directory) as reopened:
        assert reopened.recovered.entries == records(1, 9) + [LogRecord(10, 2, 0, b"rewritten")]
        assert reopened.recovered.truncated_tail_bytes == 0


@both_io_modes
def test_cut_at_every_byte_of_last_record_recovers_the_records_before_it(tmp_path: Path, direct_io: bool) -> None:
    original = tmp_path / "orig"
    segment, start, end = _build_log_with_last_record(original, direct_io)
    for cut in range(start, end):
        work = tmp_path / f"cut{cut}"
        shutil.copytree(original, work)
        with open(work / segment.name, "r+b") as f:
            f.truncate(cut)
        with WAL.open(work) as wal:
            rec = wal.recovered
            assert rec.entries == records(1, 9), cut
            assert rec.truncated_tail_bytes == cut - start
            assert rec.hard_state == HardState(1, "n1", 0)
            assert os.path.getsize(work / segment.name) == start
            _rewrite_tenth_and_reopen(wal, work)
        shutil.rmtree(work)


def test_direct_write_torn_at_every_byte_of_last_record_recovers_the_records_before_it(tmp_path: Path) -> None:
    # A direct write that stopped part-way leaves the record's head followed
    # by the zeros that were there before (the file keeps its padded length).
    original = tmp_path / "orig"
    segment, start, end = _build_log_with_last_record(original, direct_io=True)
    size = os.path.getsize(segment)
    assert size % DIRECT_BLOCK == 0
    for cut in range(start, end):
        work = tmp_path / f"torn{cut}"
        shutil.copytree(original, work)
        with open(work / segment.name, "r+b") as f:
            f.seek(cut)
            f.write(bytes(size - cut))
        with WAL.open(work) as wal:
            assert wal.recovered.entries == records(1, 9), cut
            # Nothing but zeros after the ninth record is a clean end, not a torn tail.
            assert wal.recovered.truncated_tail_bytes == (0 if cut == start else size - start)
            assert wal.tail_bytes == start
            _rewrite_tenth_and_reopen(wal, work)
        shutil.rmtree(work)


def test_padded_segments_reopen_cleanly_in_either_mode(tmp_path: Path) -> None:
    for round_, direct_io in enumerate([True, False, True, True, False]):
        with WAL.open(tmp_path, segment_bytes=4096, direct_io=direct_io) as wal:
            assert wal.recovered.truncated_tail_bytes == 0
            first = round_ * 50 + 1
            for i in range(first, first + 50, 5):
                wal.append(records(i, i + 4))
                wal.set_hard_state(round_ + 1, "n2", i)
                wal.sync()
    with WAL.open(tmp_path, segment_bytes=4096) as wal:
        assert wal.recovered.entries == records(1, 250)
        assert wal.recovered.hard_state == HardState(5, "n2", 246)
        assert len(wal.segment_paths()) > 2


def test_next_sync_is_one_block_says_whether_the_sync_is_a_direct_block_write(tmp_path: Path) -> None:
    with WAL.open(tmp_path / "direct") as wal:
        assert wal.direct_io
        wal.append(records(1, 3))
        assert wal.next_sync_is_one_block()
        wal.sync()
        wal.append(records(4, 200))  # several blocks' worth
        assert not wal.next_sync_is_one_block()
        wal.sync()
        # The records already in the last partial block count too.
        room = DIRECT_BLOCK - wal.tail_bytes % DIRECT_BLOCK
        wal.append([LogRecord(201, 1, 0, b"x" * (room - 10))])
        assert not wal.next_sync_is_one_block()
    with WAL.open(tmp_path / "fsync", direct_io=False) as wal:
        wal.append(records(1, 1))
        assert not wal.next_sync_is_one_block()


def test_a_filesystem_refusing_direct_io_gets_write_and_fsync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_open = os.open

    def refusing_open(path: object, flags: int, *args: int) -> int:
        if flags & os.O_DIRECT:
            raise OSError(22, "Invalid argument")
        return real_open(path, flags, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", refusing_open)
    with WAL.open(tmp_path) as wal:
        assert not wal.direct_io
        wal.append(records(1, 3))
        wal.sync()
    monkeypatch.undo()
    with WAL.open(tmp_path) as wal:
        assert wal.direct_io
        assert wal.recovered.entries == records(1, 3)


@both_io_modes
def test_flipped_byte_in_last_record_is_cut(tmp_path: Path, direct_io: bool) -> None:
    original = tmp_path / "orig"
    segment, start, end = _build_log_with_last_record(original, direct_io)
    size = os.path.getsize(segment)
    for offset in range(start, end):
        work = tmp_path / f"flip{offset}"
        shutil.copytree(original, work)
        with open(work / segment.name, "r+b") as f:
            f.seek(offset)
            byte = f.read(1)[0]
            f.seek(offset)
            f.write(bytes([byte ^ 0x5A]))
        with WAL.open(work) as wal:
            assert wal.recovered.entries == records(1, 9), offset
            assert wal.recovered.truncated_tail_bytes == size - start  # the record and any padding
        shutil.rmtree(work)


@both_io_modes
def test_flipped_byte_in_middle_record_refuses_to_start(tmp_path: Path, direct_io: bool) -> None:
    original = tmp_path / "orig"
    with WAL.open(original, direct_io=direct_io) as wal:
        wal.append(records(1, 4))
        wal.sync()
        segment = wal.segment_paths()[-1]
        middle_start = wal.tail_bytes
        wal.append(records(5, 5))
        wal.sync()
        middle_end = wal.tail_bytes
        wal.append(records(6, 8))
        wal.sync()
    for offset in range(middle_start, middle_end):
        work = tmp_path / f"flip{offset}"
        shutil.copytree(original, work)
        data = bytearray((work / segment.name).read_bytes())
        data[offset] ^= 0x01
        (work / segment.name).write_bytes(bytes(data))
        with pytest.raises(WALCorruptError) as info:
            WAL.open(work)
        assert info.value.path == work / segment.name
        assert info.value.offset == middle_start
        assert str(middle_start) in str(info.value)
        # Refusing to start must not have touched the file.
        assert (work / segment.name).read_bytes() == bytes(data)
        shutil.rmtree(work)


def test_corruption_in_non_last_segment_refuses_to_start(tmp_path: Path) -> None:
    with WAL.open(tmp_path, segment_bytes=4096, direct_io=False) as wal:
        for first in range(1, 400, 40):
            wal.append(records(first, first + 39))
            wal.sync()
        first_segment = wal.segment_paths()[0]
    size = os.path.getsize(first_segment)
    with open(first_segment, "r+b") as f:
        f.truncate(size - 3)  # a torn record is only acceptable at the very end
    with pytest.raises(WALCorruptError, match="not the last"):
        WAL.open(tmp_path, segment_bytes=4096)


def test_missing_middle_segment_refuses_to_start(tmp_path: Path) -> None:
    with WAL.open(tmp_path, segment_bytes=4096) as wal:
        for first in range(1, 400, 40):
            wal.append(records(first, first + 39))
            wal.sync()
        paths = wal.segment_paths()
    paths[1].unlink()
    with pytest.raises(WALCorruptError, match="missing"):
        WAL.open(tmp_path, segment_bytes=4096)


@both_io_modes
def test_one_fsync_per_sync_covers_the_whole_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, direct_io: bool
) -> None:
    # One durable step per sync: an fsync, or a sync that fits in one block
    # (direct I/O) one synchronous block write.
    durable: list[str] = []
    real_fsync, real_pwrite = os.fsync, os.pwrite

    def counting_fsync(fd: int) -> None:
        durable.append("fsync")
        real_fsync(fd)

    def counting_pwrite(fd: int, data: bytes, offset: int) -> int:
        if fd == wal._direct_fd:
            durable.append("block")
        return real_pwrite(fd, data, offset)

    with WAL.open(tmp_path, direct_io=direct_io) as wal:
        monkeypatch.setattr(os, "fsync", counting_fsync)
        monkeypatch.setattr(os, "pwrite", counting_pwrite)
        index = 0
        for batch in range(6):
            size = 64 if batch % 2 == 0 else 3  # 64 x 100 B spans blocks; 3 fit in one
            for _ in range(size):
                index += 1
                wal.append([LogRecord(index, 1, 0, b"v" * 100)])
            wal.set_hard_state(1, "n1", index)
            wal.sync()
            assert len(durable) == batch + 1
            if direct_io and size == 3 and wal.tail_bytes % DIRECT_BLOCK > 3 * 130:
                assert durable[-1] == "block"  # the batch did not cross a block boundary
            if size == 64:
                assert durable[-1] == "fsync"
        wal.sync()  # nothing buffered: nothing written
        assert len(durable) == 6
    with reopen(tmp_path) as wal:
        assert wal.recovered.last_index == index == 3 * 64 + 3 * 3


def test_second_open_of_same_directory_is_refused(tmp_path: Path) -> None:
    with WAL.open(tmp_path):
        with pytest.raises(WALLockedError):
            WAL.open(tmp_path)
    WAL.open(tmp_path).close()


def test_use_after_close_is_refused(tmp_path: Path) -> None:
    wal = WAL.open(tmp_path)
    wal.close()
    with pytest.raises(WALClosedError):
        wal.append(records(1, 1))
    with pytest.raises(WALClosedError):
        wal.sync()


@both_io_modes
def test_failed_fsync_poisons_the_wal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, direct_io: bool) -> None:
    # A real failing disk is not available in a test; a failing fsync (or
    # direct write) is the one thing mocked here.
    wal = WAL.open(tmp_path, direct_io=direct_io)
    wal.append(records(1, 2))

    def failing_call(fd: int, *args: object) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "pwrite" if direct_io else "fsync", failing_call)
    with pytest.raises(OSError):
        wal.sync()
    monkeypatch.undo()
    with pytest.raises(WALFailedError, match="reopen"):
        wal.append(records(3, 3))
    with pytest.raises(WALFailedError):
        wal.sync()
    wal.close()
    with WAL.open(tmp_path) as reopened:
        # A failed sync promised nothing: with write + fsync the records did
        # reach the file (only the fsync failed); the failed direct write
        # wrote nothing.
        assert reopened.recovered.entries == ([] if direct_io else records(1, 2))


def test_small_segment_size_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="segment_bytes"):
        WAL.open(tmp_path, segment_bytes=100)


@both_io_modes
def test_appends_continue_while_an_fsync_is_in_flight(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, direct_io: bool
) -> None:
    wal = WAL.open(tmp_path, direct_io=direct_io)
    wal.append(records(1, 10))
    fsync_started, release_fsync = threading.Event(), threading.Event()
    durable_call = "pwrite" if direct_io else "fsync"
    real_call = getattr(os, durable_call)

    def slow_call(fd: int, *args: object) -> object:
        fsync_started.set()
        assert release_fsync.wait(5)
        return real_call(fd, *args)

    monkeypatch.setattr(os, durable_call, slow_call)
    syncer = threading.Thread(target=wal.sync)
    syncer.start()
    assert fsync_started.wait(5)
    # The fsync is blocked; buffering more must not wait for it.
    wal.append(records(11, 20))
    wal.set_hard_state(2, "n1", 10)
    assert syncer.is_alive()
    release_fsync.set()
    syncer.join(5)
    monkeypatch.undo()
    wal.sync()
    wal.close()
    with WAL.open(tmp_path) as reopened:
        assert reopened.recovered.entries == records(1, 20)
        assert reopened.recovered.hard_state == HardState(2, "n1", 10)


@both_io_modes
def test_syncing_thread_and_appending_thread_across_segment_rolls(tmp_path: Path, direct_io: bool) -> None:
    wal = WAL.open(tmp_path, segment_bytes=4096, direct_io=direct_io)
    stop = threading.Event()
    errors: list[BaseException] = []

    def keep_syncing() -> None:
        try:
            while not stop.is_set():
                wal.sync()
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    syncer = threading.Thread(target=keep_syncing)
    syncer.start()
    try:
        for first in range(1, 3001, 20):
            wal.append(records(first, first + 19, term=first))
            wal.set_hard_state(first, "n1", first)
            if first % 600 == 1:
                wal.append(records(first + 10, first + 19, term=first + 1))  # truncate and rewrite
            time.sleep(0.0002)  # let the syncing thread take the GIL now and then
    finally:
        stop.set()
        syncer.join(10)
    assert errors == []
    wal.compact(1500)
    wal.close()
    assert len(list(tmp_path.glob("*.wal"))) > 5
    expected = []
    for first in range(1, 3001, 20):
        expected += records(first, first + 9, term=first)
        expected += records(first + 10, first + 19, term=first + 1 if first % 600 == 1 else first)
    with WAL.open(tmp_path, segment_bytes=4096) as reopened:
        assert reopened.recovered.entries == [e for e in expected if e.index > 1500]
        assert reopened.recovered.hard_state == HardState(2981, "n1", 2981)


def test_hard_state_survives_crash_before_new_segment_head_then_compaction(tmp_path: Path) -> None:
    live, crashed = tmp_path / "live", tmp_path / "crashed"
    wal = WAL.open(live, segment_bytes=4096)
    wal.set_hard_state(5, "n1", 3)
    wal.append(records(1, 120))  # more than one segment's worth in one batch
    wal.sync()  # rolls: the new segment exists but its head is still only buffered
    assert len(wal.segment_paths()) == 2 and os.path.getsize(wal.segment_paths()[-1]) == 0
    shutil.copytree(live, crashed, ignore=shutil.ignore_patterns("LOCK"))  # what a crash now leaves
    wal.close()
    with WAL.open(crashed, segment_bytes=4096) as wal:
        assert wal.recovered.hard_state == HardState(5, "n1", 3)
        wal.append(records(121, 130))
        wal.compact(130)  # deletes the only segment that held the hard state originally
        assert len(wal.segment_paths()) == 1
    with WAL.open(crashed, segment_bytes=4096) as wal:
        assert wal.recovered.hard_state == HardState(5, "n1", 3)
        assert wal.recovered.compacted_index == 130


# ------------------------------------------------------------ pure rules


def test_check_append_rules() -> None:
    assert check_append(last_index=10, compacted_index=0, first_new_index=11) is False
    assert check_append(last_index=10, compacted_index=0, first_new_index=4) is True
    with pytest.raises(ValueError, match="gap"):
        check_append(last_index=10, compacted_index=0, first_new_index=12)
    with pytest.raises(ValueError, match="compacted"):
        check_append(last_index=10, compacted_index=5, first_new_index=5)


def test_log_replay_applies_truncation_and_compaction() -> None:
    replay = LogReplay(expected_next=1)
    for entry in records(1, 10):
        assert replay.on_entry(entry) is None
    assert replay.on_truncate(7) is None
    assert replay.last_index == 6
    assert "expected" in (replay.on_entry(LogRecord(9, 1, 0, b"")) or "")
    assert replay.on_truncate(12) is not None  # beyond the end
    replay.on_compact(4)
    assert [e.index for e in replay.entries] == [5, 6] and replay.first_index == 5
    replay.on_compact(50)  # snapshot beyond the log: empty, resumes after it
    assert replay.entries == [] and (replay.first_index, replay.last_index) == (51, 50)
    assert replay.on_entry(LogRecord(50, 1, 0, b"")) is not None
    assert replay.on_entry(LogRecord(51, 1, 0, b"")) is None


def test_zero_filled_tail_is_torn_not_corrupt() -> None:
    good = encode_record(RecordType.TRUNCATE, (5).to_bytes(8, "big"))
    data = good + bytes(4096)
    scanned = scan_records(data)
    assert len(scanned.records) == 1 and scanned.valid_bytes == len(good)
    assert scanned.problem == "checksum mismatch"
    assert find_valid_record_after(data, scanned.valid_bytes) is None
    assert find_valid_record_after(good + b"\x00" * 20 + good, len(good)) == len(good) + 20
