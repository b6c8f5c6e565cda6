"""The admin password check, with back-off after wrong guesses that cannot lock the admin out.

    gate = AdminGate(password)
    gate.check(attempt, client="203.0.113.5")   # returns, or raises AdminRefused

A wrong password makes that client wait before its next attempt is even compared: 1 s after
the first failure, doubling with each further one up to `MAX_CLIENT_DELAY`; the right
password resets the client. An attempt outside a wait is compared (in constant time) and
the right password is always accepted, however many wrong ones others sent. Many addresses
guessing together are bounded instead by an alert: while everyone's last `GLOBAL_FAILURES`
failures fall within `GLOBAL_WINDOW`, each new failure makes its client wait `ALERT_DELAY`
(a window) at once, so each address gets about one guess per window. An IPv6 client counts
by its /64 network (one subscriber usually holds a whole one). What the gate cannot tell
apart is one address: guesses from behind the admin's own NAT make the admin wait too.

Refusals answer at once instead of sleeping, so a guesser holds no worker. Memory is bounded:
a client is forgotten `FORGET_AFTER` its last failure, and beyond `MAX_CLIENTS` the longest
quiet first. Failures are logged with the client and the counts, never the guessed text.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import NamedTuple

FIRST_DELAY = 1.0  # s a client waits after its first wrong password
MAX_CLIENT_DELAY = 300.0  # s, the longest wait after many wrong passwords in a row
GLOBAL_FAILURES = 30  # wrong passwords from everyone together ...
GLOBAL_WINDOW = 600.0  # s ... within this window put the gate on alert
ALERT_DELAY = GLOBAL_WINDOW  # s a client waits after a wrong password on alert
FORGET_AFTER = ALERT_DELAY + GLOBAL_WINDOW  # s after its last failure a client is forgotten
MAX_CLIENTS = 100_000  # clients remembered at most (about 25 MB)
MAX_DOUBLINGS = 30  # the delay's exponent is capped here (far past MAX_CLIENT_DELAY)
IPV6_PREFIX = 64  # bits of an IPv6 address that name one client

log = logging.getLogger(__name__)


class AdminRefused(ValueError):
    """The password was wrong, or this client must wait; `retry_after` in seconds (0 for a
    plain wrong password)."""

    def __init__(self, message: str, retry_after: float = 0.0):
        super().__init__(message)
        self.retry_after = retry_after


class _Client(NamedTuple):
    failures: int  # wrong passwords in a row
    until: float  # its next attempt is compared from then on
    last: float  # when it last failed


def client_key(client: str) -> str:
    """What the back-off counts `client` (an address) by: an IPv6 address by its /64."""
    try:
        address = ipaddress.ip_address(client)
    except ValueError:
        return client
    if address.version == 6:
        return str(ipaddress.ip_network(f"{address}/{IPV6_PREFIX}", strict=False))
    return str(address)


class AdminGate:
    """Check admin passwords with per-client back-off and an alert (see the module doc)."""

    def __init__(self, password: str, clock: Callable[[], float] = time.monotonic):
        if not password:
            raise ValueError("An admin password must not be empty.")
        self._password = password.encode()
        self._clock = clock
        self._lock = threading.Lock()
        self._clients: OrderedDict[str, _Client] = OrderedDict()  # by last failure
        self._failures: deque[float] = deque(maxlen=GLOBAL_FAILURES)  # everyone's latest

    def check(self, attempt: str | None, client: str) -> None:
        """Return if `attempt` is the password; else raise `AdminRefused` (wrong, or this
        client must wait)."""
        key = client_key(client)
        with self._lock:
            now = self._clock()
            record = self._clients.get(key)
            if record and now < record.until:
                raise AdminRefused(f"Too many wrong admin passwords; try again in "
                                   f"{math.ceil(record.until - now)} s.", record.until - now)
            if hmac.compare_digest((attempt or "").encode(), self._password):
                self._clients.pop(key, None)
                return
            alert = self._on_alert(now)
            failures = (record.failures if record else 0) + 1
            delay = ALERT_DELAY if alert else min(
                FIRST_DELAY * 2 ** min(failures - 1, MAX_DOUBLINGS), MAX_CLIENT_DELAY)
            self._remember(key, _Client(failures, now + delay, now))
            self._failures.append(now)
            log.warning("wrong admin password from %s (%d in a row; next compared in %.0f s%s)",
                        key, failures, delay, "; on alert: many wrong passwords from "
                        "everyone" if alert else "")
        raise AdminRefused("Wrong admin password.")

    def _on_alert(self, now: float) -> bool:
        """Whether everyone's last `GLOBAL_FAILURES` failures fell within `GLOBAL_WINDOW`."""
        return (len(self._failures) == GLOBAL_FAILURES
                and self._failures[0] > now - GLOBAL_WINDOW)

    def _remember(self, key: str, record: _Client) -> None:
        """Keep `key`'s record as the latest; forget clients quiet for `FORGET_AFTER`, and the
        quietest beyond `MAX_CLIENTS` (the records are in the order of their last failure)."""
        self._clients[key] = record
        self._clients.move_to_end(key)
        while self._clients:
            oldest, quiet = next(iter(self._clients.items()))
            if len(self._clients) <= MAX_CLIENTS and quiet.last > record.last - FORGET_AFTER:
                break
            del self._clients[oldest]
