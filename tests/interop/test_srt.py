"""SRT ingest against real callers: ffmpeg (libsrt) and GStreamer srtsink.

The listener runs as a process (``tests/interop/srt_recorder.py``: the real gate and SRT
server, each publisher's payloads written to a file), so what arrived is compared byte for
byte with what ffmpeg's tee muxer wrote next to the SRT output. ``linger=5`` makes libsrt
wait for the acknowledgement of the last packets before it closes (by default a live-mode
caller discards what is still unsent when it closes).
"""

from __future__ import annotations

import heapq
import os
import random
import re
import selectors
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import (
    FFMPEG,
    FFPROBE,
    GST_LAUNCH,
    ROOT,
    ServerProc,
    _die_with_parent,
    ffmpeg_read,
    probe,
    running,
    wait_online,
)
from tests.netns import can_make_netns, lan

pytestmark = pytest.mark.interop

CONFIG = """
[server]
host = "{host}"
[srt]
port = 0
[paths."enc"]
srt_passphrase = "path passphrase 1"
[paths."locked"]
publish_user = "enc"
publish_password = "pw"
"""


@dataclass
class Recorder:
    """A running srt_recorder process."""

    proc: subprocess.Popen[str]
    port: int
    directory: Path
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text()

    def files(self, path: str) -> list[Path]:
        """The finished recordings of ``path`` (oldest first)."""
        return sorted(
            self.directory.glob(f"{path.replace('/', '_')}.*.ts.done"),
            key=lambda p: int(p.name.split(".")[1]),
        )

    def wait_done(self, path: str, count: int = 1, limit: float = 20.0) -> list[Path]:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            done = self.files(path)
            if len(done) >= count:
                return done
            time.sleep(0.1)
        raise AssertionError(f"no finished recording of {path!r}:\n{self.log()[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def start_recorder(tmp: Path, host: str = "127.0.0.1", netns: str = "") -> Recorder:
    cfg = tmp / "srt.toml"
    cfg.write_text(CONFIG.format(host=host))
    out = tmp / "rec"
    out.mkdir()
    log_path = tmp / "recorder.log"
    cmd = [sys.executable, "-m", "tests.interop.srt_recorder", str(cfg), str(out)]
    if netns:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=open(log_path, "w"),
        text=True,
        cwd=str(ROOT),
        env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"},
        preexec_fn=_die_with_parent,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    m = re.match(r"ready srt_port=(\d+)", line)
    if m is None:
        proc.kill()
        raise RuntimeError(f"recorder did not start: {line!r} {log_path.read_text()}")
    return Recorder(proc, int(m.group(1)), out, log_path)


@pytest.fixture(scope="module")
def rec(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Recorder]:
    r = start_recorder(tmp_path_factory.mktemp("srt"))
    yield r
    r.stop()


@pytest.fixture(scope="module")
def source_ts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 s of H.264 + AAC as MPEG-TS (the encoders' usual payload)."""
    path = tmp_path_factory.mktemp("src") / "src.ts"
    make_ts(path, seconds=3)
    return path


def make_ts(path: Path, seconds: int, size: str = "320x240") -> None:
    subprocess.run(
        [FFMPEG, "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
         "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=25",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
         "-t", str(seconds), "-c:v", "libx264", "-preset", "ultrafast", "-g", "25",
         "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "64k", "-f", "mpegts", str(path)],
        check=True, timeout=120,
    )  # fmt: skip


def srt_url(port: int, streamid: str, host: str = "127.0.0.1", **opts: str) -> str:
    query = "&".join([f"streamid={streamid}", *(f"{k}={v}" for k, v in opts.items())])
    return f"srt://{host}:{port}?{query}"


def push(
    src: Path, url: str, *, sent: Path | None = None, netns: str = "", realtime: bool = True
) -> subprocess.Popen[str]:
    """ffmpeg -c copy of ``src`` to ``url`` (and, with ``sent``, the same TS to a file)."""
    cmd = [FFMPEG, "-hide_banner", "-nostdin", *(["-re"] if realtime else []), "-i", str(src),
           "-map", "0", "-c", "copy"]  # fmt: skip
    if sent is None:
        cmd += ["-f", "mpegts", url]
    else:
        escaped = url.replace(":", "\\:")
        cmd += ["-f", "tee", f"[f=mpegts]{sent}|[f=mpegts]{escaped}"]
    if netns:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def finish(p: subprocess.Popen[str], limit: float = 60) -> str:
    _, err = p.communicate(timeout=limit)
    return err


def frames(path: Path) -> dict[str, int]:
    r = subprocess.run(
        [FFPROBE, "-v", "error", "-count_frames", "-show_entries",
         "stream=codec_name,nb_read_frames", "-of", "csv=p=0", str(path)],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    out = {}
    for line in r.stdout.split():
        codec, n = line.split(",")[:2]
        out[codec] = int(n)
    return out


# ---------------------------------------------------------------------------- tests
def test_ffmpeg_push_arrives_byte_for_byte(rec: Recorder, source_ts: Path, tmp_path: Path) -> None:
    sent = tmp_path / "sent.ts"
    p = push(source_ts, srt_url(rec.port, "publish:cam1", latency="200000", linger="5"), sent=sent)
    err = finish(p)
    assert p.returncode == 0, err
    (got,) = rec.wait_done("cam1")
    assert got.read_bytes() == sent.read_bytes()
    assert frames(got) == {"h264": 75, "aac": frames(sent)["aac"]}
    assert "srt://127.0.0.1:" in rec.log() and "publishes 'cam1' (latency 200 ms)" in rec.log()


def test_gstreamer_srtsink_push(rec: Recorder) -> None:
    r = subprocess.run(
        [GST_LAUNCH, "-q", "videotestsrc", "is-live=true", "num-buffers=50", "!",
         "video/x-raw,format=I420,width=320,height=240,framerate=25/1", "!",
         "x264enc", "tune=zerolatency", "key-int-max=25", "!", "mpegtsmux", "!",
         "srtsink", f"uri=srt://127.0.0.1:{rec.port}?latency=200", "streamid=publish:cam2"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    (got,) = rec.wait_done("cam2")
    assert frames(got) == {"h264": 50}


def test_passphrase_right_one_works(rec: Recorder, source_ts: Path, tmp_path: Path) -> None:
    sent = tmp_path / "sent.ts"
    url = srt_url(
        rec.port, "publish:enc", passphrase="path passphrase 1", pbkeylen="32", linger="5"
    )
    p = push(source_ts, url, sent=sent, realtime=False)
    err = finish(p)
    assert p.returncode == 0, err
    (got,) = rec.wait_done("enc")
    assert got.read_bytes() == sent.read_bytes()
    assert "publishes 'enc' (latency 120 ms, AES-256)" in rec.log()


def test_key_refresh_every_200_packets(rec: Recorder, source_ts: Path, tmp_path: Path) -> None:
    """libsrt switches to a new key (even/odd) every 200 packets, announced 50 before."""
    sent = tmp_path / "sent.ts"
    url = srt_url(
        rec.port,
        "publish:enc",
        passphrase="path passphrase 1",
        kmrefreshrate="200",
        kmpreannounce="50",
        linger="5",
    )
    before = len(rec.files("enc"))
    # paced like a real encoder: Debian's libsrt 1.5.1 aborts the sending ffmpeg (SIGABRT)
    # in about half the runs when it refreshes keys while pushing faster than real time
    p = push(source_ts, url, sent=sent, realtime=True)
    err = finish(p)
    assert p.returncode == 0, err
    got = rec.wait_done("enc", before + 1)[-1]
    assert got.read_bytes() == sent.read_bytes()
    closed = re.findall(r"'enc' closed: .* \((\d+) packets", rec.log())
    assert int(closed[-1]) > 400  # two refreshes at least


@pytest.mark.parametrize(
    ("opts", "printed", "logged"),
    [
        ({"passphrase": "wrong passphrase"}, "Incorrect passphrase", "BADSECRET"),
        ({}, "Password required or unexpected", "needs a passphrase"),
    ],
)
def test_passphrase_refusals_say_why(
    rec: Recorder, source_ts: Path, opts: dict[str, str], printed: str, logged: str
) -> None:
    p = push(source_ts, srt_url(rec.port, "publish:enc", **opts))
    err = finish(p)
    assert p.returncode != 0
    assert printed in err  # libsrt's warning, printed by ffmpeg
    assert logged in rec.log()


def test_encrypting_caller_on_a_clear_path_is_refused(rec: Recorder, source_ts: Path) -> None:
    p = push(source_ts, srt_url(rec.port, "publish:clear", passphrase="some passphrase"))
    err = finish(p)
    assert p.returncode != 0 and "Password required or unexpected" in err
    assert "the caller encrypts but 'clear' has no passphrase" in rec.log()


def test_second_publisher_on_a_live_path_is_refused(rec: Recorder, tmp_path: Path) -> None:
    src = tmp_path / "long.ts"
    make_ts(src, seconds=4)
    first = push(src, srt_url(rec.port, "publish:busy", linger="5"))
    time.sleep(1.5)
    second = push(src, srt_url(rec.port, "publish:busy"))
    err = finish(second)
    assert second.returncode != 0
    assert "Application-defined rejection reason" in err
    assert finish(first) is not None and first.returncode == 0
    (got,) = rec.wait_done("busy")
    assert frames(got)["h264"] == 100  # the first publisher was not disturbed
    assert "reject code 1409 CONFLICT" in rec.log()


@pytest.mark.parametrize(
    ("streamid", "ok"),
    [
        ("publish:locked", False),
        ("publish:locked:enc:wrong", False),
        ("publish:locked:enc:pw", True),
        ("#!::r=locked,m=publish,u=enc,s=pw", True),
    ],
)
def test_publish_credentials_in_the_stream_id(
    rec: Recorder, source_ts: Path, streamid: str, ok: bool
) -> None:
    before = len(rec.files("locked"))
    p = push(source_ts, srt_url(rec.port, streamid.replace("#", "%23")), realtime=False)
    err = finish(p)
    if ok:
        assert p.returncode == 0, err
        rec.wait_done("locked", before + 1)
    else:
        assert p.returncode != 0
        assert "reject code 1401 UNAUTHORIZED" in rec.log()


def test_read_mode_is_refused_with_a_pointer_to_rtsp(rec: Recorder, source_ts: Path) -> None:
    r = subprocess.run(
        [FFPROBE, "-v", "error", srt_url(rec.port, "read:cam1")],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert r.returncode != 0
    assert "reading 'cam1' over SRT is not supported; read it over RTSP" in rec.log()


class ImpairedLink:
    """A UDP relay on 127.0.0.1 between one caller and the listener: datagrams towards the
    listener are lost with probability ``loss`` and delayed by ``delay``, like ``tc qdisc add
    dev X root netem loss 5% delay 50ms`` on the caller's interface; the way back is clean.
    (netem does this in the kernel, but not every kernel has sch_netem.)

    One packet is lost at most ``max_repeat`` times: at 200 ms of latency and 50 ms one
    way three retransmissions fit, and a packet lost four times in a row (about one run in
    70 at 5 %) would test the dice rather than the receiver.
    """

    def __init__(
        self, target: tuple[str, int], loss: float, delay: float, seed: int, max_repeat: int = 2
    ) -> None:
        self.target = target
        self.max_repeat = max_repeat
        self.lost_seqs: dict[int, int] = {}
        self.loss, self.delay = loss, delay
        self.rnd = random.Random(seed)
        self.front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.front.bind(("127.0.0.1", 0))
        self.back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.back.connect(target)
        self.port = self.front.getsockname()[1]
        self.caller: tuple[str, int] | None = None
        self.dropped = self.forwarded = 0
        self._queue: list[tuple[float, int, bool, bytes]] = []
        self._n = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self.front, selectors.EVENT_READ, True)
        sel.register(self.back, selectors.EVENT_READ, False)
        while not self._stop.is_set():
            now = time.monotonic()
            while self._queue and self._queue[0][0] <= now:
                _, _, _up, data = heapq.heappop(self._queue)
                self.back.send(data)
            wait = max(0.0, self._queue[0][0] - now) if self._queue else 0.05
            for key, _ in sel.select(min(wait, 0.05)):
                up = key.data
                sock = self.front if up else self.back
                data, addr = sock.recvfrom(2048)
                if up:
                    self.caller = addr
                    if self.rnd.random() < self.loss and self._may_lose(data):
                        self.dropped += 1
                        continue
                    self.forwarded += 1
                else:
                    if self.caller is not None:
                        self.front.sendto(data, self.caller)
                    continue
                self._n += 1
                heapq.heappush(self._queue, (time.monotonic() + self.delay, self._n, up, data))
        sel.close()

    def _may_lose(self, data: bytes) -> bool:
        if data[0] & 0x80:  # control packets: independent losses
            return True
        seq = int.from_bytes(data[:4], "big")
        n = self.lost_seqs.get(seq, 0)
        if n >= self.max_repeat:
            return False
        self.lost_seqs[seq] = n + 1
        return True

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.front.close()
        self.back.close()


def test_five_percent_loss_and_50_ms_loses_no_frame(rec: Recorder, tmp_path: Path) -> None:
    src = tmp_path / "src.ts"
    make_ts(src, seconds=8, size="640x360")
    link = ImpairedLink(("127.0.0.1", rec.port), loss=0.05, delay=0.05, seed=7)
    try:
        sent = tmp_path / "sent.ts"
        url = srt_url(link.port, "publish:lossy", latency="200000", linger="5")
        p = push(src, url, sent=sent)
        err = finish(p, limit=90)
        assert p.returncode == 0, err
        (got,) = rec.wait_done("lossy")
    finally:
        link.close()
    log = rec.log()
    m = re.search(
        r"'lossy' closed: .* \((\d+) packets, (\d+) lost, (\d+) recovered, (\d+) dropped", log
    )
    assert m is not None, log
    _packets, lost, recovered, dropped = map(int, m.groups())
    assert link.dropped > 10 and lost >= link.dropped // 2, (link.dropped, log)
    assert recovered == lost and dropped == 0, log
    assert_prefix_with_short_tail(got.read_bytes(), sent.read_bytes())
    assert frames(got)["h264"] >= 199


def assert_prefix_with_short_tail(got: bytes, sent: bytes) -> None:
    """What arrived is what was sent, up to the last few packets: a loss among the very last
    packets goes unnoticed (nothing follows to show the gap, and a libsrt sender does not
    retransmit blindly to a receiver that sends periodic NAKs), as between libsrt peers."""
    assert sent.startswith(got)
    assert len(sent) - len(got) <= 8 * 1456, (len(sent), len(got))


def netem_available() -> bool:
    """Whether this kernel has sch_netem (probed in a throwaway namespace)."""
    if not can_make_netns():
        return False
    ns = f"oc-netem-probe{os.getpid()}"
    try:
        subprocess.run(["ip", "netns", "add", ns], check=True, capture_output=True)
        subprocess.run(
            ["ip", "-n", ns, "link", "add", "pa", "type", "veth", "peer", "name", "pb"],
            check=True, capture_output=True,
        )  # fmt: skip
        r = subprocess.run(
            ["ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", "pa", "root", "netem",
             "delay", "1ms"],
            capture_output=True,
        )  # fmt: skip
        return r.returncode == 0
    except (OSError, subprocess.CalledProcessError):
        return False
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@pytest.mark.netns
@pytest.mark.skipif(not netem_available(), reason="needs root and a kernel with sch_netem")
def test_netem_loss_on_a_veth_pair_loses_no_frame(tmp_path: Path) -> None:
    src = tmp_path / "src.ts"
    make_ts(src, seconds=8, size="640x360")
    with lan("srt") as net:
        for ns, spec in (
            (net.client, ["loss", "5%", "delay", "50ms"]),
            (net.server, ["delay", "50ms"]),
        ):
            dev = subprocess.run(
                ["ip", "-n", ns, "-o", "link", "show", "type", "veth"],
                capture_output=True, text=True, check=True,
            ).stdout.split(":")[1].strip().split("@")[0]  # fmt: skip
            subprocess.run(
                ["ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", dev, "root", "netem",
                 *spec],
                check=True, capture_output=True,
            )  # fmt: skip
        r = start_recorder(tmp_path, host=net.server_ip, netns=net.server)
        try:
            sent = tmp_path / "sent.ts"
            url = srt_url(r.port, "publish:lossy", host=net.server_ip, latency="200000", linger="5")
            p = push(src, url, sent=sent, netns=net.client)
            err = finish(p, limit=90)
            assert p.returncode == 0, err
            (got,) = r.wait_done("lossy")
        finally:
            r.stop()
    m = re.search(r"\((\d+) packets, (\d+) lost, (\d+) recovered, (\d+) dropped", r.log())
    assert m is not None, r.log()
    _packets, lost, recovered, dropped = map(int, m.groups())
    assert lost > 0 and recovered == lost and dropped == 0, r.log()
    assert_prefix_with_short_tail(got.read_bytes(), sent.read_bytes())
    assert frames(got)["h264"] >= 199


def test_listener_survives_garbage(rec: Recorder, source_ts: Path, tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for i in range(300):
            s.sendto(os.urandom(i % 80) + b"\x80" * (i % 3), ("127.0.0.1", rec.port))
    sent = tmp_path / "sent.ts"
    p = push(source_ts, srt_url(rec.port, "publish:after", linger="5"), sent=sent, realtime=False)
    assert finish(p) is not None and p.returncode == 0
    (got,) = rec.wait_done("after")
    assert got.read_bytes() == sent.read_bytes()
    assert "Traceback" not in rec.log()


# ---------------------------------------------------------------------------- whole server
@pytest.fixture(scope="module")
def app() -> Iterator[ServerProc]:
    """The real server: SRT in, RTSP out."""
    s = ServerProc(
        config=textwrap.dedent(
            """
            [srt]
            port = 0
            latency_ms = 120
            [paths."secret/cam"]
            srt_passphrase = "path passphrase 1"
            [onvif]
            enabled = false
            """
        )
    ).start()
    yield s
    s.stop()


def test_ffmpeg_srt_push_is_read_over_rtsp(app: ServerProc, tmp_path: Path) -> None:
    src = tmp_path / "src.ts"
    make_ts(src, seconds=6)
    port = int(app.ports["srt_port"])
    with running(push(src, srt_url(port, "publish:live/srt1", latency="200000"))):
        url = app.url("live/srt1")
        wait_online(url)
        kinds = {s["codec_type"]: s for s in probe(url)}
        assert kinds["video"]["codec_name"] == "h264"
        assert (kinds["video"]["width"], kinds["video"]["height"]) == (320, 240)
        assert (kinds["audio"]["codec_name"], kinds["audio"]["sample_rate"]) == ("aac", "48000")
        res = ffmpeg_read(url, io_timeout=3.0)
    assert res.video_frames >= 50, res
    assert "publishes 'live/srt1' (latency 200 ms)" in app.log()
    assert "stream live/srt1: publishing from srt://127.0.0.1:" in app.log()


def test_gstreamer_srtsink_push_is_read_over_rtsp(app: ServerProc) -> None:
    port = int(app.ports["srt_port"])
    gst = subprocess.Popen(
        [GST_LAUNCH, "-q", "videotestsrc", "is-live=true", "num-buffers=250", "!",
         "video/x-raw,format=I420,width=320,height=240,framerate=25/1", "!",
         "x264enc", "tune=zerolatency", "key-int-max=25", "!", "mpegtsmux", "!",
         "srtsink", f"uri=srt://127.0.0.1:{port}", "streamid=publish:live/srt2"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    with running(gst):
        url = app.url("live/srt2")
        wait_online(url)
        (video,) = probe(url)
        assert (video["codec_name"], video["width"], video["height"]) == ("h264", 320, 240)
        res = ffmpeg_read(url, io_timeout=3.0)
    assert res.video_frames >= 25, res


def test_encrypted_push_is_read_over_rtsp(app: ServerProc, tmp_path: Path) -> None:
    src = tmp_path / "src.ts"
    make_ts(src, seconds=4)
    port = int(app.ports["srt_port"])
    url = srt_url(port, "publish:secret/cam", passphrase="path passphrase 1", pbkeylen="24")
    with running(push(src, url)):
        wait_online(app.url("secret/cam"))
        res = ffmpeg_read(app.url("secret/cam"), io_timeout=3.0)
    assert res.video_frames >= 25, res
    wrong = push(src, srt_url(port, "publish:secret/cam", passphrase="not the passphrase"))
    assert "Incorrect passphrase" in finish(wrong) and wrong.returncode != 0


def test_not_mpegts_closes_with_a_reason(app: ServerProc) -> None:
    port = int(app.ports["srt_port"])
    r = subprocess.run(
        [FFMPEG, "-hide_banner", "-nostdin", "-loglevel", "error", "-f", "lavfi",
         "-i", "testsrc2=size=160x120:rate=25", "-t", "3", "-c:v", "mjpeg", "-f", "mjpeg",
         srt_url(port, "publish:live/junk")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    del r  # ffmpeg notices the closed connection only on its next write, or not at all
    deadline = time.monotonic() + 10
    while "the payload is not MPEG-TS" not in app.log() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "srt: srt://127.0.0.1:" in app.log()
    assert "on 'live/junk': the payload is not MPEG-TS" in app.log()
