"""The base of the errors a person's own input can cause (a recording, a photo)."""

from __future__ import annotations


class InputError(ValueError):
    """The input cannot be used; the message says why and what to do, in English. `reason`
    names the problem for interfaces that say it in another language, with the figures of
    the message in `values`; None where no interface words it."""

    def __init__(self, message: str, reason: str | None = None, **values: object):
        super().__init__(message)
        self.reason, self.values = reason, values
