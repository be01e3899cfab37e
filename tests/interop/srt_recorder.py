"""The SRT listener alone, writing each publisher's payloads to DIR/PATH.ts.

``python -m tests.interop.srt_recorder CONFIG DIR`` serves ``[srt]`` of the TOML file
CONFIG with the real gate and server, prints ``ready srt_port=N`` once it listens, and
writes ``DIR/<path with / as _>.ts`` per publisher (``.done`` appended when it closed).
The interop tests run it (also inside network namespaces) to compare what arrived with
what the encoder sent, byte for byte.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from pathlib import Path

from onvifcam import config
from onvifcam.auth.gate import Gate
from onvifcam.media.stream import Publisher
from onvifcam.srt.ingest import PayloadSink
from onvifcam.srt.server import SrtServer


class FileSink:
    """Appends payloads to a file; renames it to ``.ts.done`` when the caller leaves."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.f = open(path, "wb")

    def feed(self, payloads: list[bytes]) -> None:
        self.f.write(b"".join(payloads))
        self.f.flush()

    def close(self, reason: str) -> None:
        self.f.close()
        self.path.rename(self.path.with_suffix(".ts.done"))
        print(f"closed {self.path.name} {reason}", flush=True)


async def main(cfg_path: str, out: str) -> None:
    cfg = config.load(cfg_path)
    directory = Path(out)
    n = 0

    def sink(path: str, publisher: Publisher) -> PayloadSink:
        nonlocal n
        n += 1
        return FileSink(directory / f"{path.replace('/', '_')}.{n}.ts")

    server = SrtServer(cfg, Gate(cfg), sink)
    await server.start()
    print(f"ready srt_port={server.port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    await stop.wait()
    await server.stop()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(name)s %(levelname)s %(message)s")
    asyncio.run(main(sys.argv[1], sys.argv[2]))
