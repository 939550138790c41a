"""The Python client's lease calls and keepalive helpers against a real cluster."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from raftkv.client import AsyncClient, Client, NotFound, Op
from raftkv.local_cluster import LocalCluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    # The helpers only speak HTTP, whatever the engine: one engine is enough.
    with LocalCluster(tmp_path_factory.mktemp("lease-client"), nodes=3, engine="native") as c:
        c.wait_ready()
        yield c


def test_keep_alive_holds_a_2s_lease_for_5s_and_the_key_goes_after_it_stops(cluster: LocalCluster) -> None:
    with Client(cluster.endpoints, timeout=2.0) as kv:
        lease = kv.lease_grant(2)
        assert lease.ttl == 2 and len(lease.id) == 16
        put = kv.put("lease-client/alive", "v", lease=lease.id)
        assert put.kv.lease == lease.id
        with kv.keep_alive(lease.id) as keeper:
            start = time.monotonic()
            while time.monotonic() - start < 5:
                got = kv.get("lease-client/alive")
                assert got is not None and got.lease == lease.id, f"key gone {time.monotonic() - start:.1f}s in"
                time.sleep(0.5)
            assert keeper.renewals >= 5 and keeper.ttl == 2 and not keeper.lost
        stopped = time.monotonic()
        while kv.get("lease-client/alive") is not None:
            # TTL, plus up to one TTL per leader change, plus the commit: a
            # loaded machine can have an election in there.
            assert time.monotonic() - stopped < 10, f"the key outlived its 2 s lease by 10 s: {kv.status()}"
            time.sleep(0.2)
        with pytest.raises(NotFound):
            kv.lease_info(lease.id)


def test_calls_and_the_async_helper_notice_a_revoked_lease(cluster: LocalCluster) -> None:
    async def scenario() -> None:
        async with AsyncClient(cluster.endpoints, timeout=2.0) as kv:
            lease = await kv.lease_grant(30)
            await kv.put("lease-client/x", "1", lease=lease.id)
            result = await kv.txn(success=[Op.put("lease-client/y", "2", lease=int(lease.id, 16))])
            assert result.results[0].kv is not None and result.results[0].kv.lease == lease.id
            info = await kv.lease_info(lease.id)
            assert info.ttl == 30 and 0 < info.remaining <= 30
            assert info.keys == ["lease-client/x", "lease-client/y"]
            assert lease.id in [item.id for item in await kv.leases()]
            renewed: list[int] = []
            async with kv.keep_alive(lease.id, on_renew=lambda grant: renewed.append(grant.ttl)) as keeper:
                while not renewed:
                    await asyncio.sleep(0.05)
                revoked = await kv.lease_revoke(lease.id)
                assert revoked.deleted == 2
                # The next renewal (ttl/3 = 10 s away) would find it gone; ask now.
                with pytest.raises(NotFound) as exc:
                    await kv.lease_keepalive(lease.id)
                assert exc.value.code == "lease_not_found"
                assert renewed == [30] and not keeper.lost
            assert (await kv.list("lease-client/")).kvs == []
            with pytest.raises(NotFound):
                await kv.put("lease-client/z", "3", lease=lease.id)
            short = await kv.lease_grant(3)
            async with kv.keep_alive(short.id) as keeper:
                while keeper.renewals == 0:
                    await asyncio.sleep(0.05)
                await kv.lease_revoke(short.id)
                await asyncio.wait_for(keeper.wait_lost(), timeout=5)  # next renewal in 1 s
                assert keeper.lost and isinstance(keeper.error, NotFound)

    asyncio.run(scenario())


def test_bad_lease_arguments_fail_before_sending(cluster: LocalCluster) -> None:
    with Client(cluster.endpoints) as kv:
        for bad in ("", "xyz", "0", "8000000000000000", "12345678901234567"):
            with pytest.raises(ValueError):
                kv.lease_info(bad)
        with pytest.raises(ValueError):
            kv.lease_grant(0)
        with pytest.raises(TypeError):
            kv.lease_grant(2.5)  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            kv.put("k", "v", lease=0)
