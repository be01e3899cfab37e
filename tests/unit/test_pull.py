"""Pull retry policy, primary/backup decisions, and the failover source on real streams (real
H.264 from libx264, no sockets): readers of the camera keep one SSRC and continuous sequence
numbers across failover and failback, and every switch is a SourceSwitched event."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import pytest

from onvifcam.auth.gate import Gate, PlainCredentials, Refusal
from onvifcam.config import Config, ConfigError, HookConfig, SourcesConfig, from_dict
from onvifcam.events import EventBus, SourceFailed, SourceSwitched
from onvifcam.hooks import Hooks
from onvifcam.media.sdp import SessionDescription
from onvifcam.media.stream import StreamRegistry
from onvifcam.rtsp.client import PullError, PullTarget, redact, rtp_media
from onvifcam.sources.failover import BACKUP, PRIMARY, FailoverSource, FailoverState
from onvifcam.sources.pull import PullSource, RetryPolicy, Status
from tests.unit.test_stream import SDP_AV, Collect, Encoder, Pub, RtpMaker, header, push

# ------------------------------------------------------------------ retry policy


def test_first_uri_at_once_then_every_retry_interval_and_next_after_switch_after() -> None:
    p = RetryPolicy(3, retry_interval=1.0, switch_after=3.0)
    p.start(100.0)
    assert p.next_at == 100.0 and p.attempt(100.0) == 0
    assert p.next_at == 101.0
    assert [p.attempt(t) for t in (101.0, 102.0)] == [0, 0]  # missing < 3 s: same URI
    assert p.attempt(103.0) == 1  # missing 3 s: the next one, with its own 3 s
    assert [p.attempt(t) for t in (104.0, 105.0, 106.0)] == [1, 1, 2]
    assert p.attempt(109.0) == 0  # round robin
    assert p.switches == 3


def test_a_lost_connection_is_retried_at_once_and_switches_on_missing_media() -> None:
    p = RetryPolicy(2, retry_interval=3.0, switch_after=3.0)
    p.start(0.0)
    p.attempt(0.0)
    p.media()
    assert not p.failed(1e9)
    p.lost(50.0)  # EOF: media last seen now
    assert p.next_at == 50.0 and p.attempt(50.0) == 0
    p.media()
    p.lost(60.0)  # no data for switch_after: found out at 63
    assert p.attempt(63.0) == 1


def test_failed_after_give_up_after_and_never_with_zero() -> None:
    p = RetryPolicy(1, give_up_after=10.0)
    p.start(0.0)
    assert not p.failed(9.9) and p.failed(10.0)
    q = RetryPolicy(1, give_up_after=0.0)
    q.start(0.0)
    assert not q.failed(1e9)


def test_urls_keep_passwords_out_of_logs() -> None:
    t = PullTarget.parse("rtsp://us%20er:p%40ss@cam.local/a/b?x=1", 554)
    assert (t.username, t.password, t.url) == ("us er", "p@ss", "rtsp://cam.local:554/a/b?x=1")
    assert redact("rtsp://u:secret@h:1/x") == "rtsp://u:***@h:1/x"
    assert redact("rtmp://h/app/s") == "rtmp://h/app/s"


def test_tracks_are_the_rtp_media_in_order() -> None:
    sdp = SessionDescription.parse(SDP_AV.replace("m=audio 0 RTP/AVP", "m=audio 0 RTP/AVP"))
    assert rtp_media(sdp) == [0, 1]


# ------------------------------------------------------------------ configuration


def test_source_lists_and_failover_keys_are_validated() -> None:
    cfg = from_dict(
        {
            "cameras": [{"path": "a", "source": ["rtsp://h/x", "rtmp://h/app/s"]}],
            "fleets": [{"name": "f", "count": 2, "source": "rtsp://h/c{n:02}"}],
        }
    )
    assert cfg.cameras[0].source_uris == ("rtsp://h/x", "rtmp://h/app/s")
    assert [c.source_uris for c in cfg.cameras[1:]] == [("rtsp://h/c01",), ("rtsp://h/c02",)]
    for cam, message in [
        ({"source": ["file:///a.mp4", "rtsp://h/x"]}, "file:// source stands alone"),
        ({"source": "rtsp://h"}, "needs a host, an optional port and a path"),
        ({"source": "srt://h"}, "needs a host and a port"),
        ({"source": "srt://h:9000?pbkeylen=7"}, "pbkeylen must be 16, 24 or 32"),
        ({"primary": "p"}, "primary and backup go together"),
        ({"primary": "a", "backup": "b"}, "three different non-empty paths"),
        ({"primary": "p", "backup": "b", "source": "rtsp://h/x"}, "not both"),
        ({"on_demand": True}, "only pull sources"),
    ]:
        with pytest.raises(ConfigError, match=message):
            from_dict({"cameras": [{"path": "a", **cam}]})
    with pytest.raises(ConfigError, match=r"\[sources\] switch_after"):
        from_dict({"sources": {"switch_after": 0.0}})


# ------------------------------------------------------------------ failover decisions


def test_failover_state_follows_primary_with_delays() -> None:
    st = FailoverState(failover_after=3.0, failback_after=60.0)
    assert st.update(0.0, True, True) == (PRIMARY, True)
    st.shown(PRIMARY)
    assert st.update(1.0, False, True) == (PRIMARY, True)  # gone 0 s
    assert st.update(3.9, False, True) == (PRIMARY, True)  # gone 2.9 s
    assert st.update(4.0, False, True) == (BACKUP, True)  # gone 3 s: the backup's GOP cache
    st.shown(BACKUP)
    assert st.update(10.0, True, True) == (BACKUP, True)  # back, not long enough
    assert st.update(40.0, False, True) == (BACKUP, True)  # a break restarts the 60 s
    assert st.update(41.0, True, True) == (BACKUP, True)
    assert st.update(100.9, True, True) == (BACKUP, True)
    assert st.update(101.0, True, True) == (PRIMARY, False)  # at its next live keyframe
    st.shown(PRIMARY)
    assert st.update(200.0, False, False) == (PRIMARY, True)
    assert st.update(203.0, False, False) == (None, True)  # both gone: offline


def test_backup_first_only_after_failover_delay_and_primary_at_once_when_backup_dies() -> None:
    st = FailoverState(failover_after=3.0, failback_after=60.0)
    assert st.update(0.0, False, True) == (None, True)
    assert st.update(3.0, False, True) == (BACKUP, True)
    st.shown(BACKUP)
    assert st.update(4.0, True, False) == (PRIMARY, True)


# ------------------------------------------------------------------ failover source


class Feed:
    """A publisher pushing real H.264 into one path."""

    def __init__(self, reg: StreamRegistry, path: str, ssrc: int, gop: int = 5) -> None:
        self.stream = reg.get_or_create(path)
        self.pub = Pub(path)
        self.enc = Encoder(gop=gop)
        self.mk = RtpMaker(ssrc, ssrc & 0xFFFF, ssrc * 7)
        self.sdp = SessionDescription.parse(SDP_AV)

    def up(self) -> None:
        self.stream.publish(self.pub, self.sdp)

    def down(self) -> None:
        self.stream.unpublish(self.pub, "encoder died")

    def frames(self, n: int) -> None:
        for _ in range(n):
            push(self.stream, self.mk.video(self.enc.next_au()))


def test_failover_and_failback_keep_the_reader_on_one_continuous_stream() -> None:
    reg = StreamRegistry(gop_cache_bytes=1 << 24, media_timeout=15.0, max_streams=16)
    cfg = Config()
    gate, bus = Gate(cfg), EventBus()
    events: list[SourceSwitched] = []
    bus.subscribe(lambda ev: events.append(ev) if isinstance(ev, SourceSwitched) else None)
    cam = reg.get_or_create("cam")
    src = FailoverSource(
        cam, reg, "cam-p", "cam-b", SourcesConfig(failover_after=3.0, failback_after=60.0),
        gate=gate, bus=bus,
    )  # fmt: skip
    primary, backup = Feed(reg, "cam-p", 0x1111), Feed(reg, "cam-b", 0x2222)
    primary.up()
    backup.up()
    primary.frames(3)
    backup.frames(3)
    src.step(0.0)
    assert src.active == PRIMARY and cam.publisher is src
    assert gate.holder("cam") is src  # admitted by the publish gate like any ingest
    with pytest.raises(Refusal):  # a push to the camera's path is refused
        gate.admit_publish("cam", PlainCredentials(), Pub("intruder"))
    reader = Collect()
    cam.add_reader(reader)
    primary.frames(5)
    backup.frames(5)
    n_primary = len(reader.packets())
    assert n_primary > 0
    primary.down()
    src.step(1.0)
    backup.frames(2)
    src.step(3.9)
    assert src.active == PRIMARY and len(reader.packets()) == n_primary
    src.step(4.0)  # gone 3 s: the backup, from its GOP cache at once
    assert src.active == BACKUP
    assert len(reader.packets()) > n_primary
    backup.frames(6)
    primary.up()
    primary.frames(2)
    src.step(10.0)
    src.step(70.0)  # back 60 s: waits for the primary's next live keyframe
    assert src.pending == PRIMARY and src.active == BACKUP
    backup.frames(2)
    primary.frames(5)  # the IDR comes within a GOP
    assert src.active == PRIMARY
    backup.frames(3)
    primary.frames(3)
    heads = [header(p) for p in reader.packets()]
    assert len({ssrc for _s, _t, ssrc in heads}) == 1
    for (s1, t1, _), (s2, t2, _) in itertools.pairwise(heads):
        assert (s2 - s1) & 0xFFFF == 1
        assert 0 <= (t2 - t1) & 0xFFFFFFFF < 90000 * 5
    assert reader.closed == []
    assert [(e.path, e.old, e.new) for e in events] == [
        ("cam", "", "cam-p"),
        ("cam", "cam-p", "cam-b"),
        ("cam", "cam-b", "cam-p"),
    ]
    assert src.info()["switches"] == 2
    primary.down()
    backup.down()
    src.step(80.0)
    src.step(83.0)  # both gone 3 s: the camera goes offline and frees its path
    assert src.active is None and cam.publisher is None and gate.holder("cam") is None


# ------------------------------------------------------------------ giving up: event and hook


class _Refused:
    """A connection attempt that fails like a server that is down."""

    def __init__(self, uri: str, _src: object) -> None:
        self.uri = uri

    async def open(self) -> SessionDescription:
        raise PullError(f"{self.uri}: connection refused")

    async def run(self, idle_timeout: float) -> None:  # pragma: no cover - never opened
        raise AssertionError("not opened")

    async def close(self) -> None:
        pass


async def test_a_pull_that_gives_up_publishes_source_failed_and_runs_the_hook(
    tmp_path: Path,
) -> None:
    bus = EventBus()
    got: list[SourceFailed] = []
    bus.subscribe(got.append, SourceFailed)  # type: ignore[arg-type]
    out = tmp_path / "hook.out"
    hooks = Hooks(
        (
            HookConfig(
                on="source_failed",
                command=f'printf "%s|%s|%s" "$ONVIFCAM_EVENT" "$ONVIFCAM_PATH" '
                f'"$ONVIFCAM_REASON" > {out}',
            ),
        ),
        bus,
    )
    await hooks.start()
    reg = StreamRegistry(gop_cache_bytes=1 << 20, media_timeout=15, max_streams=4)
    cfg = SourcesConfig(retry_interval=0.02, switch_after=0.05, give_up_after=0.2)
    src = PullSource(
        reg.get_or_create("cam"),
        ["rtsp://u:pw@127.0.0.1:9/a", "rtsp://127.0.0.1:9/b"],
        cfg,
        bus=bus,
        connect=_Refused,
    )
    try:
        src.start()
        for _ in range(300):
            if hooks.stats()["runs"]:  # the hook ran and ended
                break
            await asyncio.sleep(0.02)
        assert src.status == Status.FAILED and not src.running
        assert len(got) == 1 and got[0].path == "cam"
        assert "no media for 0.2 s from any of 2 URIs" in got[0].reason
        assert "connection refused" in got[0].reason and "pw" not in got[0].source
        event, path, reason = out.read_text().split("|", 2)
        assert (event, path) == ("source_failed", "cam")
        assert reason == got[0].reason
        assert hooks.stats()["runs"] == {"source_failed:ok": 1}
    finally:
        await src.stop()
        await hooks.stop()


@pytest.mark.parametrize(
    ("sid", "want"),
    [(1.0, 1), (7.0, 7), (float("inf"), None), (float("nan"), None), (0.0, None),
     (2.0**80, None), (1.5, None), ("1", None), (True, None), (None, None)],
)  # fmt: skip
def test_a_hostile_create_stream_result_is_refused_not_raised(
    sid: object, want: int | None
) -> None:
    """createStream answered with Infinity, NaN, a string or a huge number: no OverflowError
    (which ended the pull task for good), just 'createStream failed'."""
    from onvifcam.rtmp.client import stream_id_of

    assert stream_id_of(["_result", 2.0, None, sid]) == want
    assert stream_id_of(["_result", 2.0]) is None


def test_a_result_with_a_non_numeric_transaction_id_is_ignored() -> None:
    """A `_result` whose transaction id is an object raised TypeError (unhashable) inside the
    read task, which then died without an error; it is ignored now."""
    from onvifcam.rtmp import amf0, chunk
    from onvifcam.rtmp.chunk import Message
    from onvifcam.rtmp.client import RtmpPublisher

    loop = asyncio.new_event_loop()
    try:
        pub = RtmpPublisher()
        waiting = loop.create_future()
        pub._waiters[1.0] = waiting  # a call in flight, as during connect
        for tid in ({"a": 1.0}, [1.0], "x", None):
            payload = amf0.encode("_result", tid, None, 1.0)
            pub._message(Message(chunk.AMF0_COMMAND, 0, 0, 3, payload))
        assert not waiting.done()
        pub._message(Message(chunk.AMF0_COMMAND, 0, 0, 3, amf0.encode("_result", 1.0, None, 1.0)))
        assert waiting.result()[1] == 1.0
    finally:
        loop.close()
