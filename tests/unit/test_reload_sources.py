"""What a reload does to sources, placeholders and forwarders: the pure diff
(:func:`plan_sources`), the summary App._reload reports, and SourceManager.reconcile acting
per source (on-demand pulls and forwarders without a live source open no socket)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from onvifcam.app import App
from onvifcam.config import CameraConfig, Config, ForwardConfig, from_dict
from onvifcam.media.stream import StreamRegistry
from onvifcam.sources.manager import SourceManager, SourceSpec, plan_sources, source_spec

UP = "rtsp://127.0.0.1:1/up"


def cam(name: str, **kw: Any) -> CameraConfig:
    return CameraConfig(name=name, path=kw.pop("path", name), **kw)


def fwd(url: str) -> ForwardConfig:
    return ForwardConfig(url=url)


# ---------------------------------------------------------------------- plan_sources


def test_unchanged_cameras_give_an_empty_plan() -> None:
    cams = [cam("a", source=UP), cam("b", source="file:///x.mp4", forward=(fwd(UP + "/f"),))]
    plan = plan_sources(cams, list(cams))
    assert plan.empty and plan.stop == [] and plan.start == [] and plan.forward_start == []


def test_a_changed_uri_restarts_that_source_only() -> None:
    old = [cam("a", source=UP), cam("b", source=UP + "2")]
    new = [cam("a", source=(UP + "-new", UP)), cam("b", source=UP + "2")]
    plan = plan_sources(old, new)
    assert plan.stop == [("a", SourceSpec("pull", "a", (UP,)))]
    assert plan.start == [("a", SourceSpec("pull", "a", (UP + "-new", UP)))]
    assert plan.close_readers == []  # a source takes over: readers stay
    assert plan.changed == {"a": ["source"]}
    assert plan.summary()["restarted"] == [f"a: pull {UP}-new, {UP}"]
    assert plan.summary()["started"] == plan.summary()["stopped"] == []


def test_on_demand_and_kind_changes_restart_the_source() -> None:
    plan = plan_sources([cam("a", source=UP)], [cam("a", source=UP, on_demand=True)])
    assert [k for k, _s in plan.start] == ["a"] and plan.start[0][1].on_demand
    plan = plan_sources([cam("a", source=UP)], [cam("a", source="file:///c.mp4")])
    assert plan.stop[0][1].kind == "pull" and plan.start[0][1].kind == "file"
    plan = plan_sources([cam("a", primary="p", backup="q")], [cam("a", primary="p", backup="r")])
    assert plan.stop[0][1].backup == "q" and plan.start[0][1].backup == "r"


def test_a_removed_source_stops_and_its_readers_are_closed() -> None:
    plan = plan_sources([cam("a", source=UP), cam("b")], [cam("a"), cam("b")])
    assert plan.stop == [("a", SourceSpec("pull", "a", (UP,)))] and plan.start == []
    assert plan.close_readers == ["a"]
    assert plan.summary()["stopped"] == [f"a: pull {UP}"]
    # the camera removed with its source: the same
    plan = plan_sources([cam("a", source=UP), cam("b")], [cam("b")])
    assert plan.close_readers == ["a"] and plan.changed == {"a": ["source"]}


def test_an_added_camera_starts_its_source_and_forwards() -> None:
    plan = plan_sources([cam("b")], [cam("b"), cam("a", source=UP, forward=(fwd(UP + "/m"),))])
    assert plan.start == [("a", SourceSpec("pull", "a", (UP,)))]
    assert plan.forward_start == [("a", "a[0]", fwd(UP + "/m"))]
    assert plan.placeholder_on == []  # the camera registry's on_added does that
    assert plan.changed == {"a": ["source", "forward"]}


def test_a_moved_camera_stops_the_old_path_and_starts_the_new_one() -> None:
    old = [cam("a", path="p1", source=UP, offline="placeholder")]
    new = [cam("a", path="p2", source=UP, offline="placeholder")]
    plan = plan_sources(old, new)
    assert [s.path for _k, s in plan.stop] == ["p1"] and [s.path for _k, s in plan.start] == ["p2"]
    assert plan.close_readers == ["p1"]
    assert plan.placeholder_off == ["p1"] and plan.placeholder_on == ["a"]


def test_only_the_forward_entries_that_changed_are_planned() -> None:
    one, two, three = fwd(UP + "/1"), fwd(UP + "/2"), fwd(UP + "/3")
    plan = plan_sources([cam("a", forward=(one, two))], [cam("a", forward=(one, three, two))])
    assert plan.forward_stop == []
    assert plan.forward_start == [("a", "a[1]", three)]
    plan = plan_sources([cam("a", forward=(one, two))], [cam("a", forward=(two,))])
    assert plan.forward_stop == [("a", one)] and plan.forward_start == []
    # a changed setting of one entry replaces that entry
    slow = ForwardConfig(url=UP + "/2", retry_timeout=9.0)
    plan = plan_sources([cam("a", forward=(one, two))], [cam("a", forward=(one, slow))])
    assert plan.forward_stop == [("a", two)] and plan.forward_start == [("a", "a[1]", slow)]
    assert plan.summary()["forwards_started"] == [f"a -> {UP}/2"]


def test_offline_changes_of_a_kept_camera_toggle_its_placeholder() -> None:
    plan = plan_sources([cam("a")], [cam("a", offline="placeholder")])
    assert plan.placeholder_on == ["a"] and plan.changed == {"a": ["offline"]}
    plan = plan_sources([cam("a", offline="placeholder")], [cam("a", offline="none")])
    assert plan.placeholder_off == ["a"] and plan.placeholder_on == []
    # "" follows [onvif] offline
    plan = plan_sources([cam("a")], [cam("a", offline="placeholder")], "placeholder")
    assert plan.empty


def test_passwords_never_reach_the_summary() -> None:
    secret = "rtsp://u:hunter22@127.0.0.1:1/x"
    plan = plan_sources([cam("a")], [cam("a", source=secret, forward=(fwd(secret),))])
    assert "hunter22" not in repr(plan.summary())


def _fleet_cfg(count: int, **extra: Any) -> Config:
    fleet = {"name": "lot", "count": count, "source": "rtsp://127.0.0.1:1/up/{n}", **extra}
    return from_dict({"fleets": [fleet]})


def test_a_fleet_change_starts_and_stops_the_sources_of_its_cameras() -> None:
    two, three = _fleet_cfg(2).cameras, _fleet_cfg(3).cameras
    plan = plan_sources(two, three)
    assert plan.start == [("lot-3", SourceSpec("pull", "lot/3", ("rtsp://127.0.0.1:1/up/3",)))]
    assert plan.stop == []
    plan = plan_sources(three, two)
    assert [k for k, _s in plan.stop] == ["lot-3"] and plan.close_readers == ["lot/3"]
    fwd_cfg = _fleet_cfg(2, forward=[{"url": "rtsp://127.0.0.1:1/m/{n}"}])
    plan = plan_sources(two, fwd_cfg.cameras)
    assert [(p, n, f.url) for p, n, f in plan.forward_start] == [
        ("lot/1", "lot-1[0]", "rtsp://127.0.0.1:1/m/1"),
        ("lot/2", "lot-2[0]", "rtsp://127.0.0.1:1/m/2"),
    ]
    assert plan.stop == []  # the pulls did not change


def test_source_spec_kinds() -> None:
    assert source_spec(cam("a")) is None
    assert source_spec(cam("a", path="/x/y/", source=UP)) == SourceSpec("pull", "x/y", (UP,))
    assert source_spec(cam("a", source="file:///c.mp4")).kind == "file"  # type: ignore[union-attr]


# ---------------------------------------------------------------------- App summary


def _app_cfg(tmp: Path, cameras: list[dict[str, Any]], **extra: Any) -> Config:
    return from_dict({"server": {"host": "127.0.0.1", "state_dir": str(tmp)},
                      "cameras": cameras, **extra})  # fmt: skip


def _summary() -> dict[str, Any]:
    return {"cameras": {"added": [], "updated": [], "removed": [], "refused": {}},
            "sources": {}, "applied": [], "restart_needed": []}  # fmt: skip


def test_reload_applies_source_forward_and_offline_instead_of_asking_for_a_restart(
    tmp_path: Path,
) -> None:
    async def go() -> None:
        app = App(_app_cfg(tmp_path, [{"name": "a", "path": "a", "source": UP}]))
        app.cameras.load()
        new = _app_cfg(
            tmp_path,
            [{"name": "a", "path": "a", "source": UP + "2", "offline": "placeholder",
              "forward": [{"url": UP + "/m"}], "sub_stream": "transcode"}],
        )  # fmt: skip
        summary = _summary()
        app._apply(new, summary)
        await app._apply_sources(summary)
        assert summary["cameras"]["updated"] == ["a"]
        assert summary["restart_needed"] == [
            "camera 'a' sub_stream (the transcoded sub stream is set up at start)"
        ]
        assert "camera 'a' source, forward, offline" in summary["applied"]
        assert summary["sources"]["restarted"] == [f"a: pull {UP}2"]
        assert summary["sources"]["forwards_started"] == [f"a -> {UP}/m"]
        assert app.sources.cfg.cameras == app.cfg.cameras
        app.cameras.close()

    asyncio.run(go())


def test_a_refused_camera_keeps_its_old_source(tmp_path: Path) -> None:
    async def go() -> None:
        cams = [{"name": "a", "path": "a", "source": UP}, {"name": "b", "path": "b"}]
        app = App(_app_cfg(tmp_path, cams))
        app.cameras.load()
        # a and b swap paths: the registry refuses both (each path is still shown)
        new = _app_cfg(tmp_path, [{"name": "a", "path": "b", "source": UP + "x"},
                                  {"name": "b", "path": "a", "source": UP + "b"}])  # fmt: skip
        summary = _summary()
        app._apply(new, summary)
        await app._apply_sources(summary)
        assert set(summary["cameras"]["refused"]) == {"a", "b"}
        assert all(v == [] for v in summary["sources"].values()), summary
        assert not [a for a in summary["applied"] if a.startswith("camera")]
        app.cameras.close()

    asyncio.run(go())


# ---------------------------------------------------------------------- reconcile


class _Watcher:
    """A reader that only notes what happens to it."""

    closed = ""

    def deliver(self, batch: object) -> None:
        pass

    def stream_closed(self, reason: str) -> None:
        self.closed = reason

    def kick(self, reason: str) -> None:
        self.closed = reason


def test_reconcile_acts_per_source_and_leaves_the_others_alone() -> None:
    async def go() -> None:
        def cfg(cams: list[dict[str, Any]]) -> Config:
            return from_dict({"cameras": cams})

        keep = {"name": "keep", "path": "keep", "source": UP, "on_demand": True,
                "forward": [{"url": "rtsp://127.0.0.1:1/k"}]}  # fmt: skip
        moved = {"name": "m", "path": "m", "source": UP + "m", "on_demand": True,
                 "forward": [{"url": "rtsp://127.0.0.1:1/m1"}]}  # fmt: skip
        gone = {"name": "g", "path": "g", "source": UP + "g", "on_demand": True}
        old = cfg([keep, moved, gone])
        registry = StreamRegistry(gop_cache_bytes=1 << 20, media_timeout=5, max_streams=10)
        mgr = SourceManager(old, registry)
        await mgr.start()
        try:
            kept_pull, kept_fwd = mgr.pulls["keep"], mgr.forwarders_of("keep")[0]
            new_moved = {**moved, "source": UP + "m2",
                         "forward": [{"url": "rtsp://127.0.0.1:1/m2"}]}  # fmt: skip
            added = {"name": "n", "path": "n", "source": UP + "n", "on_demand": True}
            watcher = _Watcher()  # a reader of m that stays across the reload
            registry.get_or_create("m").add_reader(watcher)
            plan = await mgr.reconcile(old, cfg([keep, new_moved, added]))
            assert plan.close_readers == ["g"]
            assert set(mgr.pulls) == {"keep", "m", "n"}
            assert mgr.pulls["keep"] is kept_pull  # untouched
            assert mgr.pulls["m"].uris == [UP + "m2"]
            # on demand, but its reader stays and sends no new DESCRIBE: it starts at once
            assert mgr.pulls["m"].running and not watcher.closed
            assert mgr.forwarders_of("keep") == [kept_fwd]
            assert [f.url for f in mgr.forwarders_of("m")] == ["rtsp://127.0.0.1:1/m2"]
            assert len(mgr.forwarders) == 2
            # the on-demand hook finds the new pull (it starts when a reader wants it)
            assert registry.demand("n") and mgr.pulls["n"].running
            assert not registry.demand("g")
        finally:
            await mgr.stop()

    asyncio.run(go())
