"""What the app does between loading the models and being fully ready, in one place: the
pipeline's caches (`VoiceFace.prepare`: minutes for the 48 personas with full-size models),
the live gallery over them (`voiceface.enroll.LiveGallery.open`), then the precision check
(`voiceface.precision.settle`), in that order.

    startup = Startup(vf, gallery_dir, inversion=..., precision="auto")
    startup.run()        # blocking (a built bundle: ready at once, as before)
    startup.start()      # or in a background thread, while the page is already served

Until it is `ready`, requests that need the gallery are answered with how far it is
(`vf.preparation`); a failure is logged and recorded there, for the page to say.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from .enroll import LiveGallery
from .invert import InversionConfig
from .pipeline import VoiceFace
from .precision import PrecisionDecision, settle

log = logging.getLogger(__name__)


class Startup:
    """The rest of a start after the models are loaded: see the module doc. `gallery_dir`
    (None: read-only) is where the live gallery is kept, `inversion` its photo -> latent
    settings, `precision` what `settle` is asked for."""

    def __init__(self, vf: VoiceFace, gallery_dir: str | Path | None = None, *,
                 inversion: InversionConfig | None = None, precision: str = "auto"):
        self.vf = vf
        self.gallery_dir = None if gallery_dir is None else Path(gallery_dir)
        self.inversion = inversion
        self.precision = precision
        self.live: LiveGallery | None = None  # once opened
        self.decision: PrecisionDecision | None = None  # once checked
        self.precision_error: str | None = None  # the check failed: fp32 stays
        self._hooks: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        self._ran = False

    @property
    def ready(self) -> bool:
        """The gallery (and the live gallery, if any) can answer; the precision check may
        still be running."""
        return self.vf.ready and (
            self.gallery_dir is None or self.live is not None)

    def when_ready(self, hook: Callable[[], None]) -> None:
        """Call `hook()` once `ready` (at once if it is), before the precision check."""
        with self._lock:
            if not self._ran:
                self._hooks.append(hook)
                return
        hook()

    def run(self) -> None:
        """Prepare the caches, open the live gallery, call the `when_ready` hooks, check the
        precision. A failure of the first two is recorded in `vf.preparation` and raised; of
        the precision check, logged and kept in `precision_error` (queries stay in fp32)."""
        try:
            bundle = None
            if not self.vf.ready:
                # with a live gallery, nobody is answered from the bundle's people (some may
                # have been deleted from it) before it is open
                bundle = self.vf.prepare(serve=self.gallery_dir is None)
            if self.gallery_dir is not None:
                self.live = LiveGallery.open(self.vf, self.gallery_dir, bundle=bundle,
                                             inversion=self.inversion)
        except Exception as err:
            if self.vf.preparation.error is None:
                self.vf.preparation.fail(str(err) or type(err).__name__)
            raise
        with self._lock:
            self._ran, hooks = True, self._hooks
        for hook in hooks:
            hook()
        try:
            self.decision = settle(self.vf, self.precision)
        except Exception as err:
            self.precision_error = str(err) or type(err).__name__
            log.exception("The precision check failed; visitors' voices stay in fp32")

    def start(self) -> threading.Thread:
        """`run` in a daemon thread; its failure is logged (and shown by the page)."""
        def run() -> None:
            try:
                self.run()
            except Exception:
                log.exception("Preparing the gallery failed; the page says so. Fix the cause "
                              "and restart the app")

        thread = threading.Thread(target=run, name="voiceface-startup", daemon=True)
        thread.start()
        return thread
