"""RtmpPuller.run without a socket: how a play ends (silence, close) and that it leaves no
task behind however many idle periods it waited through."""

from __future__ import annotations

import asyncio

import pytest

from onvifcam.rtmp.client import RtmpPuller
from onvifcam.rtsp.client import PullError


def test_silence_ends_the_play_and_leaves_no_task() -> None:
    async def go() -> None:
        p = RtmpPuller("rtmp://127.0.0.1/live/cam", on_rtp=lambda _t, _p: None)
        before = len(asyncio.all_tasks())
        feeding = True

        async def feed() -> None:  # data arrives for a while: many idle periods pass
            while feeding:
                p.parser.bytes_received += 1
                await asyncio.sleep(0.005)

        feeder = asyncio.create_task(feed())
        run = asyncio.create_task(p.run(0.01))
        await asyncio.sleep(0.2)
        assert len(asyncio.all_tasks()) <= before + 3  # feeder, run, one closed-waiter
        feeding = False
        await feeder
        with pytest.raises(PullError, match=r"no data for 0\.01 s"):
            await run
        await asyncio.sleep(0)
        assert len(asyncio.all_tasks()) == before

    asyncio.run(go())


def test_a_close_ends_the_play_with_the_reason() -> None:
    async def go() -> None:
        p = RtmpPuller("rtmp://127.0.0.1/live/cam", on_rtp=lambda _t, _p: None)
        asyncio.get_running_loop().call_later(0.02, p.closed.set)
        with pytest.raises(PullError, match="the server closed the connection"):
            await p.run(5.0)

    asyncio.run(go())
