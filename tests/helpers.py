"""Test helpers: run onvifcam as a real process, drive real ffmpeg/GStreamer peers."""

from __future__ import annotations

import contextlib
import ctypes
import http.client
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# `onvifcam serve` flags for loopback and a free port on every listener. A test puts its own
# flags after these (the last one wins), so a server meant to fail at one listener never
# binds another default port (8554, 1935, 8080, 8890, 3702...) that a server on another
# xdist worker may hold at that moment.
SERVE_PORTS_ZERO = [
    "--host", "127.0.0.1", "--rtsp-port", "0", "--rtp-port", "0", "--rtmp-port", "0",
    "--rtmps-port", "0", "--http-port", "0", "--onvif-ports", "0", "--discovery-port", "0",
    "--srt-port", "0",
]  # fmt: skip
FFMPEG = "ffmpeg"
FFPROBE = "ffprobe"
GST_LAUNCH = "gst-launch-1.0"


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the test process dies, so no server is orphaned."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _open_onvif(text: str) -> str:
    """Add ``auth = false`` to the [onvif] table unless it sets auth or username."""
    m = re.search(r"^\[onvif\][ \t]*$", text, re.M)
    if m is None:
        return text
    end = re.search(r"^\s*\[", text[m.end() :], re.M)
    body = text[m.end() : m.end() + end.start()] if end else text[m.end() :]
    if re.search(r"^\s*(auth|username)\s*=", body, re.M):
        return text
    return text[: m.end()] + "\nauth = false" + text[m.end() :]


# Ports a test chooses itself (for a config that must name them before the server starts)
# come from a block per pytest-xdist worker below the kernel's ephemeral range (32768 and
# up on Linux), so neither another worker nor an outgoing connection of any test takes one
# between the check and the server's bind. Each block is walked from an offset drawn per
# process, so that concurrent pytest runs on one machine rarely meet either. Servers that
# need no fixed port bind port 0 and report it in their ready line instead.
_PORT_BASE = 20000
_PORT_BLOCK = 1500  # 8 workers fit below 32000


def _worker_index() -> int:
    """0 for gw0 (or no xdist), 1 for gw1, ..."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    return int(worker[2:]) if worker[2:].isdigit() else 0


_next_port = _PORT_BASE + _PORT_BLOCK * (_worker_index() % 8) + random.randrange(_PORT_BLOCK)


def _bindable(port: int, kinds: tuple[int, ...]) -> bool:
    for kind in kinds:
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def free_ports(count: int = 1, *, udp: bool = False, even: bool = False) -> int:
    """The first of ``count`` consecutive ports on 127.0.0.1 that are free for TCP (and,
    with ``udp``, for UDP too) right now, from this worker's block; ``even``: the first
    is even (an RTP/RTCP pair)."""
    global _next_port
    kinds = (socket.SOCK_STREAM, socket.SOCK_DGRAM) if udp else (socket.SOCK_STREAM,)
    start = _PORT_BASE + _PORT_BLOCK * (_worker_index() % 8)
    for _ in range(_PORT_BLOCK):
        if _next_port + count + 1 > start + _PORT_BLOCK:
            _next_port = start
        first = _next_port + (_next_port & 1 if even else 0)
        _next_port = first + count
        if all(_bindable(p, kinds) for p in range(first, first + count)):
            return first
    raise AssertionError(f"no {count} free ports in {start}..{start + _PORT_BLOCK - 1}")


def free_port() -> int:
    """A TCP port that is free right now on 127.0.0.1 (see :func:`free_ports`)."""
    return free_ports(1)


def av_clip(path: Path, seconds: int = 2) -> Path:
    """A 320x240 25 fps H.264 clip with B-frames and AAC at ``path`` (written by ffmpeg)."""
    subprocess.run(
        [
            FFMPEG, "-hide_banner", "-loglevel", "error", "-f", "lavfi",
            "-i", "testsrc2=size=320x240:rate=25", "-f", "lavfi",
            "-i", "sine=frequency=440:sample_rate=48000", "-t", str(seconds),
            "-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-bf", "2",
            "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "64k", str(path),
        ],
        check=True,
        timeout=60,
    )  # fmt: skip
    return path


@dataclass
class ServerProc:
    """An ``onvifcam serve`` process with its chosen ports and captured log."""

    config: str = ""
    extra_args: list[str] = field(default_factory=list)
    netns: str = ""
    proc: subprocess.Popen[str] | None = None
    ports: dict[str, int] = field(default_factory=dict)
    log_path: str = ""
    # False: add [onvif] auth = false unless the config sets [onvif] auth or username, so
    # cameras without credentials stay open as most tests expect; True: the shipped default
    # (a generated admin password, printed as onvif_user=/onvif_password= in the ready line).
    onvif_auth: bool = False
    state_dir: str = ""  # default: a fresh directory per start
    _tmp: tempfile.TemporaryDirectory[str] | None = None
    # For failure reports (tests/conftest.py): when it ran, and the end of its log, kept
    # when stop() removes the temporary directory.
    started_at: float = field(default=0.0, repr=False)
    stopped_at: float | None = field(default=None, repr=False)
    _kept: bytes = field(default=b"", repr=False)
    _kept_from: int = field(default=0, repr=False)

    def start(self, timeout: float = 20.0) -> ServerProc:
        """Start the server and wait for its ready line."""
        self._tmp = tempfile.TemporaryDirectory(prefix="onvifcam-test-")
        cfg_path = Path(self._tmp.name) / "config.toml"
        state = Path(self.state_dir or Path(self._tmp.name) / "state")
        text = self.config
        if "[server]" not in text:
            text = (
                '[server]\nhost = "127.0.0.1"\nrtsp_port = 0\nrtmp_port = 0\nrtmps_port = 0\n'
                "http_port = 0\n" + text
            )
        if "[onvif]" not in text:
            text += "\n[onvif]\nport_range_start = 0\nport_range_end = 0\n"
        if not self.onvif_auth:
            text = _open_onvif(text)
        if "rtp_port" not in text:
            text += "\n[rtsp]\nrtp_port = 0\n" if "[rtsp]" not in text else ""
        if "[srt]" not in text:
            text += "\n[srt]\nport = 0\n"
        cfg_path.write_text(text)
        self.log_path = str(Path(self._tmp.name) / "server.log")
        cmd = [
            sys.executable,
            "-m",
            "onvifcam",
            "serve",
            "--config",
            str(cfg_path),
            "--state-dir",
            str(state),
            "--log-level",
            "debug",
            *self.extra_args,
        ]
        if self.netns:
            cmd = ["ip", "netns", "exec", self.netns, *cmd]
        logf = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            cmd,
            preexec_fn=_die_with_parent,
            stdout=subprocess.PIPE,
            stderr=logf,
            text=True,
            cwd=str(ROOT),
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self._logf = logf
        self.started_at = time.monotonic()
        STARTED.append(self)
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        line = ""
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            if line.startswith("onvifcam ready"):
                for tok in line.split()[2:]:
                    k, v = tok.split("=", 1)
                    self.ports[k] = int(v) if v.isdigit() else v  # type: ignore[assignment]
                return self
        text = self.log()
        self.stop(check=False)
        raise RuntimeError(f"server did not become ready: {line!r}\n{text[-3000:]}")

    @property
    def rtsp_port(self) -> int:
        return int(self.ports["rtsp_port"])

    def url(self, path: str, host: str = "127.0.0.1", user: str = "") -> str:
        auth = f"{user}@" if user else ""
        return f"rtsp://{auth}{host}:{self.rtsp_port}/{path}"

    def log(self) -> str:
        """The server's log so far."""
        with contextlib.suppress(OSError):
            return Path(self.log_path).read_text()
        return ""

    def stalls(self) -> list[str]:
        """The loop-stall warnings (onvifcam.watchdog) in the log so far, with their stacks."""
        return re.findall(r"^.*event loop stalled:.*(?:\n  .*)*", self.log(), re.M)

    def stop(self, check: bool = True) -> int | None:
        """SIGTERM, wait, and (check) assert a clean exit without tracebacks."""
        rc = None
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    rc = self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    rc = self.proc.wait(5)
            else:
                rc = self.proc.returncode
            if self.proc.stdout:
                self.proc.stdout.close()
            self._logf.close()
        text = self.log()
        if self._tmp is not None:
            self._keep_log_end()
            self.stopped_at = time.monotonic()
            self._tmp.cleanup()
            self._tmp = None
        if check:
            assert rc == 0, f"server exited with {rc}\n{text[-3000:]}"
            assert "Traceback" not in text, text[-5000:]
        return rc

    def log_size(self) -> int:
        """Bytes in the log so far (an offset for :meth:`log_since`)."""
        if self._tmp is None:
            return self._kept_from + len(self._kept)
        with contextlib.suppress(OSError):
            return os.path.getsize(self.log_path)
        return 0

    def wait_log(self, *texts: str, since: int = 0, timeout: float = 15.0) -> str:
        """Wait (at most ``timeout`` s) until one of ``texts`` is in the log after byte
        ``since``; the log from ``since`` on either way (the caller asserts on it)."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.log_since(since)
            if any(t in text for t in texts) or time.monotonic() >= deadline:
                return text
            time.sleep(0.1)

    def log_since(self, offset: int) -> str:
        """The log from byte ``offset`` on; after stop(), as much of it as was kept."""
        if self._tmp is None:
            data = self._kept[max(0, offset - self._kept_from) :]
        else:
            data = b""
            with contextlib.suppress(OSError), open(self.log_path, "rb") as f:
                f.seek(offset)
                data = f.read()
        return data.decode(errors="replace")

    def _keep_log_end(self, limit: int = 256 * 1024) -> None:
        with contextlib.suppress(OSError), open(self.log_path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            self._kept_from = max(0, size - limit)
            f.seek(self._kept_from)
            self._kept = f.read()


# Every ServerProc started in this process, so that a failing test's report can show the
# logs of the servers that ran during it (see tests/conftest.py).
STARTED: list[ServerProc] = []


def servers_running_since(t: float) -> list[ServerProc]:
    """The servers that were running at some point after monotonic time ``t``."""
    return [s for s in STARTED if s.stopped_at is None or s.stopped_at >= t]


def forget_servers_stopped_before(t: float) -> None:
    """Drop servers that stopped before ``t`` from :data:`STARTED`."""
    STARTED[:] = servers_running_since(t)


def ffmpeg_push(
    url: str,
    *,
    frames: int = 100,
    fps: int = 25,
    size: str = "320x240",
    gop: int = 1000,
    audio: bool = True,
    transport: str = "tcp",
    realtime: bool = True,
    codec: str = "libx264",
    extra: list[str] | None = None,
    netns: str = "",
) -> subprocess.Popen[str]:
    """ffmpeg pushing a test pattern (H.264 + AAC) with ANNOUNCE/RECORD."""
    cmd = [FFMPEG, "-hide_banner", "-nostdin", "-loglevel", "warning"]
    if netns:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    if realtime:
        cmd.append("-re")
    cmd += ["-f", "lavfi", "-i", f"testsrc2=size={size}:rate={fps}"]
    if audio:
        cmd += ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"]
    cmd += ["-frames:v", str(frames), "-c:v", codec, "-pix_fmt", "yuv420p"]
    if codec == "libx264":
        cmd += ["-preset", "ultrafast", "-tune", "zerolatency", "-bf", "0"]
    cmd += ["-g", str(gop)]
    if audio:
        cmd += ["-c:a", "aac", "-b:a", "64k", "-shortest"]
    cmd += extra or []
    cmd += ["-f", "rtsp", "-rtsp_transport", transport, url]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_online(url: str, timeout: float = 15.0, transport: str = "tcp", netns: str = "") -> None:
    """Wait until DESCRIBE on url succeeds (the publisher is RECORDing)."""
    deadline = time.monotonic() + timeout
    last = ""
    pre = ["ip", "netns", "exec", netns] if netns else []
    while time.monotonic() < deadline:
        r = subprocess.run(
            [
                *pre,
                FFPROBE,
                "-v",
                "error",
                "-rtsp_transport",
                transport,
                "-timeout",
                "2000000",
                "-show_entries",
                "stream=codec_name",
                "-of",
                "json",
                url,
            ],
            capture_output=True,
            text=True,
            timeout=20,
        )
        if r.returncode == 0 and json.loads(r.stdout).get("streams"):
            return
        last = r.stderr
        time.sleep(0.2)
    raise AssertionError(f"{url} never came online: {last}")


@dataclass
class ReadResult:
    """What an ffmpeg reader decoded."""

    returncode: int
    video_frames: int
    audio_frames: int
    stderr: str


def _reader_cmd(
    url: str,
    transport: str,
    io_timeout: float,
    netns: str,
    extra: list[str] | None,
    frames: int | None = None,
) -> list[str]:
    """ffmpeg decoding every stream of url to null, printing progress (frame=N) on stdout.

    Decoders run single-threaded so that they hold no frames back: once the input stops,
    ffmpeg 5.1 drains one held frame per read attempt and every attempt waits io_timeout
    again, so with frame threads a reader ended about 4x io_timeout after the last packet
    (now about 2x).
    """
    stop = ["-frames:v", str(frames)] if frames else []
    cmd = [FFMPEG, "-hide_banner", "-nostdin", "-loglevel", "error",
           "-rtsp_transport", transport, "-timeout", str(int(io_timeout * 1e6)), *(extra or []),
           "-threads", "1", "-i", url, "-map", "0", *stop, "-f", "null", "-",
           "-progress", "pipe:1", "-stats_period", "0.5"]  # fmt: skip
    return ["ip", "netns", "exec", netns, *cmd] if netns else cmd


def ffmpeg_read(
    url: str,
    *,
    transport: str = "tcp",
    io_timeout: float = 4.0,
    netns: str = "",
    extra: list[str] | None = None,
    max_seconds: float = 60.0,
    frames: int | None = None,
) -> ReadResult:
    """Decode a stream with ffmpeg until it stalls for io_timeout; count the video frames.

    With ``frames``, ffmpeg stops as soon as it decoded that many video frames: for tests
    that only need some frames, not to know that no more come.
    """
    cmd = _reader_cmd(url, transport, io_timeout, netns, extra, frames)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=max_seconds)
    return _read_result(r.returncode, r.stdout, r.stderr)


def ffmpeg_read_async(
    url: str, *, transport: str = "tcp", io_timeout: float = 4.0, netns: str = ""
) -> tuple[subprocess.Popen[str], threading.Thread, list]:
    """Start an ffmpeg reader in the background; join the thread, then read box[0]."""
    cmd = _reader_cmd(url, transport, io_timeout, netns, None)
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    box: list[ReadResult] = []

    def run() -> None:
        out, err = p.communicate(timeout=120)
        box.append(_read_result(p.returncode, out, err))

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return p, t, box


class LiveReader:
    """An ffmpeg reader in the background whose decoded video frames can be watched."""

    def __init__(self, url: str, *, transport: str = "tcp", io_timeout: float = 4.0) -> None:
        cmd = _reader_cmd(url, transport, io_timeout, "", None)
        self._err = tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._err, text=True)
        self.frames = 0  # as of ffmpeg's last progress report (every 0.5 s)
        self._out: list[str] = []
        self._pump = threading.Thread(target=self._read_progress, daemon=True)
        self._pump.start()

    def _read_progress(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._out.append(line)
            if line.startswith("frame="):
                self.frames = int(line[6:])

    def stop_at(self, frames: int, timeout: float = 60.0) -> ReadResult:
        """Stop ffmpeg once it decoded ``frames`` video frames; or let it end by itself.

        Only for checks of "at least ``frames``": a reader that gets fewer still runs until
        the stream stalls for io_timeout, and frames that would have come after the stop
        are not counted.
        """
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and self.frames < frames:
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
        if self.proc.poll() is None and self.frames >= frames:
            self.proc.send_signal(signal.SIGINT)  # ffmpeg ends cleanly with a last report
        return self.result(timeout)

    def result(self, timeout: float = 60.0) -> ReadResult:
        """Wait for ffmpeg to end; what it decoded."""
        try:
            rc = self.proc.wait(timeout)
        finally:
            stop_process(self.proc)
        self._pump.join(10)
        self._err.seek(0)
        err = self._err.read()
        self._err.close()
        return _read_result(rc, "".join(self._out), err)


def _read_result(rc: int, out: str, err: str) -> ReadResult:
    # -f null with -map 0 prints per-output-stream counts only at the end on stderr at
    # higher log levels; the progress "frame=" is video frames.
    frames = [int(m) for m in re.findall(r"^frame=(\d+)$", out, re.M)]
    video = frames[-1] if frames else 0
    return ReadResult(rc, video, 0, err)


def gst_available() -> bool:
    """True when gst-launch-1.0 is installed."""
    return subprocess.run(["which", GST_LAUNCH], capture_output=True).returncode == 0


# GStreamer 1.22's rtspsrc races with itself when gst-launch stops a playing pipeline. On
# the way to NULL, PLAYING->PAUSED queues a PAUSE request for rtspsrc's task thread and
# PAUSED->READY at once cancels the connection's I/O to send TEARDOWN. When the cancel lands
# while the task thread writes the PAUSE, the write fails with nothing written, which
# rtspsrc reports as "Received end-of-file": gst-launch prints that error and exits with 1,
# although the server saw nothing of the PAUSE and answers the TEARDOWN with 200. Seen in
# 2 of 150 reads on a loaded 2-core machine.
GST_STOP_RACE = "Could not send message. (Received end-of-file)"
_GST_ERROR = re.compile(
    r"^ERROR: from element [^\n]*\n(?:Additional debug info:\n[^\n]*\n[^\n]*\n)?", re.M
)


@dataclass
class GstReadResult:
    """What gst-launch's rtspsrc decoded, and the errors it reported while it ran and stopped."""

    returncode: int
    frames: int  # decoded video frames that reached the sink
    eos: bool  # the pipeline ended by itself once it had the frames it wanted
    errors: list[str]  # except GST_STOP_RACE once EOS was reached
    output: str


def gst_read(
    url: str, frames: int, *, protocols: str = "tcp", timeout: float = 60
) -> GstReadResult:
    """GStreamer's rtspsrc reads H.264 from url until ``frames`` decoded frames reached the sink.

    The frames are counted from fakesink's per-buffer notifications (``-v``), not inferred
    from the exit code: an rtspsrc whose server closes the connection also ends with EOS.
    Warnings are not errors: gst-launch warns now and then that it could not link the
    audio pad, which this pipeline leaves unlinked on purpose.
    """
    cmd = [GST_LAUNCH, "-v", "rtspsrc", f"location={url}", f"protocols={protocols}", "!",
           "rtph264depay", "!", "avdec_h264", "!", "identity", f"eos-after={frames + 1}", "!",
           "fakesink", "sync=false", "silent=false"]  # fmt: skip
    # One pipe for both streams keeps gst-launch's messages in the order it printed them.
    out = subprocess.PIPE
    r = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, text=True, timeout=timeout)
    running_out, eos, stopping_out = r.stdout.partition('Got EOS from element "pipeline0".')
    errors = [m.group(0) for m in _GST_ERROR.finditer(running_out)]
    errors += [m.group(0) for m in _GST_ERROR.finditer(stopping_out) if GST_STOP_RACE not in m[0]]
    count = running_out.count("fakesink0: last-message = chain ")
    return GstReadResult(r.returncode, count, bool(eos), errors, r.stdout)


def stop_process(proc: subprocess.Popen[str], timeout: float = 5.0) -> None:
    """SIGTERM a process we started, then SIGKILL it if it is still there after ``timeout``."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@contextlib.contextmanager
def running(proc: subprocess.Popen[str]) -> Iterator[subprocess.Popen[str]]:
    """Terminate a peer process when the block ends."""
    try:
        yield proc
    finally:
        stop_process(proc)


def probe(url: str, transport: str = "tcp", io_timeout: float = 4.0) -> list[dict]:
    """ffprobe's stream list (codec, size, sample rate) for a live URL; ``io_timeout``: how
    long ffprobe waits for data (a source started by the read itself needs longer)."""
    r = subprocess.run(
        [
            FFPROBE,
            "-v",
            "error",
            "-rtsp_transport",
            transport,
            "-timeout",
            str(int(io_timeout * 1_000_000)),
            "-show_entries",
            "stream=codec_type,codec_name,width,height,sample_rate,channels",
            "-of",
            "json",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["streams"]


def rtsp_exchange(port: int, data: bytes, host: str = "127.0.0.1", wait: float = 3.0) -> bytes:
    """Send raw bytes to the RTSP port and return what comes back until close or ``wait``."""
    with socket.create_connection((host, port), timeout=wait) as s:
        s.sendall(data)
        out = b""
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            out += chunk
            if b"\r\n\r\n" in out and b"Content-Length" not in out:
                break
        return out


def reader_count(srv: ServerProc, path: str) -> int:
    """Readers of ``path`` on an onvifcam server (GET /api/sessions, loopback read)."""
    conn = http.client.HTTPConnection("127.0.0.1", int(srv.ports["http_port"]), timeout=10)
    try:
        conn.request("GET", "/api/sessions")
        body = json.loads(conn.getresponse().read())
    finally:
        conn.close()
    return sum(1 for s in body["sessions"] if s["path"] == path and s["role"] == "reader")


def status_of(reply: bytes) -> int:
    """The status code of the first RTSP/HTTP response in ``reply``."""
    m = re.match(rb"(?:RTSP|HTTP)/\d\.\d (\d{3})", reply)
    assert m, reply[:200]
    return int(m.group(1))


# --------------------------------------------------------------------------- namespaces
# Clients that run in a network namespace of tests.netns.lan (root only).

# Records every Hello and Bye heard on the WS-Discovery group as JSON lines; the first line
# ({"kind": "ready"}) says the group is joined. argv[1]: the interface (address) to join on.
HELLO_LISTENER = (
    "import json, sys\n"
    "from onvifcam.discovery.client import listen\n"
    "def emit(d): print(json.dumps(d), flush=True)\n"
    "listen(600, interface=sys.argv[1], callback=lambda h: emit(h.__dict__),\n"
    "       ready=lambda: emit({'kind': 'ready', 'epr': ''}))\n"
)


def in_netns(ns: str, code: str, timeout: float = 60) -> str:
    """Run python ``code`` in namespace ``ns``; its stdout (it must exit with status 0)."""
    r = subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=str(ROOT),
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


def start_in_netns(ns: str, code: str, out: Path, *args: str) -> subprocess.Popen[str]:
    """Start python ``code`` in namespace ``ns`` in the background, stdout to ``out``."""
    with open(out, "w") as f:
        return subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-c", code, *args],
            stdout=f,
            stderr=subprocess.DEVNULL,
            cwd=str(ROOT),
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )


def json_lines(path: Path) -> list[dict]:
    """The JSON objects of a file with one per line."""
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def wait_lines(path: Path, pred: Callable[[dict], bool], limit: float = 15.0) -> list[dict]:
    """Poll ``path`` (JSON lines) up to ``limit`` seconds for lines matching ``pred``."""
    deadline = time.monotonic() + limit
    hits: list[dict] = []
    while time.monotonic() < deadline:
        hits = [x for x in json_lines(path) if pred(x)]
        if hits:
            break
        time.sleep(0.2)
    return hits


def discover_json(ns: str, interface: str, *args: str) -> dict:
    """``onvifcam discover --json --interface IF ARGS...`` in namespace ``ns``."""
    cmd = ["ip", "netns", "exec", ns, sys.executable, "-m", "onvifcam", "discover", "--json"]
    r = subprocess.run(
        [*cmd, "--interface", interface, *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=str(ROOT),
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout)


def api_cameras(ns: str, host: str, port: int) -> dict[str, dict]:
    """GET /api/cameras from namespace ``ns``: camera name -> entry."""
    code = (
        "import urllib.request,sys\n"
        f"sys.stdout.write(urllib.request.urlopen('http://{host}:{port}/api/cameras', "
        "timeout=10).read().decode())\n"
    )
    return {c["name"]: c for c in json.loads(in_netns(ns, code))["cameras"]}


def soap_in_netns(ns: str, url: str, body: str) -> str:
    """POST a SOAP 1.2 request (``tds:`` declared) from namespace ``ns``; the response text."""
    envelope = (
        '<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" '
        'xmlns:tds="http://www.onvif.org/ver10/device/wsdl"><s:Body>'
        f"{body}</s:Body></s:Envelope>"
    )
    code = (
        "import urllib.request,sys\n"
        f"req = urllib.request.Request({url!r}, data={envelope!r}.encode(), "
        "headers={'Content-Type': 'application/soap+xml'})\n"
        "sys.stdout.write(urllib.request.urlopen(req, timeout=10).read().decode())\n"
    )
    return in_netns(ns, code)


def wsdiscovery_search(ns: str, scopes: list[str], timeout: float = 3) -> dict[str, dict]:
    """python-ws-discovery (what Home Assistant uses) in namespace ``ns``: EPR -> service."""
    code = (
        "import json\n"
        "from wsdiscovery import Scope\n"
        "from wsdiscovery.discovery import ThreadedWSDiscovery\n"
        "wsd = ThreadedWSDiscovery()\n"
        "wsd.start()\n"
        "try:\n"
        f"    svcs = wsd.searchServices(scopes=[Scope(s) for s in {scopes!r}], timeout={timeout})\n"
        "finally:\n"
        "    wsd.stop()\n"
        "print(json.dumps([{'epr': s.getEPR(), 'xaddrs': s.getXAddrs(),\n"
        "    'scopes': [x.getValue() for x in s.getScopes()]} for s in svcs]))\n"
    )
    return {d["epr"]: d for d in json.loads(in_netns(ns, code).splitlines()[-1])}
