"""What every tab shares: the context a tab is built from, the model queue, uploads, the
visitor's language, text made safe to show, and the touches of Gradio's file cache."""

from __future__ import annotations

import contextvars
import logging
import os
import re
import stat
import string
import tempfile
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import gradio as gr
from PIL import Image

from ..enroll import LiveGallery
from ..errors import InputError
from ..pipeline import NotReady, Preparation, VoiceFace
from ..provenance import save_png
from ..startup import Startup
from .text import LIBRARY_ERRORS, TEXT

FACE_HEIGHT = 320  # px of each face on the page
MAX_FILE_BYTES = 20 * 1024 * 1024  # uploads larger than this are refused by the server
MAX_FILE_SIZE = f"{MAX_FILE_BYTES // 1024 // 1024}mb"  # ... said as Gradio reads it (MiB)
MODEL_QUEUE = "models"  # one queue for every event that decodes audio or runs a model ...
CONCURRENCY = 1  # ... computing one request at a time: on 2 CPU cores that is fastest
FILE_LIFETIME = 300  # s an upload or a render stays in Gradio's cache before it is deleted
BROWSER_SAMPLE_RATE = 16_000  # Hz requested from the browser's recorder
PNG_NAME = "voiceface-face.png"  # the downloaded PNG's name

try:  # ZeroGPU Spaces provide `spaces`; everywhere else the work runs where it is
    import spaces

    gpu = spaces.GPU
except ImportError:
    def gpu(fn):
        return fn

i18n = gr.I18n(**TEXT)
log = logging.getLogger("voiceface.app")  # the load test and the queue test read this log
NAMED_BY_REQUEST = contextvars.ContextVar("named_by_request", default=False)  # see own_files
MARKDOWN_SPECIAL = re.compile(f"([{re.escape(string.punctuation)}])")


def phone_galleries(*elem_ids: str) -> str:
    """CSS that turns the galleries with these `elem_id`s, on a phone, from rows of 100 px
    columns at least (scrolled sideways, names cut to one line over the photo) into three
    columns with the whole name below each photo. The selectors name Gradio's gallery markup:
    tests/test_app.py checks at 390 px that no name is cut off."""
    ids = ", ".join(f"#{e}" for e in elem_ids)
    return f"""
@media (max-width: 640px) {{
  :is({ids}), :is({ids}) .grid-wrap {{ height: auto !important; }}
  :is({ids}) .grid-container {{ grid-template-columns: repeat(3, minmax(0, 1fr));
                               grid-template-rows: none; }}
  :is({ids}) .thumbnail-item {{ height: auto; aspect-ratio: auto; display: flex;
                               flex-direction: column; }}
  :is({ids}) .thumbnail-item > img {{ height: auto; aspect-ratio: 1; }}
  :is({ids}) .caption-label {{ position: static; max-width: none; white-space: normal;
                              overflow-wrap: anywhere; border: 0; border-radius: 0; }}
}}"""


def plain(text: str) -> str:
    """`text` (a person's name, anything a visitor chose) shown literally inside Markdown:
    every ASCII punctuation mark is backslash-escaped, so no link, image, HTML tag or
    autolinked address can form, whatever the name holds."""
    return MARKDOWN_SPECIAL.sub(r"\\\1", text)


def public(err: Exception, request: gr.Request | None) -> str:
    """An error's message fit for the visitor who sent `request`: in their language when the
    library names the error's reason and the interface words it (LIBRARY_ERRORS), or when
    the pipeline is not ready (how far its preparation is), else the library's English; any
    absolute path in it is cut to its file name (the library's messages name files; the
    server's directories are nobody's business)."""
    lang = language(request)
    words = LIBRARY_ERRORS.get(lang, {})
    if isinstance(err, NotReady):
        return not_ready(err.preparation, TEXT[lang])
    if isinstance(err, InputError) and err.reason in words:
        return words[err.reason].format(**err.values)  # no paths in them
    return no_paths(str(err))


def no_paths(message: str) -> str:
    """`message` with every absolute path in it cut to its file name."""
    return re.sub(r"(?:/[^\s/'\"]+)+/([^\s/'\"]+)", r"\1", message)


def preparing(preparation: Preparation, text: dict[str, str]) -> str:
    """How far the pipeline's preparation is (or why it failed), in the language of `text`."""
    stage, done, total, error = preparation.progress()
    if error is not None:
        return text["preparing_failed"].format(error=no_paths(error))
    return text[f"preparing_{stage}"].format(done=done, total=total)


def not_ready(preparation: Preparation, text: dict[str, str]) -> str:
    """What a request that needs the gallery is answered before it is ready: how far its
    preparation is and, unless it failed, to try again shortly."""
    said = preparing(preparation, text)
    return said if preparation.error is not None else f"{said} {text['preparing_retry']}"


def language(request: gr.Request | None) -> str:
    """"ja" when the browser prefers Japanese, else "en" (for text built per request)."""
    header = (request.headers.get("accept-language", "") if request is not None else "")
    first = header.split(",")[0].strip().lower()
    return "ja" if first.startswith("ja") else "en"


def read_upload(path: str | dict | None, missing: str, gone: str) -> bytes:
    """The bytes of an upload a request names (a path, or a file reference as an event
    without preprocessing receives it), if it is one: a regular file inside Gradio's
    upload folder, no larger than an upload may be. Anything else (a file elsewhere on the
    server, a device, a pipe, a directory) is refused with the `gone` message, which says
    nothing about what the path holds. Gradio checks a file reference only when it carries
    its FileData marker; an image reference without one reaches the handler unchecked, so
    the check is made here, for every input.

    Nothing is deleted here: Gradio stores uploads by content (two visitors who send the same
    bytes share one file) and a request may name any file the app serves, so deleting what a
    request names would let one visitor destroy another's files. Gradio's cache cleaning
    deletes uploads `FILE_LIFETIME` s after upload."""
    if isinstance(path, dict):
        path = path.get("path")
    if not path:
        raise gr.Error(missing, print_exception=False)
    refused = gr.Error(gone, print_exception=False)
    try:
        file = Path(path).resolve(strict=True)
        info = file.stat()
    except (OSError, RuntimeError, TypeError, ValueError):  # missing, a loop, not a path
        raise refused from None
    if (not file.is_relative_to(Path(upload_folder()).resolve())
            or not stat.S_ISREG(info.st_mode) or info.st_size > MAX_FILE_BYTES):
        raise refused
    try:
        return file.read_bytes()
    except OSError:  # cleaned away meanwhile, unreadable
        raise refused from None


def upload_folder() -> str:
    """Where Gradio keeps uploads and the files it serves ($GRADIO_TEMP_DIR, else its folder
    in the system's temporary directory), as Gradio itself computes it."""
    return gr.utils.get_upload_folder()


class ModelCalls:
    """Counts the model calls in flight. The shared queue makes overlap impossible; if it ever
    happens (a misconfigured event) it is logged as an error, which the load test watches."""

    def __init__(self):
        self._lock = threading.Lock()
        self.running = 0

    @contextmanager
    def __call__(self):
        with self._lock:
            self.running += 1
            if self.running > 1:
                log.error("%d model calls overlap: an event is outside the shared queue",
                          self.running)
        try:
            yield
        finally:
            with self._lock:
                self.running -= 1


# Gradio's file cache. Gradio 6 has no public way to spare a file from its cache cleaning
# (`delete_cache`), to keep the cleaning to the files the app made, to delete a served copy
# before the cleaning does (`gr.set_static_paths` avoids copying at all, but for every app in
# the process) or to serve a file named inside HTML: these functions are the only code that
# touches its internals (`Block.keep_in_cache`, `Blocks.temp_file_sets`,
# `Blocks.preprocess_data`, `Block.move_resource_to_block_cache` and its async twin).

def own_files(demo: gr.Blocks) -> None:
    """Make the cache cleaning delete only files the app made: the uploads its upload route
    received, its renders and its copies. Gradio hands every file a request names to the
    input component's `move_resource_to_block_cache`, which, for a file already in the upload
    folder, adds it to the files the cleaning deletes: a file that someone else wrote there
    would be deleted once a request named it. Here, while Gradio reads a request's inputs
    (`preprocess_data`), a file already in the upload folder is handed over as it is and
    added to nothing (an upload the route received is already in the route's set); a file
    from elsewhere is copied as before, and the copy, which the app made, is deleted in time.
    Call once, after every component is built."""
    read_inputs = demo.preprocess_data

    async def preprocess_data(*args, **kwargs):
        named = NAMED_BY_REQUEST.set(True)
        try:
            return await read_inputs(*args, **kwargs)
        finally:
            NAMED_BY_REQUEST.reset(named)

    demo.preprocess_data = preprocess_data
    for block in demo.blocks.values():
        if isinstance(block, gr.components.Component):
            _spare_named_files(block)


def _spare_named_files(block: gr.components.Component) -> None:
    """Wrap `block`'s two cache methods as `own_files` says."""
    move = block.move_resource_to_block_cache
    move_async = block.async_move_resource_to_block_cache

    def named(path: str | Path | None) -> str | None:
        """The file's path when a request names it inside the upload folder, else None."""
        if not NAMED_BY_REQUEST.get() or path is None or str(path).startswith(
                ("http://", "https://")):
            return None
        full = os.path.abspath(path)
        return full if gr.utils.is_in_or_equal(full, block.GRADIO_CACHE) else None

    def move_resource_to_block_cache(path: str | Path | None) -> str | None:
        return named(path) or move(path)

    async def async_move_resource_to_block_cache(path: str | Path | None) -> str | None:
        return named(path) or await move_async(path)

    block.move_resource_to_block_cache = move_resource_to_block_cache
    block.async_move_resource_to_block_cache = async_move_resource_to_block_cache


def keep_example_copies(audio: gr.Audio, examples: gr.Examples) -> None:
    """Spare from the cache cleaning the copies of `examples` that Gradio made once, when the
    app was built, and hands out on every click (the cleaning spares what a rendered
    component lists in `keep_in_cache`)."""
    audio.keep_in_cache.update(value["path"] for example in
                               examples.non_none_processed_examples.values()
                               for value in example if isinstance(value, dict))  # files


def forget_copies(demo: gr.Blocks, names: set[str]) -> None:
    """Delete the copies of the files called `names` that Gradio made in its cache to serve
    them (a deleted person's photos)."""
    for files in demo.temp_file_sets:
        for copy in [f for f in list(files) if Path(f).name in names]:
            Path(copy).unlink(missing_ok=True)
            files.discard(copy)


def served_url(block: gr.components.Component, path: str | Path) -> str:
    """A URL, relative to the page, of a copy of the file at `path` in Gradio's cache, made
    for `block` now (or made before and touched now): like every render, it is deleted by the
    cache cleaning `FILE_LIFETIME` s after the last answer that named it."""
    return f"gradio_api/file={quote(block.move_resource_to_block_cache(path))}"


def person_choices(vf: VoiceFace) -> list[tuple[str, str]]:
    """The enrolled people as dropdown choices: ("Name (id)", id); none before the gallery is
    ready."""
    return [(f"{p.name} ({p.id})", p.id) for p in vf.gallery.people] if vf.ready else []


def refreshed_people(vf: VoiceFace) -> gr.Dropdown:
    """An update of a dropdown of people (live enrollment changes the gallery) with the
    choices only: the update can land after the visitor has chosen (a busy server), and a
    value sent with it would undo their choice."""
    return gr.Dropdown(choices=person_choices(vf))


def png_copy(block: gr.components.Component, image: Image.Image) -> str:
    """The path of a PNG of generated `image` (with its provenance text chunks) in Gradio's
    cache, made for `block`: like every render, deleted by the cache cleaning; nothing is
    left outside the cache."""
    with tempfile.TemporaryDirectory(prefix="voiceface-") as tmp:
        path = Path(tmp) / PNG_NAME
        save_png(image, path)
        return block.move_resource_to_block_cache(path)


@dataclass(frozen=True)
class Context:
    """What a tab is built from. A tab module exposes `tab(ctx, ...)`, called inside its
    `gr.Tab`, which lays out its components and wires its events; text built per request comes
    from `text(request)`, in the visitor's language. The page may be served before the
    `startup` is ready: the pipeline's `state` then raises NotReady (which `public` words)."""

    demo: gr.Blocks
    startup: Startup
    model_call: ModelCalls = field(default_factory=ModelCalls)  # wraps every model call

    @property
    def vf(self) -> VoiceFace:
        """The pipeline."""
        return self.startup.vf

    @property
    def live(self) -> LiveGallery | None:
        """The enrollable gallery, once opened (None before, or when the app has none)."""
        return self.startup.live

    def opened_live(self, request: gr.Request | None) -> LiveGallery:
        """The enrollable gallery; before it is opened, a gr.Error saying how far the start
        is."""
        if self.startup.live is None:
            raise gr.Error(not_ready(self.vf.preparation, self.text(request)),
                           print_exception=False)
        return self.startup.live

    @staticmethod
    def text(request: gr.Request | None) -> dict[str, str]:
        """The interface text in the language of the visitor who sent `request`."""
        return TEXT[language(request)]

    @property
    def queue(self) -> dict[str, Any]:
        """Keyword arguments that put an event in the one queue of model work."""
        return {"concurrency_id": MODEL_QUEUE, "concurrency_limit": CONCURRENCY}
