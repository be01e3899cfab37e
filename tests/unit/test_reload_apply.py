"""App._apply without sockets: which reloaded keys reach the servers that check them."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from pathlib import Path
from typing import Any

from onvifcam.app import App
from onvifcam.config import Config, PathConfig, SrtConfig, from_dict


def _cfg(tmp: Path, **extra: Any) -> Config:
    data: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "state_dir": str(tmp)},
        "onvif": {"username": "admin", "password": "old-pw"},
        "srt": {"passphrase": "old passphrase 1"},
        "metrics": {"token": "old-metrics-token"},
        "paths": {"cam": {"srt_passphrase": "old path passphrase"}},
        **extra,
    }
    return from_dict(data)


def _summary() -> dict[str, Any]:
    return {"cameras": {"added": [], "updated": [], "removed": [], "refused": {}},
            "applied": [], "restart_needed": []}  # fmt: skip


def test_credentials_reach_every_checker(tmp_path: Path) -> None:
    async def go() -> None:
        app = App(_cfg(tmp_path))
        assert app.srt is not None
        new = _cfg(
            tmp_path,
            onvif={"username": "admin", "password": "new-pw", "max_users": 5},
            srt={"passphrase": "new passphrase 1"},
            metrics={"token": "new-metrics-token"},
            paths={"cam": {"srt_passphrase": "new path passphrase", "on_conflict": "replace"}},
        )
        summary = _summary()
        app._apply(new, summary)
        assert summary["restart_needed"] == ["[onvif] max_users"]
        assert "[onvif] password" in summary["applied"]
        assert "[srt] passphrase" in summary["applied"]
        assert "[metrics] token" in summary["applied"]
        assert app.srt.passphrase_for("cam") == "new path passphrase"
        assert app.srt.passphrase_for("other") == "new passphrase 1"
        assert app.metrics.cfg.token == "new-metrics-token"
        assert app.gate.cfg.path_policy("cam").on_conflict == "replace"
        for server in (app.rtsp, app.rtmp, app.whip):
            if server is not None:
                assert server.cfg.path_policy("cam").on_conflict == "replace"
        assert app.cfg.onvif.password == "new-pw"
        assert app.cfg.onvif.max_users != 5  # needs a restart: left as it was
        assert app.web.api._password == "new-pw"  # the API's fallback login

    asyncio.run(go())


def test_unchanged_config_applies_nothing(tmp_path: Path) -> None:
    async def go() -> None:
        cfg = _cfg(tmp_path)
        app = App(cfg)
        summary = _summary()
        app._apply(dataclasses.replace(app.cfg), summary)
        assert summary["applied"] == [] and summary["restart_needed"] == []
        assert isinstance(app.cfg.srt, SrtConfig) and isinstance(app.cfg.defaults, PathConfig)

    asyncio.run(go())


def test_a_changed_fleet_forward_needs_no_restart(tmp_path: Path) -> None:
    async def go() -> None:
        fleet = {"name": "lot", "count": 2}
        app = App(_cfg(tmp_path, fleets=[fleet]))
        app.cameras.load()
        url = {"url": "rtsp://127.0.0.1:1/m/{n}"}
        summary = _summary()
        app._apply(_cfg(tmp_path, fleets=[{**fleet, "forward": [url]}]), summary)
        assert summary["cameras"]["updated"] == ["lot-1", "lot-2"]
        assert summary["restart_needed"] == []  # the SourceManager applies it (reconcile)
        app.cameras.close()

    asyncio.run(go())


def test_turning_onvif_auth_off_keeps_the_login_until_a_restart(tmp_path: Path) -> None:
    """[onvif] auth = false with the users removed: applying the empty login now would open
    the API and every camera while the summary says "needs a restart"."""

    async def go() -> None:
        app = App(_cfg(tmp_path))
        summary = _summary()
        app._apply(_cfg(tmp_path, onvif={"auth": False, "username": "", "password": ""}), summary)
        assert not any(a.startswith("[onvif]") for a in summary["applied"]), summary
        assert "[onvif] username, password, auth" in summary["restart_needed"], summary
        assert (app.cfg.onvif.username, app.cfg.onvif.password) == ("admin", "old-pw")
        assert app.web.api._password == "old-pw"

    asyncio.run(go())


def test_a_client_that_gives_up_does_not_stop_the_reload_halfway(tmp_path: Path) -> None:
    """POST /api/reload whose client disconnects (aiohttp cancels the handler): the reload
    runs to its end in its own task, and the next one is accepted afterwards."""

    async def go() -> None:
        app = App(_cfg(tmp_path))
        api = app.web.api
        finished = asyncio.Event()

        async def slow_reload() -> dict[str, Any]:
            await asyncio.sleep(0.05)  # e.g. stopping pulls one by one
            finished.set()
            return {"ok": True, "source": "x"}

        api.reloader = slow_reload
        handler = asyncio.create_task(api._reload(None))  # type: ignore[arg-type]
        await asyncio.sleep(0.01)
        handler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await handler
        assert handler.cancelled()
        async with asyncio.timeout(5):
            await finished.wait()
        await asyncio.sleep(0)
        assert not api._reloading
        assert (await api._reload(None)).status == 200  # type: ignore[arg-type]

    asyncio.run(go())
