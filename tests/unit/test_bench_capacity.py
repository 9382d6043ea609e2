"""The capacity search and the CPU accounting of `make bench`, without a stack."""

from __future__ import annotations

import os
import time

import pytest

from bench import cpu
from bench.live import search


def _holds_up_to(limit: float, tried: list[float]):
    def sustained(rate: float) -> bool:
        tried.append(rate)
        return rate <= limit

    return sustained


def test_the_coarse_steps_stop_at_the_first_failure_and_the_knee_is_bisected() -> None:
    tried: list[float] = []
    assert search((5_000, 10_000, 20_000, 40_000, 80_000), 3, _holds_up_to(27_000, tried)) == (25_000, 27_500)
    # 5k, 10k, 20k hold; 40k fails; then 30k fails, 25k holds, 27.5k fails.
    assert tried == [5_000, 10_000, 20_000, 40_000, 30_000, 25_000, 27_500]


def test_a_failing_first_step_is_bisected_down_from_nothing() -> None:
    tried: list[float] = []
    assert search((5_000, 10_000), 2, _holds_up_to(1_500, tried)) == (1_000, 2_500)
    assert tried == [5_000, 2_500, 1_000]


def test_when_every_coarse_step_holds_nothing_is_bisected_and_no_failure_is_reported() -> None:
    tried: list[float] = []
    assert search((5_000, 10_000), 3, _holds_up_to(1e9, tried)) == (10_000, None)
    assert tried == [5_000, 10_000]


def test_bisection_stops_at_the_grain() -> None:
    tried: list[float] = []
    held, failed = search((5_000, 10_000), 10, _holds_up_to(9_999, tried))
    assert (held, failed) == (9_500, 10_000)
    # Halves rounded down to 500 events/s, until no rate is left between the two.
    assert tried == [5_000, 10_000, 7_500, 8_500, 9_000, 9_500]


@pytest.mark.parametrize(
    ("server", "title", "component"),
    [
        (
            "publisher",
            "postgres: walsender cinema_replicator cinema 127.0.0.1(44648) START_REPLICATION",
            "publisher_walsender",
        ),
        ("publisher", "postgres: cinema_producer cinema 127.0.0.1(53918) idle", "publisher_backends"),
        ("publisher", "postgres: walwriter", "publisher_other"),
        ("subscriber", "postgres: logical replication apply worker for subscription 16446", "subscriber_apply"),
        (
            "subscriber",
            "postgres: logical replication parallel apply worker for subscription 16446",
            "subscriber_apply",
        ),
        ("subscriber", "postgres: cinema_loader cinema 127.0.0.1(51732) idle", "subscriber_backends"),
        ("subscriber", "postgres: checkpointer", "subscriber_other"),
    ],
)
def test_postgres_processes_are_told_apart_by_their_title(server: str, title: str, component: str) -> None:
    assert cpu.component_of(server, title) == component


def test_cores_count_new_processes_from_zero_and_leave_the_rest_of_the_machine_elsewhere() -> None:
    first = cpu.Sample(at=100.0, machine=1_000.0, processes={1: ("loader", 50.0), 2: ("producer", 10.0)})
    last = cpu.Sample(
        at=110.0,
        machine=1_016.0,
        processes={1: ("loader", 58.0), 2: ("producer", 13.0), 3: ("subscriber_apply", 2.0)},
    )
    assert cpu.cores(first, last) == pytest.approx(
        {"loader": 0.8, "producer": 0.3, "subscriber_apply": 0.2, "elsewhere": 0.3, "machine": 1.6}
    )


def test_a_process_cpu_time_is_read_as_the_kernel_counts_it() -> None:
    """/proc/<pid>/stat against the process's own CPU clock, whatever else runs on the machine."""
    clock_before, read_before = time.process_time(), cpu.process_seconds(os.getpid())
    sum(i * i for i in range(3_000_000))
    clock_after, read_after = time.process_time(), cpu.process_seconds(os.getpid())
    assert read_before is not None and read_after is not None
    assert read_after - read_before > 0.05
    # Clock ticks are 10 ms.
    assert read_after - read_before == pytest.approx(clock_after - clock_before, abs=0.03)
    assert cpu.process_seconds(2**22 + 1) is None


def test_the_goal_rate_is_priced_by_the_ingest_cores_per_event_at_the_capacity() -> None:
    from bench.__main__ import _with_capacity_ratio

    figures = {
        "replication": {"replication_rows_per_second": 200_000.0},
        "capacity": {
            "sustained_events_per_second": 40_000.0,
            "cpu_cores_producer": 0.3,
            "cpu_cores_publisher_backends": 0.5,
            "cpu_cores_loader": 0.6,
        },
    }
    _with_capacity_ratio(figures)
    capacity = figures["capacity"]
    assert capacity["capacity_to_replication_ratio"] == pytest.approx(0.2)
    assert capacity["goal_events_per_second"] == pytest.approx(160_000)
    # 0.8 cores for 40,000 events/s, four times that rate: the loader's cores are not counted.
    assert capacity["ingest_cores_at_goal_rate"] == pytest.approx(3.2)
