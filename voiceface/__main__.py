"""Entry point of `python -m voiceface`."""

import sys

from .cli import main

sys.exit(main())
