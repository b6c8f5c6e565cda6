"""Crash tests' one tool: kill this process with SIGKILL at the n-th call of chosen functions."""

from __future__ import annotations

import os
import signal
from typing import Callable


class KillAt:
    """`wrap` functions; the `step`-th call among all of them (counted from 1) kills the
    process just before it runs. `count` is how many calls there were (step 0: never kill)."""

    def __init__(self, step: int):
        self.step, self.count = step, 0

    def wrap(self, function: Callable) -> Callable:
        def counted(*args, **kwargs):
            self.count += 1
            if self.count == self.step:
                os.kill(os.getpid(), signal.SIGKILL)
            return function(*args, **kwargs)
        return counted
