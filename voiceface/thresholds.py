"""The records of how a gallery's two thresholds were measured, kept beside the gallery and
saved in its manifest.

`Calibration` is the open-set (1:N) threshold's record, set by `voiceface.calibration`;
`VerificationCalibration` the 1:1 verification threshold's, set by `voiceface.verification`.
`Calibrations` holds both for one gallery and says when one no longer applies: the open-set
record when the gallery's threshold was set by hand since, the verification record when the
people searched changed since (`Gallery.revision`). Only records live here, so that a gallery
directory (`voiceface.enrolled`) saves and loads them without importing the code that
measures them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Generic, Protocol, TypeVar

from .metrics import COUNT_TOLERANCE

FALSE_ALARM_RATE = 0.01  # default target: 1 % of unenrolled voices get a "confident" match


@dataclass(frozen=True)
class Calibration:
    """How a gallery's threshold was set: on `trials` non-mated trials at a target false-alarm
    rate `far_target`, accepting `accepted` of them (`far_achieved` = accepted / trials)."""

    threshold: float
    far_target: float
    far_achieved: float
    trials: int
    accepted: int
    date: str  # UTC, ISO 8601
    encoder_fingerprint: str
    method: str

    @property
    def enough_trials(self) -> bool:
        """False when the trials are too few to measure `far_target` (it is below 1/trials)."""
        return self.far_target * self.trials + COUNT_TOLERANCE >= 1

    def describe(self) -> str:
        """One line for people: the threshold, what it accepted, and how it was measured."""
        line = (f"threshold {self.threshold:.4f}: accepts {self.accepted} of {self.trials} "
                f"non-mated trials ({self.far_achieved:.1%}; target {self.far_target:.1%})")
        if not self.enough_trials:
            line += (f"; {self.trials} trials cannot measure {self.far_target:.1%} (the finest "
                     f"rate is {1 / self.trials:.1%}), so none is accepted")
        return f"{line}; {self.method}; {self.date}"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Calibration:
        return cls(**data)


@dataclass(frozen=True)
class VerificationCalibration:
    """How a gallery's verification threshold was set: on `non_mated_trials` trials at a
    target false-accept rate `far_target`, accepting `false_accepts` of them, and rejecting
    `false_rejects` of `mated_trials` mated trials (none measured: `frr` is None)."""

    threshold: float
    score: str  # "as-norm" or "raw-cosine" (`voiceface.verification`): what the threshold applies to
    top_k: int  # COHORT_TOP_K when measured
    far_target: float
    far_achieved: float
    non_mated_trials: int
    false_accepts: int
    mated_trials: int
    false_rejects: int
    people: int  # enrolled when measured
    date: str  # UTC, ISO 8601
    encoder_fingerprint: str
    method: str

    @property
    def frr(self) -> float | None:
        """The share of mated trials rejected; None when there were none."""
        return self.false_rejects / self.mated_trials if self.mated_trials else None

    @property
    def enough_trials(self) -> bool:
        """False when the non-mated trials are too few to measure `far_target`."""
        return self.far_target * self.non_mated_trials + COUNT_TOLERANCE >= 1

    def describe(self) -> str:
        """One line for people: the threshold, its error rates and how they were measured."""
        line = (f"verification threshold {self.threshold:.4f} ({self.score}): accepts "
                f"{self.false_accepts} of {self.non_mated_trials} non-mated trials "
                f"({self.far_achieved:.1%}; target {self.far_target:.1%})")
        if not self.enough_trials:
            line += (f", too few to measure {self.far_target:.1%} (the finest rate is "
                     f"{1 / self.non_mated_trials:.1%}), so none is accepted")
        line += (f"; rejects {self.false_rejects} of {self.mated_trials} mated trials "
                 f"({self.frr:.1%})" if self.mated_trials else "; no mated trials: FRR unmeasured")
        return f"{line}; {self.people} people; {self.method}; {self.date}"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> VerificationCalibration:
        return cls(**data)


class Thresholded(Protocol):
    """What the records are checked against: a `voiceface.gallery.Gallery` (not imported, so
    that the records sit below the gallery and the bundle spec can name their defaults)."""

    threshold: float  # the open-set threshold in use
    revision: int  # counts changes of who is searched


G = TypeVar("G", bound=Thresholded)


class Calibrations(Generic[G]):
    """How `gallery`'s thresholds were measured: `open_set` (its `threshold`'s record) and
    `verification` (the 1:1 threshold's), each None when unmeasured or no longer applying."""

    def __init__(self, gallery: G):
        self.gallery = gallery
        self._open_set: Calibration | None = None
        # the verification record and the gallery's revision it was measured at
        self._verification: tuple[VerificationCalibration, int] | None = None

    @property
    def open_set(self) -> Calibration | None:
        """How the gallery's threshold was measured (`voiceface.calibration`); None when it
        was not: the default, or set by hand since."""
        c = self._open_set
        return c if c is not None and c.threshold == self.gallery.threshold else None

    def calibrate(self, calibration: Calibration | None) -> None:
        """Give the gallery a measured threshold, recording how it was measured; None forgets
        the record (the threshold stays)."""
        self._open_set = calibration
        if calibration is not None:
            self.gallery.threshold = calibration.threshold

    @property
    def verification(self) -> VerificationCalibration | None:
        """The verification threshold's record (`voiceface.verification`); None when
        unmeasured, or measured before the people searched changed (recalibrate)."""
        v = self._verification
        return v[0] if v is not None and v[1] == self.gallery.revision else None

    @verification.setter
    def verification(self, record: VerificationCalibration | None) -> None:
        self._verification = None if record is None else (record, self.gallery.revision)
