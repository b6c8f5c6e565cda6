"""The admin password check, with back-off after wrong guesses.

    gate = AdminGate(password)
    gate.check(attempt, client="203.0.113.5")   # returns, or raises AdminRefused

A wrong password makes that client wait before its next attempt is even compared: 1 s after
the first failure, doubling with each further one up to `MAX_CLIENT_DELAY`; the right
password resets the client. All clients together may fail `GLOBAL_FAILURES` times within
`GLOBAL_WINDOW`; past that every attempt, right or wrong, is refused until the window has room
again, so that many addresses guessing slowly cannot search the password space either (the
price: an attacker can lock the admin out for a while; restarting the app clears it).
Refusals answer at once instead of sleeping, so a guesser holds no worker. The comparison is
constant-time; failures are logged with the client and the counts, never the guessed text.
"""

from __future__ import annotations

import hmac
import logging
import math
import threading
import time
from collections import deque
from typing import Callable

FIRST_DELAY = 1.0  # s a client waits after its first wrong password
MAX_CLIENT_DELAY = 300.0  # s, the longest wait after many wrong passwords in a row
GLOBAL_FAILURES = 30  # wrong passwords from everyone together ...
GLOBAL_WINDOW = 600.0  # s ... within this window, before every attempt is refused

log = logging.getLogger(__name__)


class AdminRefused(ValueError):
    """The password was wrong, or attempts are refused for now; `retry_after` in seconds
    (0 for a plain wrong password)."""

    def __init__(self, message: str, retry_after: float = 0.0):
        super().__init__(message)
        self.retry_after = retry_after


class AdminGate:
    """Check admin passwords with per-client and global back-off (see the module doc)."""

    def __init__(self, password: str, clock: Callable[[], float] = time.monotonic):
        if not password:
            raise ValueError("An admin password must not be empty.")
        self._password = password.encode()
        self._clock = clock
        self._lock = threading.Lock()
        self._clients: dict[str, tuple[int, float]] = {}  # client -> (failures in a row, until)
        self._failures: deque[float] = deque()  # times of recent failures, everyone's

    def check(self, attempt: str | None, client: str) -> None:
        """Return if `attempt` is the password; else raise `AdminRefused` (wrong, or too many
        recent failures from this client or from everyone)."""
        with self._lock:
            now = self._clock()
            while self._failures and self._failures[0] <= now - GLOBAL_WINDOW:
                self._failures.popleft()
            if len(self._failures) >= GLOBAL_FAILURES:
                wait = self._failures[0] + GLOBAL_WINDOW - now
                raise AdminRefused(f"Too many wrong admin passwords recently; try again in "
                                   f"{math.ceil(wait)} s.", wait)
            failures, until = self._clients.get(client, (0, now))
            if now < until:
                raise AdminRefused(f"Too many wrong admin passwords; try again in "
                                   f"{math.ceil(until - now)} s.", until - now)
            if hmac.compare_digest((attempt or "").encode(), self._password):
                self._clients.pop(client, None)
                return
            failures += 1
            self._forget_quiet_clients(now)
            delay = min(FIRST_DELAY * 2 ** (failures - 1), MAX_CLIENT_DELAY)
            self._clients[client] = (failures, now + delay)
            self._failures.append(now)
            log.warning("wrong admin password from %s (%d in a row; %d from everyone in the "
                        "last %.0f s)", client, failures, len(self._failures), GLOBAL_WINDOW)
        raise AdminRefused("Wrong admin password.")

    def _forget_quiet_clients(self, now: float) -> None:
        """Drop clients whose last wait ended a window ago (bounds the memory many addresses
        could fill; the global limit still counts their failures)."""
        for client in [c for c, (_, until) in self._clients.items()
                       if until <= now - GLOBAL_WINDOW]:
            del self._clients[client]
