"""voiceface: from a voice to the nearest enrolled person and a generated face.

Importing this package does no work: no downloads, no model loading, no CUDA calls.
"""

__version__ = "0.1.0"
