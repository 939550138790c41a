"""`raftkv serve --join URL`: start a new node as a learner of a running cluster.

Before the node starts, it asks the cluster (the leader among the URLs) to
add it as a learner at its peer address, then writes a *join record* in its
data dir (the configuration and member addresses at that moment: the base
its log replays on, see raftkv/engines/native/membership.py) and starts
with an empty log: the leader sends it the log or a snapshot. It never
votes until promoted (POST /v1/members/{id}/promote). A restart with the
same flags finds the record and does not ask again.

In the working directory of a `raftkv dev` cluster (its data dir,
``.raftkv-dev`` unless RAFTKV_DEV_DIR says otherwise, is here) and
without --data-dir, the node needs no other flag: the id defaults to the next free ``nN``, the data dir
to ``.raftkv-dev/<id>``, the ports to free ones on 127.0.0.1, and it makes
its certificate with the dev cluster's CA (peers talk mutual TLS; a
certificate names the node id, which is what the members accept once it
is in the configuration).
"""

from __future__ import annotations

import json
import os
import ssl
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raftkv.engines.native.membership import JoinRecord, load_join_record, save_join_record

DEV_DIR = ".raftkv-dev"
ENDPOINTS_FILE = "endpoints"  # LocalCluster writes its endpoints here
_ATTEMPTS = 20  # the join gives up after about this many seconds of no usable leader


class JoinError(Exception):
    """The cluster could not add this node; the message says why and what to do."""


@dataclass
class JoinPlan:
    """What a joining node runs with (flags, filled in from a dev cluster)."""

    node_id: str
    data_dir: Path
    listen: str
    peer_listen: str
    urls: list[str]
    peer_tls_files: tuple[Path, Path, Path] | None = None  # cert, key, CA
    http_tls_files: tuple[Path, Path] | None = None  # cert, key
    ca_file: Path | None = None  # what our own HTTPS requests to the cluster trust


def dev_dir() -> Path | None:
    """The `raftkv dev` data dir in the working directory, if there is one."""
    path = Path(os.environ.get("RAFTKV_DEV_DIR", DEV_DIR))
    return path if (path / "certs" / "ca.pem").exists() or (path / ENDPOINTS_FILE).exists() else None


def plan_join(
    urls: list[str],
    node_id: str | None,
    data_dir: str | None,
    listen: str | None,
    peer_listen: str | None,
    tls_given: bool,
) -> JoinPlan:
    """Fill in what a dev cluster's directory can tell; JoinError for what is still missing."""
    # A node of a dev cluster lives in its directory; one given its own
    # --data-dir is on its own (and a stray .raftkv-dev here is not used).
    dev = dev_dir() if data_dir is None else None
    all_urls = list(urls)
    if dev is not None:
        endpoints = dev / ENDPOINTS_FILE
        if endpoints.exists():
            all_urls += [u for u in endpoints.read_text().split(",") if u.strip() and u.strip() not in all_urls]
    all_urls = [u.strip().rstrip("/") for u in all_urls if u.strip()]
    ca_file = dev / "certs" / "ca.pem" if dev is not None and (dev / "certs" / "ca.pem").exists() else None
    if node_id is None:
        if dev is None:
            raise JoinError("--join needs --id (outside a `raftkv dev` directory)")
        members = {m["id"] for m in fetch_members(all_urls, _ssl_context(ca_file))["members"]}
        n = 1
        while f"n{n}" in members or (dev / f"n{n}").exists():
            n += 1
        node_id = f"n{n}"
    if data_dir is None:
        if dev is None:
            raise JoinError("--join needs --data-dir (outside a `raftkv dev` directory)")
        data_dir = str(dev / node_id)
    if listen is None or peer_listen is None:
        if dev is None:
            raise JoinError("--join needs --listen and --peer-listen (outside a `raftkv dev` directory)")
        from raftkv.local_cluster import free_ports

        http_port, peer_port = free_ports(2)
        listen = listen or f"127.0.0.1:{http_port}"
        peer_listen = peer_listen or f"127.0.0.1:{peer_port}"
    plan = JoinPlan(node_id, Path(data_dir), listen, peer_listen, all_urls, ca_file=ca_file)
    if dev is not None and not tls_given and ca_file is not None:
        from raftkv.certs import make_node, node_files

        certs = dev / "certs"
        files = node_files(certs, node_id)
        if not files.cert.exists():
            make_node(certs, node_id)
        plan.peer_tls_files = (files.cert, files.key, ca_file)
        if any(u.startswith("https://") for u in all_urls):
            plan.http_tls_files = (files.cert, files.key)
    return plan


def join_cluster(plan: JoinPlan, cluster_id: str, timeout: float = 30.0) -> JoinRecord:
    """The join record: read from the data dir, or made by asking the
    cluster to add this node as a learner (retrying while it cannot say)."""
    record = load_join_record(plan.data_dir)
    if record is not None:
        if record.cluster_id != cluster_id:
            raise JoinError(
                f"{plan.data_dir} joined cluster {record.cluster_id!r}, not {cluster_id!r}; "
                "use another --data-dir to join another cluster"
            )
        return record
    if (plan.data_dir / "wal").exists():
        raise JoinError(
            f"{plan.data_dir} already holds a node's log but no join record: it is a founding member's "
            "data dir; start it without --join, or join with an empty --data-dir"
        )
    context = _ssl_context(plan.ca_file)
    body = json.dumps({"id": plan.node_id, "peer_addr": plan.peer_listen, "learner": True}).encode()
    deadline = time.monotonic() + timeout
    last_error = "no answer"
    while time.monotonic() < deadline:
        view = fetch_members(plan.urls, context)
        mine = next((m for m in view["members"] if m["id"] == plan.node_id), None)
        if mine is not None:
            # Added already (by us, before a crash, or by an operator's
            # `raftkv member add`): at our address, it is ours.
            if mine["peer_addr"] != plan.peer_listen:
                raise JoinError(
                    f"the cluster already has a member {plan.node_id!r} at {mine['peer_addr']}, not "
                    f"{plan.peer_listen}; remove it first (raftkv member remove {plan.node_id}) or pick another --id"
                )
            return _record(plan, cluster_id, view)
        leader_url = view.get("_leader_url")
        if leader_url is None:
            last_error = f"no leader among {', '.join(plan.urls)} (leader id: {view.get('leader_id')})"
            time.sleep(1.0)
            continue
        status, answer = _request("POST", f"{leader_url}/v1/members", context, body)
        if status == 201:
            return _record(plan, cluster_id, answer)
        error = answer.get("error", {}) if isinstance(answer, dict) else {}
        code = error.get("code")
        last_error = f"{status} {code}: {error.get('message')}"
        if status in (400, 404, 501) or code == "member_exists":
            raise JoinError(f"the cluster refused to add {plan.node_id}: {last_error}")
        time.sleep(0.5)  # not_leader, change_pending, no_leader, outcome_unknown: look again
    raise JoinError(f"could not join within {timeout:g}s: {last_error}")


def _record(plan: JoinPlan, cluster_id: str, view: dict[str, Any]) -> JoinRecord:
    members = view["members"]
    peers = {m["id"]: m["peer_addr"] for m in members}
    peers[plan.node_id] = plan.peer_listen
    record = JoinRecord(
        cluster_id=cluster_id,
        voters=tuple(sorted(m["id"] for m in members if m["role"] == "voter")),
        learners=tuple(sorted({*(m["id"] for m in members if m["role"] == "learner"), plan.node_id})),
        peers=peers,
    )
    save_join_record(plan.data_dir, record)
    return record


def fetch_members(urls: list[str], context: ssl.SSLContext | None) -> dict[str, Any]:
    """GET /v1/members from the first URL that answers, with ``_leader_url``:
    the URL among ``urls`` whose node is the leader (if any is)."""
    view: dict[str, Any] | None = None
    leader_url = None
    errors = []
    for url in urls:
        status, answer = _request("GET", f"{url}/v1/members", context)
        if status != 200 or not isinstance(answer, dict):
            errors.append(f"{url}: {status} {answer}")
            continue
        if view is None:
            view = answer
        if answer.get("leader_id") == answer.get("node_id"):
            view, leader_url = answer, url
            break
    if view is None:
        raise JoinError(f"no member answered GET /v1/members: {'; '.join(errors) or 'no URL given'}")
    view["_leader_url"] = leader_url
    return view


def _ssl_context(ca_file: Path | None) -> ssl.SSLContext | None:
    return ssl.create_default_context(cafile=str(ca_file)) if ca_file is not None else None


def _request(method: str, url: str, context: ssl.SSLContext | None, body: bytes | None = None) -> tuple[int, Any]:
    """(status, JSON answer); status 0 when the node could not be reached."""
    request = urllib.request.Request(url, data=body, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10, context=context if url.startswith("https") else None) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read() or b"null")
        except ValueError:
            return exc.code, None
    except (OSError, ValueError) as exc:
        return 0, repr(exc)


def join_from_args(args: Any) -> None:
    """`serve --join`: join the cluster, then fill in the serve flags the
    node runs with (--id, --data-dir, --listen, --peer-listen, --peers and,
    in a dev directory, the TLS files). JoinError says what went wrong."""
    tls_given = bool(args.peer_cert_file or args.cert_file or args.insecure_peers)
    plan = plan_join(
        [u for u in args.join.split(",") if u.strip()],
        args.id, args.data_dir, args.listen, args.peer_listen, tls_given,
    )
    if args.peers:
        raise JoinError("--join and --peers do not go together: a joining node learns its peers from the cluster")
    record = join_cluster(plan, args.cluster_id)
    args.id, args.data_dir = plan.node_id, str(plan.data_dir)
    args.listen, args.peer_listen = plan.listen, plan.peer_listen
    args.peers = ",".join(f"{nid}={addr}" for nid, addr in sorted(record.peers.items()))
    if plan.peer_tls_files is not None:
        args.peer_cert_file, args.peer_key_file, args.peer_ca_file = (str(p) for p in plan.peer_tls_files)
    if plan.http_tls_files is not None:
        args.cert_file, args.key_file = (str(p) for p in plan.http_tls_files)
