"""The daemon's one record of stopping, read by everything that must end in time.

Two moments: the first signal, when pulls end at once and none starts, and OVEMBED_SHUTDOWN_TIMEOUT later the
bound, when embeddings and reranks still running are ended with an answer and none starts. Plain flags, set on
the event loop and read there and by pull threads between two chunks.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Shutdown:
    begun: bool = False  # a signal came: pulls end
    bound_passed: bool = False  # the requests still running are ended, with Stopping
