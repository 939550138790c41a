"""The one message shape exchanged between Raft peers.

A single flat tuple (rather than a class per type) keeps the codec a single
msgpack call and keeps message construction cheap on the hot path; the
field comments say which types use which field.
"""

from __future__ import annotations

import enum
from typing import NamedTuple

from raftkv.raft.types import Entry, SnapshotMeta


class MsgType(enum.IntEnum):
    APP = 0  # leader -> follower: entries after (index, log_term); commit; hint = commit bound (*); read_seq = the leader's latest heartbeat round
    APP_RESP = 1  # index = last matching index, or the rejected index + hint; read_seq echoed
    VOTE = 2  # index/log_term = candidate's last entry; context=FORCE_VOTE for transfers
    VOTE_RESP = 3  # index/log_term = the answerer's last entry, hint = the answerer's term
    PRE_VOTE = 4  # term = the term the sender would campaign in
    PRE_VOTE_RESP = 5  # as VOTE_RESP
    HEARTBEAT = 6  # commit (capped at the follower's match) and log_term = its term; index = commit bound (*); hint = the leader's quorum age in ticks; read_seq
    HEARTBEAT_RESP = 7  # read_seq echoed, index = the follower's last index; reject = it lacks the leader's entry at commit
    SNAP = 8  # snapshot meta, snap_offset, snap_data, snap_done; commit = commit bound (*)
    SNAP_RESP = 9  # index = snapshot index, snap_offset = bytes received so far
    PROP = 10  # follower -> leader: forwarded proposals (entries with index 0)
    READ_INDEX = 11  # follower -> leader: context = read ctx
    READ_INDEX_RESP = 12  # leader -> follower: context, index, commit and log_term (as in HEARTBEAT), hint = commit bound (*); reject if refused
    TIMEOUT_NOW = 13  # leader -> transfer target: campaign now
    TRANSFER_LEADER = 14  # follower -> leader: context = target id


# (*) The commit bound is what a node must have applied to hold every entry
# the leader knows committed: its commit index once it committed an entry of
# its term, its last index before (RaftCore.leader_commit, for readiness).

# Marks a vote request caused by a leadership transfer: receivers must not
# ignore it on the grounds that they heard from a leader recently.
FORCE_VOTE = b"transfer"


class Message(NamedTuple):
    type: int  # a MsgType
    to: str
    frm: str
    term: int
    log_term: int = 0
    index: int = 0
    entries: tuple[Entry, ...] | list[Entry] = ()
    commit: int = 0
    reject: bool = False
    hint: int = 0  # APP_RESP reject: the follower's suggested match index (term in log_term)
    context: bytes = b""
    read_seq: int = 0
    snapshot: SnapshotMeta | None = None
    snap_offset: int = 0
    snap_data: bytes = b""
    snap_done: bool = False
