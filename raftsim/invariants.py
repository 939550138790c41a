"""Safety properties of Raft, checked while the simulation runs.

* election safety: at most one leader per term;
* log matching: an (index, term) pair names one entry, and the same
  predecessor term, wherever it appears (so equal pairs mean equal prefixes);
* leader completeness: a new leader holds every entry committed so far;
* state-machine safety: no two nodes apply different entries at an index;
* durability: every committed entry survives on a quorum of voters' storage.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from raftkv.raft.conf import apply_conf_change, decode_conf_change
from raftkv.raft.ready import Ready
from raftkv.raft.types import ConfState, Entry, EntryKind, InvalidConfChange, Role

if TYPE_CHECKING:
    from raftsim.node import SimNode


class SafetyViolation(AssertionError):
    pass


class InvariantChecker:
    def __init__(self, initial_conf: ConfState) -> None:
        self._initial_conf = initial_conf
        self._conf_entries: dict[int, bytes] = {}
        # Every membership change ever appended anywhere, committed or not.
        self._appended_conf: dict[int, set[bytes]] = {}
        self.leader_of_term: dict[int, str] = {}
        self._entry_at: dict[tuple[int, int], tuple[bytes, int | None]] = {}
        self.committed: dict[int, Entry] = {}
        self.max_committed = 0
        self.max_committed_term = 0
        self.elections = 0
        self.snapshots_installed = 0

    def _committed_up_to(self, index: int, term: int) -> None:
        if index > self.max_committed:
            self.max_committed = index
            self.max_committed_term = term

    def on_ready(self, node: SimNode, rd: Ready) -> None:
        core = node.core
        if rd.soft_state is not None and rd.soft_state.role is Role.LEADER:
            self._check_new_leader(node)
        if rd.snapshot is not None:
            self.snapshots_installed += 1
            meta = rd.snapshot.meta
            known = self.committed.get(meta.index)
            if known is not None and known.term != meta.term:
                raise SafetyViolation(f"{node.id} installed snapshot ({meta.index}, {meta.term}) but entry {known} is committed there")
            self._committed_up_to(meta.index, meta.term)
        if rd.entries:
            prev_term = core.log.term(rd.entries[0].index - 1)
            entry_at = self._entry_at
            for e in rd.entries:
                if e.kind == EntryKind.CONF_CHANGE:
                    self._appended_conf.setdefault(e.index, set()).add(e.data)
                key = (e.index, e.term)
                seen = entry_at.get(key)
                if seen is None:
                    entry_at[key] = (e.data, prev_term)
                else:
                    data, seen_prev = seen
                    if data != e.data or (prev_term is not None and seen_prev is not None and seen_prev != prev_term):
                        raise SafetyViolation(f"log matching: {node.id} holds a different entry at {key}")
                    if seen_prev is None and prev_term is not None:
                        entry_at[key] = (data, prev_term)
                prev_term = e.term
        # Committed entries are checked when applied (on_applied): the
        # driver may apply them before the Ready that hands them out.

    def on_applied(self, node: SimNode, entries: list[Entry]) -> None:
        """``node`` applied ``entries`` to its state machine."""
        committed = self.committed
        for e in entries:
            known = committed.get(e.index)
            if known is None:
                committed[e.index] = e
                if e.kind == EntryKind.CONF_CHANGE:
                    self._conf_entries[e.index] = e.data
            elif known != e:
                raise SafetyViolation(f"state machine safety: {node.id} applies {e} at {e.index}, another node applied {known}")
        if entries:
            last = entries[-1]
            self._committed_up_to(last.index, last.term)

    def _check_new_leader(self, node: SimNode) -> None:
        core = node.core
        self.elections += 1
        holder = self.leader_of_term.setdefault(core.term, node.id)
        if holder != node.id:
            raise SafetyViolation(f"election safety: {holder} and {node.id} both lead term {core.term}")
        log = core.log
        if self.max_committed > log.last_index():
            raise SafetyViolation(
                f"leader completeness: {node.id} leads term {core.term} with last index {log.last_index()} "
                f"but {self.max_committed} is committed"
            )
        for index in range(log.offset + 1, self.max_committed + 1):
            known = self.committed.get(index)
            if known is not None and log.term(index) != known.term:
                raise SafetyViolation(f"leader completeness: {node.id} lacks committed entry {known}")

    def _voter_sets_before(self, index: int) -> list[tuple[str, ...]]:
        """The configurations a leader may have used to commit ``index``.

        Nodes use the latest change in their log, committed or not, and
        only one change is in flight at a time; so: the configuration after
        every committed change below ``index``, or one more change appended
        after it (possibly beyond ``index``), or -- for a leader whose own
        log was behind -- the one before.
        """
        conf = self._initial_conf
        previous = conf
        last_change = 0
        for i in sorted(self._conf_entries):
            if i >= index:
                break
            try:
                nxt = apply_conf_change(conf, decode_conf_change(self._conf_entries[i]))
            except InvalidConfChange:
                continue
            previous, conf, last_change = conf, nxt, i
        sets = [conf.voters, previous.voters]
        for i, versions in self._appended_conf.items():
            if i <= last_change:
                continue
            for data in versions:
                try:
                    sets.append(apply_conf_change(conf, decode_conf_change(data)).voters)
                except InvalidConfChange:
                    pass
        return sets

    def check_durable_quorum(self, nodes: list[SimNode]) -> None:
        """The highest committed entry must be on the storage of a quorum."""
        index = self.max_committed
        if index == 0:
            return
        term = self.max_committed_term
        durable_on: list[str] = []
        for n in nodes:
            disk = n.disk
            if disk.snapshot_index >= index or disk.durable_term(index) == term:
                durable_on.append(n.id)
        if not self.on_a_quorum(durable_on, index):
            raise SafetyViolation(f"durability: committed index {index} is durable only on {durable_on}")

    def on_a_quorum(self, holders: list[str], index: int, every: bool = False) -> bool:
        """True if ``holders`` are a quorum of a configuration that may have
        committed ``index`` (``every``: of each of them)."""
        quorate = (
            sum(1 for v in voters if v in holders) >= len(voters) // 2 + 1
            for voters in self._voter_sets_before(index)
        )
        return all(quorate) if every else any(quorate)
