"""The server's estimate of how long a request waited in its socket, from the client's clock."""

from __future__ import annotations

import pytest

from agent_runtime.queue_delay import MAX_CLIENTS, MAX_QUEUE_S, WINDOW_S, QueueDelay

OFFSET = 1234.5  # the client's clock is this far behind the server's: it must cancel out


def test_the_excess_over_the_smallest_recent_delay_is_the_queueing_time():
    q = QueueDelay()
    assert q.observe("a", 100.0 - OFFSET, 100.001) == 0.0  # first request: nothing to compare with
    assert q.observe("a", 100.010 - OFFSET, 100.011) == pytest.approx(0.0)
    # Sent at 100.020, read 30 ms later instead of 1 ms: 29 ms queued.
    assert q.observe("a", 100.020 - OFFSET, 100.050) == pytest.approx(0.029)
    # A quicker transit than any before lowers the base.
    assert q.observe("a", 100.060 - OFFSET, 100.0605) == pytest.approx(0.0)
    assert q.observe("a", 100.070 - OFFSET, 100.0715) == pytest.approx(0.001)


def test_clients_have_their_own_clocks():
    q = QueueDelay()
    q.observe("a", 10.0, 10.001)
    q.observe("b", 50.0, 10.001)  # another client, its clock 40 s behind
    assert q.observe("a", 10.010, 10.011) == pytest.approx(0.0)
    assert q.observe("b", 50.010, 10.016) == pytest.approx(0.005)
    assert len(q) == 2


def test_a_clock_step_resets_the_estimate_instead_of_refusing_everything():
    q = QueueDelay()
    q.observe("a", 10.0, 10.001)
    # The client's clock stepped back by 5 s (an NTP correction): the apparent delay jumps by 5 s.
    assert q.observe("a", 5.010, 10.011) == 0.0
    assert q.observe("a", 5.020, 10.021) == pytest.approx(0.0)
    assert MAX_QUEUE_S < 5.0


def test_timestamps_that_do_not_run_are_never_taken_for_queueing():
    q = QueueDelay()
    for i in range(5):
        assert q.observe("a", 123.5, 10.0 + 0.3 * i) == 0.0  # a constant "timestamp"


def test_the_base_follows_a_drifting_clock_within_two_windows():
    q = QueueDelay()
    q.observe("a", 0.0, 0.001)
    # From now on every transit looks 2 ms longer (the clocks drifted apart); after two windows
    # the old, smaller base is forgotten and the requests no longer look queued.
    t = 0.0
    while t < 2.5 * WINDOW_S:
        t += 0.5
        delay = q.observe("a", t, t + 0.003)
    assert delay == pytest.approx(0.0)


def test_the_table_is_bounded():
    q = QueueDelay()
    for i in range(MAX_CLIENTS + 5):
        q.observe(i, 1.0, 1.0)
    assert len(q) <= MAX_CLIENTS
