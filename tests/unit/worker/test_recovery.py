"""When the worker counts a table recovery as stalled: only one that has been running without progress."""

from __future__ import annotations

from agent.worker.recovery import RecoveryWatch, reread_from


def test_a_recovery_without_progress_for_the_stall_time_is_stalled_once_then_again_after_as_long() -> None:
    watch = RecoveryWatch(stall_after=10.0)
    assert not watch.observe(True, "offsets-a", 100.0)
    assert not watch.observe(True, "offsets-a", 109.9)
    assert watch.observe(True, "offsets-a", 110.0)
    assert watch.stalls == 1
    assert not watch.observe(True, "offsets-a", 115.0), "not again on the next tick"
    assert watch.observe(True, "offsets-a", 120.0)
    assert watch.stalls == 2


def test_progress_restarts_the_clock() -> None:
    watch = RecoveryWatch(stall_after=10.0)
    watch.observe(True, "offsets-a", 100.0)
    assert not watch.observe(True, "offsets-b", 108.0)
    assert not watch.observe(True, "offsets-b", 117.0)
    assert watch.observe(True, "offsets-b", 118.0)


def test_no_recovery_running_is_never_a_stall_and_a_new_one_starts_a_fresh_clock() -> None:
    watch = RecoveryWatch(stall_after=10.0)
    assert not watch.observe(False, "offsets-a", 100.0)
    assert not watch.observe(False, "offsets-a", 500.0)
    watch.observe(True, "offsets-a", 100.0)
    watch.observe(False, "offsets-a", 105.0)
    assert not watch.observe(True, "offsets-a", 112.0), "the recovery that ended is not the one running now"
    assert watch.observe(True, "offsets-a", 122.0)
    assert watch.stalls == 1


def test_a_stalled_partition_is_read_again_from_the_first_record_not_applied() -> None:
    assert reread_from(None) == 0
    assert reread_from(-1) == 0
    assert reread_from(0) == 1
    assert reread_from(41) == 42
