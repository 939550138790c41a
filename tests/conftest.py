"""Fixtures that start real raftkv clusters (processes on 127.0.0.1)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import pytest

from raftkv.local_cluster import LocalCluster

# Every cluster-level test runs on each engine listed here.
ENGINES = ["native", "pysyncobj"]


@pytest.fixture(scope="module", params=ENGINES)
def cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A healthy 3-node cluster shared by a module's tests; do not kill its nodes."""
    with LocalCluster(tmp_path_factory.mktemp(f"cluster-{request.param}"), engine=request.param) as c:
        c.wait_ready()
        yield c


@pytest.fixture(params=ENGINES)
def make_cluster(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[..., LocalCluster]]:
    """A factory for clusters a test may break; all are stopped afterwards."""
    made: list[LocalCluster] = []

    def make(nodes: int = 3, **kwargs: object) -> LocalCluster:
        c = LocalCluster(tmp_path / f"c{len(made)}", nodes=nodes, engine=request.param, **kwargs)  # type: ignore[arg-type]
        made.append(c)
        c.start()
        c.wait_ready()
        return c

    yield make
    for c in made:
        c.stop()
