"""Connection admission shared by the RTSP and RTMP servers: a cap and a per-IP rate limit."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class ConnectionLimiter:
    """Caps concurrent connections and the rate of new connections per source IP.

    The rate limit is a token bucket per IP: ``rate`` new connections per second with bursts
    of ``burst``. Buckets that refilled completely are forgotten so memory stays bounded.
    """

    max_connections: int
    rate: float
    burst: int
    active: int = 0
    refused: int = 0
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)

    def admit(self, ip: str, now: float | None = None) -> str | None:
        """Count a new connection from ``ip``; None if admitted, else the reason it is not."""
        if self.active >= self.max_connections:
            self.refused += 1
            return f"too many connections (max {self.max_connections})"
        if self.rate > 0:
            t = time.monotonic() if now is None else now
            tokens, last = self._buckets.get(ip, (float(self.burst), t))
            tokens = min(float(self.burst), tokens + (t - last) * self.rate)
            if tokens < 1.0:
                self._buckets[ip] = (tokens, t)
                self.refused += 1
                return f"too many new connections from {ip} (max {self.rate:g}/s)"
            self._buckets[ip] = (tokens - 1.0, t)
            if len(self._buckets) > 4096:
                self._forget(t)
        self.active += 1
        return None

    def release(self) -> None:
        """A connection admitted earlier has closed."""
        self.active = max(0, self.active - 1)

    def _forget(self, now: float) -> None:
        full = [
            ip
            for ip, (tokens, last) in self._buckets.items()
            if tokens + (now - last) * self.rate >= self.burst
        ]
        for ip in full:
            del self._buckets[ip]
