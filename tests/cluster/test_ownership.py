"""Partition ownership (sentinel.cluster.ownership): the fair-share plan as pure logic, and
the advisory locks on a real PostgreSQL database: one owner per partition, a member's
partitions free the moment its session ends, and a newcomer gets its share."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from sentinel.cluster.ownership import PUBLISHER_SLOT, PartitionOwnership, fair_share, owners, plan
from tests.e2e_helpers import wait_for


def test_fair_shares_add_up_to_the_partitions() -> None:
    for count in range(1, 8):
        members = [f"m{i}" for i in range(count)]
        shares = [fair_share(members, m, 8) for m in members]
        assert sum(shares) == 8
        assert max(shares) - min(shares) <= 1


def test_plan_releases_above_the_share_and_takes_free_ones_below_it() -> None:
    members = ["a", "b"]
    held = dict.fromkeys(range(6), "a")
    assert plan("a", members, held, 6) == ([3, 4, 5], [])
    assert plan("b", members, held, 6) == ([], [])  # nothing free yet: wait for a
    held = {0: "a", 1: "a", 2: "a"}
    release, take = plan("b", members, held, 6)
    assert release == []
    assert sorted(take) == [3, 4, 5]


def test_plan_spreads_first_tries_by_rank() -> None:
    members = ["a", "b", "c"]
    takes = [plan(m, members, {}, 6)[1] for m in members]
    assert [t[0] for t in takes] == [0, 2, 4]


class _Member:
    """A PartitionOwnership whose take/give only record what they were asked."""

    def __init__(self, url: str, name: str, partitions: int = 6) -> None:
        self.taken: list[int] = []
        self.given: list[int] = []
        self.dropped: list[int] = []
        self.lock = threading.Lock()
        self.ownership = PartitionOwnership(
            url,
            group="test",
            member=name,
            partitions=partitions,
            interval=0.1,
            take=self._take,
            give=self._give,
            drop=self.dropped.append,
        )

    def _take(self, partition: int) -> bool:
        with self.lock:
            self.taken.append(partition)
        return True

    def _give(self, partition: int) -> bool:
        with self.lock:
            self.given.append(partition)
        return True

    def __enter__(self) -> _Member:
        self.ownership.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.ownership.stop()
        self.ownership.close()


def _by_member(url: str) -> dict[str, list[int]]:
    found: dict[str, list[int]] = {}
    for slot, member in owners(url, "test").items():
        if slot != PUBLISHER_SLOT:
            found.setdefault(member, []).append(slot)
    return {m: sorted(p) for m, p in found.items()}


@pytest.mark.postgres
def test_each_partition_has_one_owner_and_a_closed_session_frees_its_partitions(
    postgres_url: str,
) -> None:
    with _Member(postgres_url, "one") as one:
        wait_for(lambda: len(one.ownership.owned) == 6, 30, "one to hold every partition")
        assert one.ownership.publisher
        with _Member(postgres_url, "two") as two:
            # one gives three back cleanly, two takes them: 3 + 3, never shared.
            wait_for(
                lambda: sorted(map(len, _by_member(postgres_url).values())) == [3, 3],
                30,
                "a fair split",
            )
            assert set(one.ownership.owned).isdisjoint(two.ownership.owned)
            assert sorted(one.given) == sorted(two.taken)
            assert not two.ownership.publisher
        # two's session ended: one takes its partitions back.
        wait_for(lambda: len(one.ownership.owned) == 6, 30, "one to take them back")
    assert owners(postgres_url, "test") == {}


@pytest.mark.postgres
def test_a_lost_session_drops_every_partition_then_takes_them_again(postgres_url: str) -> None:
    with _Member(postgres_url, "one") as one:
        wait_for(lambda: len(one.ownership.owned) == 6, 30, "one to hold every partition")
        engine = create_engine(postgres_url, poolclass=NullPool)
        try:
            with engine.connect() as conn:
                ended = conn.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE application_name LIKE 'sentinel:%:one:%'"
                    )
                ).all()
        finally:
            engine.dispose()
        assert ended == [(True,)]
        # Its next look fails: it stops reading everything, reconnects, and locks again.
        wait_for(lambda: sorted(one.dropped) == list(range(6)), 30, "every partition dropped")
        wait_for(lambda: len(one.ownership.owned) == 6, 30, "the partitions taken again")
        assert one.ownership.errors >= 1
        assert sorted(one.taken) == sorted([*range(6), *range(6)])
