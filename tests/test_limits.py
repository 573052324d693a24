"""The sans-IO limits: token bucket (flood control) and connection gate (caps)."""

from __future__ import annotations

import resource

import pytest

from trio_chat.protocol import RATE_LIMITED, SERVER_FULL, ProtocolError
from trio_chat.server.limits import Gate, TokenBucket
from trio_chat.server.process import raise_nofile_limit


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_burst_passes_then_messages_wait_one_interval_each() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=5, burst=10, ceiling=50, clock=clock)
    assert [bucket.take() for _ in range(10)] == [0.0] * 10
    assert bucket.take() == pytest.approx(0.2)
    # A second message before the first's wait is over waits for both.
    assert bucket.take() == pytest.approx(0.4)
    assert bucket.held == 2


def test_waiting_pays_the_debt_and_a_pause_refills_the_bucket() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=5, burst=2, ceiling=50, clock=clock)
    bucket.take(), bucket.take()
    delay = bucket.take()
    clock.now += delay  # the reader sleeps this long, then handles the message
    assert bucket.take() == pytest.approx(0.2)
    clock.now += 10  # a quiet spell refills the bucket, up to the burst only
    assert [bucket.take() for _ in range(2)] == [0.0, 0.0]
    assert bucket.held == 0
    assert bucket.take() > 0


def test_past_the_ceiling_in_a_row_is_rate_limited() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=5, burst=1, ceiling=3, clock=clock)
    assert bucket.take() == 0.0
    for _ in range(3):
        clock.now += bucket.take()  # delayed, but delivered
    with pytest.raises(ProtocolError) as caught:
        bucket.take()
    assert caught.value.code == RATE_LIMITED and caught.value.fatal


def test_a_message_within_the_limit_resets_the_ceiling_count() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=5, burst=1, ceiling=3, clock=clock)
    for _ in range(10):
        bucket.take()
        clock.now += 0.1
        clock.now += bucket.take()
        clock.now += 1.0  # a pause: the next message is on time
    assert bucket.held <= 1


def test_late_wakeups_do_not_reset_the_count_but_a_real_pause_does() -> None:
    """A busy server may act on a delayed message late, so the flooder's next message
    finds a token; that must not wipe its record. A quiet spell that refills the
    bucket does."""
    clock = FakeClock()
    bucket = TokenBucket(rate=5, burst=10, ceiling=20, clock=clock)
    for _ in range(10):
        bucket.take()
    with pytest.raises(ProtocolError):
        for _ in range(100):
            delay = bucket.take()
            if delay:
                clock.now += delay + 0.3  # each wait overshoots by 1.5 intervals
    assert bucket.held == 21
    bucket = TokenBucket(rate=5, burst=10, ceiling=20, clock=clock)
    for _ in range(30):
        clock.now += bucket.take()
    assert bucket.held == 20
    clock.now += 2.0  # the bucket is full again
    assert bucket.take() == 0.0 and bucket.held == 0


def test_rate_zero_turns_the_bucket_off() -> None:
    bucket = TokenBucket(rate=0, burst=10, ceiling=1, clock=FakeClock())
    assert not bucket.enabled
    assert all(bucket.take() == 0.0 for _ in range(10_000))


def test_gate_caps_per_ip_and_in_total_and_releases() -> None:
    gate: Gate[object] = Gate(max_clients=3, max_per_ip=2)
    gate.admit("10.0.0.1")
    gate.admit("10.0.0.1")
    with pytest.raises(ProtocolError) as caught:
        gate.admit("10.0.0.1")
    assert caught.value.code == SERVER_FULL and "your address" in caught.value.text
    gate.admit("10.0.0.2")
    with pytest.raises(ProtocolError) as caught:
        gate.admit("10.0.0.3")
    assert caught.value.code == SERVER_FULL and "server full" in caught.value.text
    gate.release("10.0.0.1")
    gate.admit("10.0.0.3")
    assert gate.total == 3 and dict(gate.per_ip) == {"10.0.0.1": 1, "10.0.0.2": 1, "10.0.0.3": 1}
    for ip in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):
        gate.release(ip)
    assert gate.total == 0 and not gate.per_ip


def test_gate_zero_means_no_cap_and_closing_refuses_everyone() -> None:
    gate: Gate[object] = Gate(max_clients=0, max_per_ip=0)
    for _ in range(1000):
        gate.admit("127.0.0.1")
    gate.closing = True
    with pytest.raises(ProtocolError) as caught:
        gate.admit("127.0.0.2")
    assert "shutting down" in caught.value.text


def test_nofile_soft_limit_is_raised_to_the_hard_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        if hard != resource.RLIM_INFINITY and hard > 256:
            resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
        limit = raise_nofile_limit()
        assert limit == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if hard != resource.RLIM_INFINITY:
            assert limit == hard
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
