"""What an SRT publisher's payloads turn into.

The SRT server hands the payloads of each connection, in order, to a :class:`PayloadSink`
made by a :data:`SinkFactory` when the caller is admitted. Callers send MPEG-TS, so the
sink the application uses demuxes TS into access units and feeds the packetizer and the
stream; tests use sinks that record the bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from onvifcam.media.stream import Publisher

__all__ = ["PayloadSink", "SinkFactory"]


class PayloadSink(Protocol):
    """Receives one connection's payloads."""

    def feed(self, payloads: list[bytes]) -> None:
        """Payloads delivered since the last call, in sequence order."""
        ...

    def close(self, reason: str) -> None:
        """The connection ended (the sink unpublishes what it published)."""
        ...


SinkFactory = Callable[[str, Publisher], PayloadSink]
"""(path, publisher) -> the sink of a newly admitted caller; may raise ``StreamError`` to
refuse it (e.g. too many streams)."""
