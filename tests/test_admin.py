"""The admin password gate: per-client doubling back-off, a global limit, no guess logged."""

from __future__ import annotations

import logging

import pytest

from voiceface.admin import (FIRST_DELAY, GLOBAL_FAILURES, GLOBAL_WINDOW, MAX_CLIENT_DELAY,
                             AdminGate, AdminRefused)


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def gate():
    clock = Clock()
    return AdminGate("open sesame", clock=clock), clock


def refusal(gate, attempt, client="a") -> AdminRefused:
    with pytest.raises(AdminRefused) as info:
        gate.check(attempt, client)
    return info.value


def test_right_password_passes_and_wrong_is_refused(gate):
    gate, _ = gate
    gate.check("open sesame", "a")
    err = refusal(gate, "open sesame ")
    assert str(err) == "Wrong admin password." and err.retry_after == 0
    for wrong in (None, "", "OPEN SESAME"):
        assert refusal(gate, wrong, client=f"c-{wrong}").retry_after == 0


def test_each_failure_doubles_the_clients_wait_up_to_the_cap(gate):
    gate, clock = gate
    waits = []
    for _ in range(12):
        refusal(gate, "guess")  # compared: wrong
        err = refusal(gate, "open sesame")  # not even compared while waiting
        waits.append(err.retry_after)
        clock.now += err.retry_after  # exactly at the end of the wait the next one is checked
    assert waits[:4] == [FIRST_DELAY, 2 * FIRST_DELAY, 4 * FIRST_DELAY, 8 * FIRST_DELAY]
    assert max(waits) == MAX_CLIENT_DELAY and waits[-1] == MAX_CLIENT_DELAY
    gate.check("open sesame", "a")  # the right password after the wait resets the client
    refusal(gate, "guess")
    assert refusal(gate, "guess").retry_after == FIRST_DELAY


def test_one_clients_failures_do_not_delay_another(gate):
    gate, _ = gate
    refusal(gate, "guess", client="attacker")
    assert refusal(gate, "guess", client="attacker").retry_after == FIRST_DELAY
    gate.check("open sesame", "admin")


def test_many_clients_together_hit_the_global_limit(gate):
    gate, clock = gate
    for i in range(GLOBAL_FAILURES):
        refusal(gate, "guess", client=f"10.0.0.{i}")
        clock.now += 1.0
    err = refusal(gate, "open sesame", client="admin")  # even the right one, for now
    assert "recently" in str(err)
    assert err.retry_after == pytest.approx(GLOBAL_WINDOW - GLOBAL_FAILURES)
    clock.now += err.retry_after  # the oldest failure leaves the window
    gate.check("open sesame", "admin")


def test_failures_are_logged_without_the_guess(gate, caplog):
    gate, _ = gate
    with caplog.at_level(logging.WARNING, logger="voiceface.admin"):
        refusal(gate, "hunter2-secret-guess", client="198.51.100.7")
    assert "198.51.100.7" in caplog.text and "1 in a row" in caplog.text
    assert "hunter2" not in caplog.text


def test_an_empty_password_is_not_a_gate():
    with pytest.raises(ValueError, match="empty"):
        AdminGate("")
