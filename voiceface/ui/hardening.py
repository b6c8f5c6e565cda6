"""HTTP hygiene around Gradio: response headers, unknown event names, repeated tracebacks.

- Every response says `X-Content-Type-Options: nosniff`, so a browser never guesses HTML in
  an upload served as an image. A served file (`/gradio_api/file=...`) that is not an image
  or audio the page shows is sent as an attachment, and such a response carries only the
  headers a file needs (Gradio copies a Range request's headers into its answer).
- A call to an event name the app does not have answers 404 with a short message (Gradio
  answers 500 and logs a 5 KB traceback).
- While the start is not ready (`voiceface.startup`: the gallery is still being prepared),
  a program's call of an event in the model queue answers 503 at once with how far it is
  and a `Retry-After` (none once the preparation failed: that needs a restart); the page's
  own calls go through the queue and are answered by the handlers, in words.
- `QuietRepeats` logs a traceback once per kind within `REPEAT_WINDOW`; repeats become one
  line, so a flood of malformed requests cannot flood the log.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterable

from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..startup import Startup
from .common import MODEL_QUEUE, language, not_ready
from .text import TEXT

NOSNIFF = (b"x-content-type-options", b"nosniff")
SHOWN_TYPES = re.compile(rb"(image/(jpeg|png|webp)|audio/[\w.+-]+)(;.*)?")  # inline on the page
FILE_ROUTE = "/gradio_api/file="
FILE_HEADERS = {b"content-type", b"content-length", b"content-range", b"accept-ranges",
                b"content-disposition", b"last-modified", b"etag", b"date", b"server",
                b"cache-control", b"vary"}  # what a served file's answer may carry
EVENT_ROUTE = re.compile(r"/gradio_api/(?:call/v2|call|run|api)/([^/]+)/?")  # POST by name
REPEAT_WINDOW = 600.0  # s within which a traceback of one kind is logged once
LOGGERS = ("uvicorn.error",)  # where a request's unhandled exception is logged
RETRY_AFTER = 30  # s a program is asked to wait while the gallery is being prepared


class SafeResponses:
    """ASGI middleware: the headers and the 404 of the module doc."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        served = path.startswith(FILE_ROUTE)
        named = EVENT_ROUTE.fullmatch(path) if scope["method"] == "POST" else None
        if named and named[1] not in self._event_names(scope):
            return await self._unknown(scope, named[1], send)

        async def safe(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k.lower(), v) for k, v in message.get("headers", [])]
                if served:
                    headers = self._file_headers(headers)
                message = {**message, "headers": [h for h in headers if h[0] != NOSNIFF[0]]
                           + [NOSNIFF]}
            await send(message)

        await self.app(scope, receive, safe)

    @staticmethod
    def _event_names(scope: Scope) -> set[str]:
        return {fn.api_name for fn in scope["app"].get_blocks().fns.values()
                if isinstance(fn.api_name, str)}

    @staticmethod
    def _file_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        """A served file's headers: the file's own only; an attachment unless the page shows
        its type."""
        kept = [(k, v) for k, v in headers if k in FILE_HEADERS]
        kind = dict(kept).get(b"content-type", b"")
        if SHOWN_TYPES.fullmatch(kind):
            return kept
        disposition = dict(kept).get(b"content-disposition", b"")
        name = re.search(rb"filename\*?=.*", disposition)
        attachment = b"attachment" + (b"; " + name[0] if name else b"")
        return [(k, v) for k, v in kept if k != b"content-disposition"] + [
            (b"content-disposition", attachment)]

    @staticmethod
    async def _unknown(scope: Scope, name: str, send: Send) -> None:
        connection = HTTPConnection(scope)
        detail = TEXT[language(connection)]["unknown_event"].format(  # type: ignore[arg-type]
            event=name[:40])
        await send_detail(send, 404, detail, [NOSNIFF])


class Preparing:
    """ASGI middleware: the 503 of the module doc, while `startup` is not ready."""

    def __init__(self, app: ASGIApp, startup: Startup):
        self.app = app
        self.startup = startup

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        named = EVENT_ROUTE.fullmatch(scope["path"]) if scope["type"] == "http" and \
            scope["method"] == "POST" and not self.startup.ready else None
        if named is None or named[1] not in self._model_events(scope):
            return await self.app(scope, receive, send)
        preparation = self.startup.vf.preparation
        lang = language(HTTPConnection(scope))  # type: ignore[arg-type]
        detail = not_ready(preparation, TEXT[lang])
        retry = [] if preparation.error else [(b"retry-after", str(RETRY_AFTER).encode())]
        await send_detail(send, 503, detail, retry)  # nosniff: SafeResponses adds it

    @staticmethod
    def _model_events(scope: Scope) -> set[str]:
        return {fn.api_name for fn in scope["app"].get_blocks().fns.values()
                if isinstance(fn.api_name, str) and fn.concurrency_id == MODEL_QUEUE}


async def send_detail(send: Send, status: int, detail: str,
                      headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
    """Answer a request from ASGI middleware with `{"detail": detail}`, as FastAPI answers an
    HTTPException, closing the connection (the request's body is not read)."""
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"), *headers]})
    await send({"type": "http.response.body", "body": body})


class QuietRepeats(logging.Filter):
    """Log a traceback of one kind (exception type and where it was raised) once per
    `REPEAT_WINDOW`; a repeat becomes one line saying what it was."""

    def __init__(self):
        super().__init__()
        self._last: dict[tuple, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.exc_info or record.exc_info[1] is None:
            return True
        err = record.exc_info[1]
        tb = err.__traceback__
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        where = (tb.tb_frame.f_code.co_filename, tb.tb_lineno) if tb else ("", 0)
        kind = (type(err).__name__, *where)
        now = time.monotonic()
        if now - self._last.get(kind, -REPEAT_WINDOW) >= REPEAT_WINDOW:
            self._last[kind] = now
            return True
        record.msg = (f"{record.getMessage().rstrip()} ({type(err).__name__}: {str(err)[:200]}; "
                      f"traceback as logged before)")
        record.args, record.exc_info, record.exc_text = (), None, None
        return True


def quiet_repeated_tracebacks() -> None:
    """Install `QuietRepeats` on the loggers where requests' exceptions land (once)."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, QuietRepeats) for f in logger.filters):
            logger.addFilter(QuietRepeats())
