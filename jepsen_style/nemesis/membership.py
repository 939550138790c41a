"""The membership nemesis: replace a voter under load.

One fault is one replacement, the way an operator swaps a machine:

* start: remove a voter that is not the leader (DELETE /v1/members/{id} on
  the leader), stop it, and start a new node with a fresh id and an empty
  data dir that joins as a learner (`raftkv serve --join`). The new node
  takes the removed node's client address, so the workload's clients,
  which were given the cluster's URLs once, keep a node to talk to.
* end: promote the new node (POST /v1/members/{id}/promote), retrying
  while it is still catching up.

So every run exercises remove, add, catch-up and promote while clients
write and read; the checker then says whether any acknowledged operation
was lost or seen out of order. Only node-level kinds combine with it: the
link proxies of the partition kinds exist for the founding nodes only.
"""
from __future__ import annotations

import json
import random
import time
import urllib.error
import urllib.request
from typing import Any

from raftkv.local_cluster import LocalCluster

# How long one step may retry (a leader election, a pending change, a
# learner that is still catching up) before the step gives up.
STEP_TIMEOUT_S = 20.0


class MembershipNemesis:
    """Replaces voters of a LocalCluster (blocking calls: run them in a thread)."""

    def __init__(self, cluster: LocalCluster, rng: random.Random) -> None:
        self.cluster = cluster
        self.rng = rng
        self._replacements = 0
        self.learners: list[str] = []  # added, not promoted yet

    def replace_start(self) -> dict[str, Any]:
        """Remove a non-leader voter and start its replacement; what happened."""
        leader = self._wait_leader()
        voters = [m["id"] for m in self._members(leader)["members"] if m["role"] == "voter"]
        candidates = sorted(v for v in voters if v != leader and v in self._running())
        if leader is None or not candidates:
            return {"skipped": "no leader, or no other running voter to replace"}
        victim = self.rng.choice(candidates)
        status, answer = self._on_leader("DELETE", f"/v1/members/{victim}")
        if status != 200:
            return {"skipped": f"removing {victim} was refused: {status} {_code(answer)}"}
        node = self.cluster.node(victim)
        http_addr = node.http_addr
        self.cluster.forget_node(victim)  # its log stays in cluster.retired for the run's logs dir
        self._replacements += 1
        new_id = f"r{self._replacements}"
        others = [n.url for n in self.cluster.nodes]
        self.cluster.add_node(new_id, join_via=others, http_addr=http_addr)
        self.learners.append(new_id)
        # The node asks to be added once its process is up: wait for that,
        # so the fault's end finds a learner to promote.
        deadline = time.monotonic() + STEP_TIMEOUT_S
        while time.monotonic() < deadline:
            if any(m["id"] == new_id for m in self._members(self.cluster.leader())["members"]):
                return {"removed": victim, "added": new_id}
            time.sleep(0.2)
        return {"removed": victim, "added": new_id, "joined": False}

    def promote(self, node_id: str) -> dict[str, Any]:
        """Promote ``node_id`` once it has caught up (retrying until STEP_TIMEOUT_S)."""
        status, answer = self._on_leader("POST", f"/v1/members/{node_id}/promote",
                                         retry_codes=("learner_not_caught_up", "change_pending", "not_found"))
        if status == 200 or _code(answer) == "not_a_learner":
            if node_id in self.learners:
                self.learners.remove(node_id)
            return {"promoted": node_id}
        return {"not_promoted": node_id, "why": f"{status} {_code(answer)}"}

    def promote_all(self) -> list[dict[str, Any]]:
        return [self.promote(node_id) for node_id in list(self.learners)]

    # -- HTTP -------------------------------------------------------------

    def _running(self) -> set[str]:
        return {n.node_id for n in self.cluster.nodes if n.running}

    def _wait_leader(self) -> str | None:
        deadline = time.monotonic() + STEP_TIMEOUT_S
        while time.monotonic() < deadline:
            leader = self.cluster.leader()
            if leader is not None:
                return leader
            time.sleep(0.2)
        return None

    def _members(self, node_id: str | None) -> dict[str, Any]:
        if node_id is None:
            return {"members": []}
        status, answer = _request("GET", f"{self.cluster.node(node_id).url}/v1/members")
        return answer if status == 200 and isinstance(answer, dict) else {"members": []}

    def _on_leader(self, method: str, path: str, retry_codes: tuple[str, ...] = ("change_pending",)) -> tuple[int, Any]:
        deadline = time.monotonic() + STEP_TIMEOUT_S
        status, answer = 0, None
        while time.monotonic() < deadline:
            leader = self.cluster.leader()
            if leader is None:
                time.sleep(0.2)
                continue
            status, answer = _request(method, f"{self.cluster.node(leader).url}{path}")
            retry = status in (0, 503) or _code(answer) in ("not_leader", *retry_codes)
            if not retry:
                return status, answer
            time.sleep(0.3)
        return status, answer


def _code(answer: Any) -> str | None:
    if isinstance(answer, dict) and isinstance(answer.get("error"), dict):
        return answer["error"].get("code")
    return None


def _request(method: str, url: str) -> tuple[int, Any]:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read() or b"null")
        except ValueError:
            return exc.code, None
    except (OSError, ValueError) as exc:
        return 0, repr(exc)
