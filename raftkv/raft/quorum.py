"""Majority arithmetic, in one place.

Every Raft decision that needs "more than half of the voters" -- counting
votes, the commit index, the ReadIndex round a quorum acknowledged, whether
a leader still hears from enough followers, whether enough voters are known
to be empty for a wiped node to take its cluster for new -- goes through
these functions, so they cannot disagree about what a majority is.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable


def majority(voters: int) -> int:
    """How many of ``voters`` make a quorum (1 of 1, 2 of 3, 3 of 4, 3 of 5)."""
    if voters < 1:
        raise ValueError(f"a quorum needs at least one voter, got {voters}")
    return voters // 2 + 1


def quorum_index(values: Iterable[int], voters: int) -> int:
    """The largest value that a quorum of ``voters`` has reached.

    ``values`` holds one value per voter heard from (a match index, an
    acknowledged round); voters with no value count as 0.
    """
    ranked = sorted(values, reverse=True)
    if len(ranked) > voters:
        raise ValueError(f"{len(ranked)} values for {voters} voters")
    need = majority(voters)
    return ranked[need - 1] if len(ranked) >= need else 0


class VoteResult(enum.Enum):
    WON = "won"
    LOST = "lost"
    PENDING = "pending"


def vote_result(granted: int, refused: int, voters: int) -> VoteResult:
    """WON once a quorum granted, LOST once a quorum refused (nobody can
    win then), PENDING before either."""
    need = majority(voters)
    if granted >= need:
        return VoteResult.WON
    if refused >= need:
        return VoteResult.LOST
    return VoteResult.PENDING
