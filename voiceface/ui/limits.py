"""What one visitor may ask of the server at a time: events in the model queue, and bytes sent.

A visitor is both a session (Gradio's `session_hash`, which a client makes up for free) and
an address (read through the trusted proxies, `voiceface.proxies`), and each is limited: an attacker who makes new sessions
still has one address. Where visitors share an address (a classroom behind one NAT), the app
is told how many (`--visitors-per-address`) and the address's limits grow with it.

- **The model queue** holds at most `QUEUE_SIZE` waiting events, everyone's together; a
  visitor has at most `VISITOR_EVENTS` model events waiting or running (one runs at a time).
  Waiting events are served in turns: a visitor's event goes ahead of the events of anyone
  who already has more of theirs in the queue, so a newcomer waits for at most one other
  visitor's event, not for a flooder's whole share. Events that run no model (reading a
  latent's status, refreshing a list of names) are not counted: they answer in milliseconds.
- **Bytes**: an upload request carries at most `UPLOAD_FILES` files and
  `UPLOAD_REQUEST_BYTES`; an address uploads at most `VISITOR_UPLOAD_BYTES` within one file
  lifetime (what it can keep on the server's disk); any other request's body is at most
  `BODY_BYTES`. Sizes are checked from Content-Length before the body is read and counted
  again while it streams (chunked bodies have no length), so nothing is read to be refused.

Refusals answer at once with the reason in the visitor's language: 429 (this visitor's
limit), 503 (the queue is full) or 413 (too large), with Retry-After where waiting helps.

Gradio 6 has no hook for admission: `VisitorQueue.install` wraps its queue's `push` (the
only code that touches `Blocks._queue`, its waiting lists and its running jobs).
"""

from __future__ import annotations

import asyncio
import collections
import time
import weakref
from typing import Any

import gradio as gr
import pydantic
from fastapi import HTTPException
from gradio.route_utils import MultiPartException, get_fn
from python_multipart.multipart import parse_options_header
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..proxies import TrustedProxies
from .common import MAX_FILE_BYTES, language
from .hardening import send_detail
from .text import TEXT

QUEUE_SIZE = 32  # model events waiting, everyone's together
VISITOR_EVENTS = 3  # model events one visitor (session, address) may have waiting or running
UPLOAD_FILES = 2  # files one upload request may carry (the page sends one)
MULTIPART_SLACK = 64 * 1024  # bytes of multipart headers and boundaries around the files
UPLOAD_REQUEST_BYTES = UPLOAD_FILES * MAX_FILE_BYTES + MULTIPART_SLACK  # bytes per request
VISITOR_UPLOAD_BYTES = 100 * 1024 * 1024  # bytes one address may upload per file lifetime
BODY_BYTES = 1024 * 1024  # bytes of any other request's body (JSON naming files, a password)
RETRY_AFTER = 5  # s a visitor refused for being busy is told to wait
UPLOAD_ROUTES = ("/gradio_api/upload", "/gradio_api/process_recording")  # multipart bodies


def refusal(status: int, key: str, connection: HTTPConnection, retry: bool = True,
            **values: Any) -> HTTPException:
    """An HTTP refusal whose detail is `TEXT[...][key]` in the visitor's language."""
    detail = TEXT[language(connection)][key].format(**values)  # type: ignore[arg-type]
    return HTTPException(status, detail=detail,
                         headers={"Retry-After": str(RETRY_AFTER)} if retry else None)


class VisitorQueue:
    """Admission to the model queue (see the module doc): `install(demo)` once, after
    `demo.queue(...)`."""

    def __init__(self, concurrency_id: str, proxies: TrustedProxies,
                 visitors_per_address: int = 1):
        self.concurrency_id = concurrency_id
        self.proxies = proxies
        self.per_address = visitors_per_address
        self.address_events = VISITOR_EVENTS * visitors_per_address
        self._turns: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()

    def install(self, demo: gr.Blocks) -> None:
        """Check every event `demo`'s queue is asked to take before Gradio takes it."""
        queue, lock = demo._queue, asyncio.Lock()
        push = queue.push

        async def admitted_push(body, request, username):
            async with lock:  # the check and Gradio's append, one visitor at a time
                fn = self._known(demo, body, request)
                if fn is None or fn.concurrency_id != self.concurrency_id:
                    return await push(body=body, request=request, username=username)
                turn = self._admit(queue, body, request)
                result = await push(body=body, request=request, username=username)
                if result[0]:
                    self._take_turn(queue, result[1], turn)
                return result

        queue.push = admitted_push

    @staticmethod
    def _known(demo: gr.Blocks, body, request: HTTPConnection):
        """The event `body` names, if it names one (else Gradio answers), with well-formed
        file inputs; an unknown event number is a 404, a file input that is not a file
        reference a 422, both at once (Gradio would log a traceback for each)."""
        if body.fn_index is None:
            return None
        try:
            fn = get_fn(demo, None, body)
        except KeyError:
            raise refusal(404, "unknown_event", request, retry=False,
                          event=str(body.fn_index)[:20]) from None
        for i, (block, value) in enumerate(zip(fn.inputs, body.data or [])):
            model = getattr(block, "data_model", None)
            if model is None or value is None or i in fn.component_prop_inputs:
                continue
            try:
                model.model_validate(value, context={"validate_meta": True})
            except (pydantic.ValidationError, TypeError, ValueError):
                raise refusal(422, "not_a_file", request, retry=False, position=i + 1) from None
        return fn

    def _flight(self, queue) -> tuple[list, list]:
        """The model events (waiting, running) now."""
        lane = queue.event_queue_per_concurrency_id.get(self.concurrency_id)
        waiting = list(lane.queue) if lane is not None else []
        running = [e for job in queue.active_jobs if job for e in job
                   if e.concurrency_id == self.concurrency_id]
        return waiting, running

    def _admit(self, queue, body, request) -> int:
        """Raise the refusal if the queue or this visitor is full; else the visitor's turn
        (how many model events they already have in flight)."""
        waiting, running = self._flight(queue)
        if len(waiting) >= QUEUE_SIZE:
            raise refusal(503, "queue_full", request, waiting=len(waiting))
        address = self.proxies.address(request)
        flight = waiting + running
        by_session = sum(e.session_hash == body.session_hash for e in flight
                         ) if body.session_hash else 0
        by_address = sum(self.proxies.address(e.request) == address for e in flight)
        if by_session >= VISITOR_EVENTS or by_address >= self.address_events:
            raise refusal(429, "busy_visitor", request, events=max(by_session, by_address))
        return max(by_session, by_address // self.per_address)

    def _take_turn(self, queue, event_id: str, turn: int) -> None:
        """Move the event just appended ahead of every waiting event of a later turn."""
        lane = queue.event_queue_per_concurrency_id[self.concurrency_id].queue
        event = queue.event_ids_to_events.get(event_id)
        if event is None or event not in lane:
            return
        self._turns[event] = turn
        lane.remove(event)
        later = next((i for i, e in enumerate(lane) if self._turns.get(e, 0) > turn), len(lane))
        lane.insert(later, event)


class Refused(MultiPartException):
    """A body over a limit, raised while it streams: Gradio's multipart parser deletes the
    partial files on its own exceptions, so the refusal is one of them."""

    def __init__(self, status: int, key: str, values: dict[str, Any]):
        super().__init__(key)
        self.status, self.key, self.values = status, key, values


class BodyLimits:
    """ASGI middleware: the byte limits of the module doc, for every POST."""

    def __init__(self, app: ASGIApp, file_lifetime: float, proxies: TrustedProxies,
                 visitors_per_address: int = 1):
        self.app = app
        self.proxies = proxies
        self.lifetime = file_lifetime
        self.budget = VISITOR_UPLOAD_BYTES * visitors_per_address
        self._uploads: dict[str, collections.deque[list]] = {}  # address -> [[time, bytes]]

    def _spent(self, address: str) -> int:
        """Bytes `address` uploaded within the last file lifetime (old entries dropped)."""
        entries = self._uploads.get(address)
        if not entries:
            return 0
        while entries and entries[0][0] < time.monotonic() - self.lifetime:
            entries.popleft()
        if not entries:
            del self._uploads[address]
        return sum(n for _, n in entries)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        connection = HTTPConnection(scope)
        upload = scope["path"].rstrip("/") in UPLOAD_ROUTES
        address = self.proxies.address(connection)
        try:
            length = int(connection.headers.get("content-length", "0"))
        except ValueError:
            length = 0  # h11 refuses a malformed length before we are called
        try:
            self._check(upload, length, length, 0, address)
        except Refused as refused:
            return await self._refuse(refused, connection, send)
        entry = [time.monotonic(), 0]
        if upload:
            self._uploads.setdefault(address, collections.deque()).append(entry)
        delimiter = b"--" + self._boundary(connection) if upload else b""
        tail, parts = b"", 0
        stopped: list[Refused] = []

        async def counted() -> Message:
            nonlocal tail, parts
            message = await receive()
            if message["type"] == "http.request":
                chunk = message.get("body", b"")
                entry[1] += len(chunk)
                if delimiter:  # delimiters split between chunks are counted once
                    seen = tail + chunk
                    parts += seen.count(delimiter) - tail.count(delimiter)
                    tail = seen[-len(delimiter):]
                try:
                    self._check(upload, entry[1], 0, parts, address)
                except Refused as refused:
                    stopped.append(refused)
                    raise
            return message

        async def unless_stopped(message: Message) -> None:
            if not stopped:
                await send(message)

        try:
            await self.app(scope, counted, unless_stopped)
        except Exception:  # the refusal, as the route let it through (a JSON body's)
            if not stopped:
                raise
        if stopped:
            entry[1] = 0  # refused: Gradio's parser deleted what it had written
            await self._refuse(stopped[0], connection, send)

    def _check(self, upload: bool, received: int, announced: int, parts: int,
               address: str) -> None:
        """Raise `Refused` if a body of `received` bytes so far (`announced` more to come,
        from its Content-Length) with `parts` multipart delimiters seen is over a limit."""
        limit = UPLOAD_REQUEST_BYTES if upload else BODY_BYTES
        if received > limit:
            raise Refused(413, "upload_too_large" if upload else "body_too_large",
                          {"limit_mb": limit / 2 ** 20})
        if not upload:
            return
        if parts > UPLOAD_FILES + 1:  # one delimiter before each part and one closing
            raise Refused(413, "upload_too_many_files", {"files": UPLOAD_FILES})
        if self._spent(address) + announced > self.budget:
            raise Refused(429, "upload_budget", {"limit_mb": self.budget / 2 ** 20,
                                                 "minutes": self.lifetime / 60})

    @staticmethod
    def _boundary(connection: HTTPConnection) -> bytes:
        """The multipart boundary the request declares (empty if none: Gradio refuses it)."""
        _, options = parse_options_header(connection.headers.get("content-type", ""))
        return options.get(b"boundary", b"") or b"\x00no boundary\x00"

    @staticmethod
    async def _refuse(refused: Refused, connection: HTTPConnection, send: Send) -> None:
        error = refusal(refused.status, refused.key, connection,
                        retry=refused.status == 429, **refused.values)
        await send_detail(send, refused.status, error.detail, [
            (k.lower().encode(), v.encode()) for k, v in (error.headers or {}).items()])
