"""The admin password gate: per-client doubling back-off, an alert that bounds many addresses
guessing together but never refuses the right password, bounded memory, no guess logged."""

from __future__ import annotations

import json
import logging
import math
import re
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import voiceface.admin
from voiceface.admin import (ALERT_DELAY, FIRST_DELAY, FORGET_AFTER, GLOBAL_FAILURES,
                             GLOBAL_WINDOW, MAX_CLIENT_DELAY, AdminGate, AdminRefused)
from voiceface.audio import SAMPLE_RATE
from voiceface.ui.text import TEXT


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


def test_clients_taking_turns_each_wait_their_own_doubling(gate):
    """A, B and C guess in turn: each one's waits are 1, 2, 4, ... s, whatever the others
    did in between, and one's failure leaves the others' remaining waits as they were."""
    gate, clock = gate
    clients = ("A", "B", "C")
    until = dict.fromkeys(clients, clock.now)
    waits: dict[str, list[float]] = {c: [] for c in clients}
    for _ in range(5):
        for c in clients:
            clock.now = max(clock.now, until[c])  # c's wait is over: its guess is compared
            assert str(refusal(gate, "guess", client=c)) == "Wrong admin password."
            for other in clients:  # the others' remaining waits are as they were
                if other != c and until[other] > clock.now:
                    err = refusal(gate, "open sesame", client=other)  # waiting: not compared
                    assert err.retry_after == until[other] - clock.now
            waits[c].append(refusal(gate, "open sesame", client=c).retry_after)
            until[c] = clock.now + waits[c][-1]
    assert waits == {c: [FIRST_DELAY * 2 ** i for i in range(5)] for c in clients}


def test_many_clients_failing_never_refuse_the_right_password(gate):
    gate, clock = gate
    for i in range(GLOBAL_FAILURES):
        refusal(gate, "guess", client=f"10.0.0.{i}")
        clock.now += 1.0
    gate.check("open sesame", "admin")  # the right password is always accepted
    # on alert: each new failure, from a fresh address or one with a streak, waits a window
    assert refusal(gate, "guess", client="10.0.1.1").retry_after == 0
    assert refusal(gate, "guess", client="10.0.1.1").retry_after == ALERT_DELAY
    clock.now += FIRST_DELAY
    refusal(gate, "guess", client="10.0.0.0")  # its 1 s is over: compared, a second failure
    assert refusal(gate, "guess", client="10.0.0.0").retry_after == ALERT_DELAY
    gate.check("open sesame", "admin")
    clock.now += GLOBAL_WINDOW  # the last 30 failures are no longer all recent
    refusal(gate, "guess", client="10.0.2.2")
    assert refusal(gate, "guess", client="10.0.2.2").retry_after == FIRST_DELAY


def test_many_addresses_guessing_get_about_one_guess_each_per_window(gate):
    gate, clock = gate
    addresses, seconds, step = 200, 3 * GLOBAL_WINDOW, 5.0
    compared = dict.fromkeys(range(addresses), 0)
    for _ in range(int(seconds / step)):
        for i in range(addresses):  # everyone tries again every `step` seconds
            if refusal(gate, "guess", client=f"198.51.{i // 256}.{i % 256}").retry_after == 0:
                compared[i] += 1
        clock.now += step
    assert max(compared.values()) <= 2 + seconds / ALERT_DELAY
    gate.check("open sesame", "203.0.113.1")  # and the admin still gets in


def test_an_ipv6_client_counts_by_its_64_network(gate):
    gate, _ = gate
    refusal(gate, "guess", client="2001:db8:1:2::1")
    assert refusal(gate, "guess", client="2001:db8:1:2:ffff::9").retry_after == FIRST_DELAY
    assert refusal(gate, "guess", client="2001:db8:1:3::1").retry_after == 0  # another /64


def test_a_long_streak_stays_at_the_cap(gate):
    gate, clock = gate
    for _ in range(1100):  # past 2 ** 1023, which a float cannot hold
        refusal(gate, "guess")
        err = refusal(gate, "guess")
        clock.now += err.retry_after
    assert err.retry_after == MAX_CLIENT_DELAY


def test_memory_is_bounded(gate, monkeypatch):
    gate, clock = gate
    for _ in range(4):  # "a" earns a 8 s wait
        refusal(gate, "guess", client="a")
        clock.now += refusal(gate, "guess", client="a").retry_after
    clock.now += FORGET_AFTER
    refusal(gate, "guess", client="b")  # "a" was quiet long enough: forgotten
    refusal(gate, "guess", client="a")
    assert refusal(gate, "guess", client="a").retry_after == FIRST_DELAY
    monkeypatch.setattr(voiceface.admin, "MAX_CLIENTS", 3)
    refusal(gate, "guess", client="c")
    refusal(gate, "guess", client="d")
    clock.now += FIRST_DELAY
    refusal(gate, "guess", client="d")  # d waits 2 s from now
    refusal(gate, "guess", client="e")
    refusal(gate, "guess", client="c")  # c failed again: now d is the quietest
    refusal(gate, "guess", client="f")  # one client too many: d is forgotten
    assert refusal(gate, "guess", client="c").retry_after == 2 * FIRST_DELAY
    assert refusal(gate, "guess", client="d").retry_after == 0  # its wait forgotten too


def test_failures_are_logged_without_the_guess(gate, caplog):
    gate, _ = gate
    with caplog.at_level(logging.WARNING, logger="voiceface.admin"):
        refusal(gate, "hunter2-secret-guess", client="198.51.100.7")
    assert "198.51.100.7" in caplog.text and "1 in a row" in caplog.text
    assert "hunter2" not in caplog.text


def test_an_empty_password_is_not_a_gate():
    with pytest.raises(ValueError, match="empty"):
        AdminGate("")


# Over raw HTTP, as an attacker sends it: the app with an admin password, its own server (the
# tests below leave the gate on alert). Attackers connect from their own loopback addresses.

@pytest.fixture(scope="module")
def server(dev_bundle, tmp_path_factory):
    from conftest import serve_app
    from test_visitors import PASSWORD

    root = tmp_path_factory.mktemp("admin")
    env = {"VOICEFACE_ADMIN_PASSWORD": PASSWORD, "GRADIO_TEMP_DIR": str(root / "cache")}
    args = ("--gallery-dir", str(root / "live"), "--backbone", str(root / "no-backbone"))
    with serve_app(dev_bundle, root / "app.log", env, args) as (url, _):
        yield {"url": url, "log": root / "app.log"}


def delete(http, password: str) -> tuple[str, object]:
    """Ask to delete nobody: the right password gets "Choose the person to delete."."""
    from test_visitors import call

    return call(http, "delete", [password, "nobody", True])


@pytest.mark.slow
def test_spoofed_forwarded_headers_neither_free_a_guesser_nor_lock_out_the_admin(server):
    """Before, uvicorn believed X-Forwarded-For from 127.0.0.1: 30 guesses under 30 made-up
    addresses refused the right password everywhere. Now the headers are ignored: the
    guesser is one client, waiting its own doubling waits, and the admin gets in."""
    from test_visitors import PASSWORD, client

    answers = []
    start = time.monotonic()
    with client(server["url"], "127.0.0.1") as attacker:
        for i in range(GLOBAL_FAILURES):
            spoof = f"198.51.100.{i}"
            attacker.headers.update({"X-Forwarded-For": spoof, "X-Real-IP": spoof,
                                     "Forwarded": f"for={spoof}"})
            answers.append(delete(attacker, f"guess-{i}"))
    elapsed = time.monotonic() - start
    with client(server["url"], "127.0.0.3") as admin:
        assert delete(admin, PASSWORD) == ("error", "Choose the person to delete.")
    log = server["log"].read_text()
    compared = log.count("wrong admin password from 127.0.0.1 ")
    assert "198.51.100." not in log
    # a wait of 1, 2, 4, ... s after each compared guess: at most 1 + log2(elapsed) of them
    assert 1 <= compared <= 2 + math.log2(max(elapsed, 1.0)), (compared, elapsed)
    wrong = [a for a in answers if a == ("error", "Wrong admin password.")]
    waits = [a for a in answers if a[0] == "error" and "try again in" in str(a[1])]
    assert (len(wrong), len(waits)) == (compared, GLOBAL_FAILURES - compared), answers


def duration_fn(url: str) -> int:
    """The fn_index of the Enroll tab's duration event (private: no API name to call)."""
    import httpx

    config = httpx.get(f"{url}config", timeout=30).json()
    [fn] = [d["id"] for d in config["dependencies"] if d.get("api_name") == "duration"]
    return fn


def queued(http, fn_index: int, data: list) -> tuple[str, object]:
    """Join the queue as the page does and read the answer: ("complete", outputs) or
    ("error", message)."""
    session = uuid.uuid4().hex
    http.post("queue/join", json={"data": data, "fn_index": fn_index,
                                  "session_hash": session}).raise_for_status()
    with http.stream("GET", "queue/data", params={"session_hash": session}) as stream:
        for line in stream.iter_lines():
            message = json.loads(line[len("data: "):]) if line.startswith("data: ") else {}
            if message.get("msg") == "process_completed":
                output = message["output"]
                return (("complete", output["data"]) if message["success"]
                        else ("error", output.get("error")))
    raise AssertionError("the queue closed without an answer")


@pytest.mark.slow
def test_the_recordings_length_needs_the_password_before_any_decoding(server, tmp_path):
    """A text file named .wav would be answered "The recording is a text file" if decoded;
    without the right password it is never decoded: a hint for no password (in the
    visitor's language), the refusal for a wrong one, which counts as a failed guess."""
    from test_visitors import PASSWORD, client, file_ref, upload

    fake = tmp_path / "voice.wav"
    fake.write_text("not a recording " * 100)
    long = tmp_path / "long.wav"  # 8 minutes: once decoded in full before being refused
    sf.write(long, np.zeros(480 * SAMPLE_RATE, dtype=np.int16), SAMPLE_RATE)
    fn = duration_fn(server["url"])
    with client(server["url"], "127.0.0.50") as http:
        text, minutes = file_ref(upload(http, fake)), file_ref(upload(http, long))
        missing = file_ref(str(Path(text["path"]).parent / "gone.wav"))
        hints = [queued(http, fn, [password, ref]) for password in ("", None)
                 for ref in (text, minutes)]
        wrong = queued(http, fn, ["guess", text])
        http.headers["Accept-Language"] = "ja,en;q=0.5"
        japanese = queued(http, fn, ["", text])
    with client(server["url"], "127.0.0.51") as admin:
        decoded = queued(admin, fn, [PASSWORD, text])
        gone = queued(admin, fn, [PASSWORD, missing])
    hint = "Enter the admin password first to see how long a recording is."
    assert hints == [("complete", [hint])] * 4
    assert japanese == ("complete", [TEXT["ja"]["duration_password"]])
    assert wrong == ("complete", ["Wrong admin password."])
    assert "wrong admin password from 127.0.0.50 (1 in a row" in server["log"].read_text()
    kind, [answer] = decoded  # the right password: the file is read and refused as text
    assert kind == "complete" and answer.startswith("The recording is a text file"), answer
    assert gone == ("complete", [TEXT["en"]["gone"]])  # the message itself, no quotes


@pytest.mark.slow
def test_wrong_guesses_from_many_addresses_never_refuse_the_right_password(server):
    """Real addresses this time: 30 of them, one wrong guess each, once took the right
    password away from everyone for 10 minutes. Now it puts the gate on alert: the right
    password still passes, and a new wrong guess waits a whole window."""
    from test_visitors import PASSWORD, client

    for i in range(GLOBAL_FAILURES):
        with client(server["url"], f"127.0.1.{i + 1}") as guesser:
            assert delete(guesser, "guess") == ("error", "Wrong admin password.")
    with client(server["url"], "127.0.2.1") as admin:
        assert delete(admin, PASSWORD) == ("error", "Choose the person to delete.")
    with client(server["url"], "127.0.2.2") as guesser:
        assert delete(guesser, "guess") == ("error", "Wrong admin password.")
        kind, message = delete(guesser, PASSWORD)
    waited = re.search(r"try again in (\d+) s", str(message))
    assert kind == "error" and waited and int(waited[1]) > MAX_CLIENT_DELAY, message
