"""PTZ SetConfiguration and preset tours in-process with an injected clock (no sockets);
every response is validated against the official ONVIF schemas. The tour state machine is
also driven directly (:class:`TourRun` on a :class:`Head`)."""

from __future__ import annotations

from pathlib import Path

import pytest
from lxml import etree

from onvifcam.config import ConfigError, from_dict
from onvifcam.onvif.ptzhead import IDLE, PAUSED, TOURING, Head, Leg, TourRun
from tests.unit.test_ptz_imaging import TPTZ, TRT, TT, P, World

NS = "http://www.onvif.org/ver20/ptz/wsdl"
ABS_PT = "http://www.onvif.org/ver10/tptz/PanTiltSpaces/PositionGenericSpace"
ABS_Z = "http://www.onvif.org/ver10/tptz/ZoomSpaces/PositionGenericSpace"
C = "PTZConfig_1"
GET_CONFIG = (
    f"<GetConfiguration {TPTZ}><PTZConfigurationToken>{C}</PTZConfigurationToken>"
    "</GetConfiguration>"
)


@pytest.fixture
def w(tmp_path: Path) -> World:
    return World(tmp_path)


def set_config(
    w: World,
    *,
    name: str = "Dome",
    speed: tuple[str, str, str] = ("1", "1", "1"),
    timeout: str = "PT10S",
    pan: tuple[str, str] = ("-1", "1"),
    tilt: tuple[str, str] = ("-1", "1"),
    zoom: tuple[str, str] = ("0", "1"),
    token: str = C,
    ok: bool = True,
) -> etree._Element:
    """SetConfiguration with every field a client (ONVIF Device Manager) sends."""
    return w.call(
        f'<SetConfiguration {TPTZ}><PTZConfiguration token="{token}">'
        f'<Name xmlns="{TT}">{name}</Name><UseCount xmlns="{TT}">2</UseCount>'
        f'<NodeToken xmlns="{TT}">PTZNode_1</NodeToken>'
        f'<DefaultPTZSpeed xmlns="{TT}"><PanTilt x="{speed[0]}" y="{speed[1]}"/>'
        f'<Zoom x="{speed[2]}"/></DefaultPTZSpeed>'
        f'<DefaultPTZTimeout xmlns="{TT}">{timeout}</DefaultPTZTimeout>'
        f'<PanTiltLimits xmlns="{TT}"><Range><URI>{ABS_PT}</URI>'
        f"<XRange><Min>{pan[0]}</Min><Max>{pan[1]}</Max></XRange>"
        f"<YRange><Min>{tilt[0]}</Min><Max>{tilt[1]}</Max></YRange></Range></PanTiltLimits>"
        f'<ZoomLimits xmlns="{TT}"><Range><URI>{ABS_Z}</URI>'
        f"<XRange><Min>{zoom[0]}</Min><Max>{zoom[1]}</Max></XRange></Range></ZoomLimits>"
        "</PTZConfiguration><ForcePersistence>true</ForcePersistence></SetConfiguration>",
        ok=ok,
    )


def config_values(root: etree._Element) -> dict[str, object]:
    c = root.find(f".//{{{TT}}}NodeToken/..")
    assert c is not None
    sp = c.find(f"{{{TT}}}DefaultPTZSpeed")
    ptl = c.find(f"{{{TT}}}PanTiltLimits/{{{TT}}}Range")
    zl = c.find(f"{{{TT}}}ZoomLimits/{{{TT}}}Range")
    assert sp is not None and ptl is not None and zl is not None

    def rng(el: etree._Element, tag: str) -> tuple[float, float]:
        return (
            float(el.findtext(f"{{{TT}}}{tag}/{{{TT}}}Min") or "nan"),
            float(el.findtext(f"{{{TT}}}{tag}/{{{TT}}}Max") or "nan"),
        )

    return {
        "name": c.findtext(f"{{{TT}}}Name"),
        "speed": (sp[0].get("x"), sp[0].get("y"), sp[1].get("x")),
        "timeout": c.findtext(f"{{{TT}}}DefaultPTZTimeout"),
        "pan": rng(ptl, "XRange"),
        "tilt": rng(ptl, "YRange"),
        "zoom": rng(zl, "XRange"),
    }


def absolute(w: World, pan: float, tilt: float, zoom: float | None = None, ok: bool = True) -> None:
    z = f'<tt:Zoom xmlns:tt="{TT}" x="{zoom}"/>' if zoom is not None else ""
    w.call(
        f'<AbsoluteMove {TPTZ}>{P}<Position><tt:PanTilt xmlns:tt="{TT}" x="{pan}" y="{tilt}"/>'
        f"{z}</Position></AbsoluteMove>",
        ok=ok,
    )


# --------------------------------------------------------------------------- SetConfiguration


def test_set_configuration_is_stored_echoed_and_used(w: World) -> None:
    opts = w.call(
        f"<GetConfigurationOptions {TPTZ}><ConfigurationToken>{C}</ConfigurationToken>"
        "</GetConfigurationOptions>"
    )
    assert opts.findtext(f".//{{{TT}}}PTZTimeout/{{{TT}}}Min") == "PT1S"
    assert opts.findtext(f".//{{{TT}}}PTZTimeout/{{{TT}}}Max") == "PT1M"
    set_config(
        w,
        name="Dome A",
        speed=("0.5", "0.5", "0.25"),
        timeout="PT2S",
        pan=("-0.5", "0.5"),
        tilt=("-0.25", "0.75"),
        zoom=("0", "0.5"),
    )
    want = {
        "name": "Dome A",
        "speed": ("0.5", "0.5", "0.25"),
        "timeout": "PT2S",
        "pan": (-0.5, 0.5),
        "tilt": (-0.25, 0.75),
        "zoom": (0.0, 0.5),
    }
    get = GET_CONFIG
    assert config_values(w.call(get)) == want
    assert config_values(w.call(f"<GetProfile {TRT}>{P}</GetProfile>")) == want
    w.load()  # restart: persisted in the camera's state
    assert config_values(w.call(get)) == want
    assert config_values(w.call(f"<GetConfigurations {TPTZ}/>")) == want
    # the limits bound AbsoluteMove and ContinuousMove
    absolute(w, 0.8, 0.0, ok=False)
    assert w.subcodes[-1] == "ter:InvalidPosition"
    # no Speed: DefaultPTZSpeed (0.5 x 1 unit/s): 0.5 units take 1 s
    absolute(w, 0.5, 0.0)
    w.clock.t += 0.5
    assert w.status() == ((0.25, 0.0, 0.0), ("MOVING", "IDLE"))
    w.clock.t += 0.5
    assert w.status()[1] == ("IDLE", "IDLE")
    # no Timeout: DefaultPTZTimeout (2 s); the pan limit stops it first
    w.call(
        f'<ContinuousMove {TPTZ}>{P}<Velocity><tt:PanTilt xmlns:tt="{TT}" x="0" y="0.1"/>'
        f'<tt:Zoom xmlns:tt="{TT}" x="1"/></Velocity></ContinuousMove>'
    )
    w.clock.t += 1.5
    assert w.status()[1] == ("MOVING", "IDLE")  # zoom hit its 0.5 limit after 1 s
    w.clock.t += 1
    assert w.status() == ((0.5, 0.2, 0.5), ("IDLE", "IDLE"))  # tilt stopped at 2 s


def test_narrower_limits_pull_the_head_in_and_inf_means_off(w: World) -> None:
    absolute(w, 1.0, 1.0, 1.0)
    w.clock.t += 10
    set_config(w, pan=("-0.5", "0.5"), zoom=("0", "0.5"))
    w.clock.t += 10
    assert w.status() == ((0.5, 1.0, 0.5), ("IDLE", "IDLE"))
    set_config(w, pan=("-INF", "INF"), tilt=("-INF", "INF"), zoom=("-INF", "INF"))
    get = GET_CONFIG
    got = config_values(w.call(get))
    assert (got["pan"], got["tilt"], got["zoom"]) == ((-1.0, 1.0), (-1.0, 1.0), (0.0, 1.0))


@pytest.mark.parametrize(
    ("kwargs", "subcode", "text"),
    [
        ({"pan": ("-1.5", "1")}, "ter:ConfigModify", "PanTiltLimits XRange -1.5..1"),
        ({"tilt": ("0.5", "0.2")}, "ter:ConfigModify", "Min <= Max"),
        ({"zoom": ("0", "NaN")}, "ter:ConfigModify", "ZoomLimits XRange Max 'NaN'"),
        ({"timeout": "PT0.5S"}, "ter:ConfigModify", "ptz_max_timeout"),
        ({"timeout": "PT2M"}, "ter:ConfigModify", "outside PT1S..PT1M"),
        ({"timeout": "soon"}, "ter:ConfigModify", "xs:duration"),
        ({"speed": ("2", "1", "1")}, "ter:ConfigModify", "DefaultPTZSpeed"),
        ({"name": ""}, "ter:ConfigModify", "Name"),
        ({"token": "other"}, "ter:NoConfig", "no PTZ configuration"),
    ],
)
def test_set_configuration_faults(
    w: World, kwargs: dict[str, object], subcode: str, text: str
) -> None:
    root = set_config(w, ok=False, **kwargs)  # type: ignore[arg-type]
    assert w.subcodes == ["ter:InvalidArgVal", subcode]
    assert text in reason(root)
    get = GET_CONFIG
    assert config_values(w.call(get))["name"] == "PTZConfig"  # nothing stored


# --------------------------------------------------------------------------- tours


def preset_at(w: World, name: str, pan: float, tilt: float, zoom: float) -> str:
    absolute(w, pan, tilt, zoom)
    w.clock.t += 10
    root = w.call(f"<SetPreset {TPTZ}>{P}<PresetName>{name}</PresetName></SetPreset>")
    return root.findtext(f"{{{NS}}}PresetToken") or root.findtext(f".//{{{NS}}}PresetToken") or ""


def create_tour(w: World) -> str:
    root = w.call(f"<CreatePresetTour {TPTZ}>{P}</CreatePresetTour>")
    return root.findtext(f".//{{{NS}}}PresetTourToken") or ""


def modify_tour(w: World, token: str, spots: str, cond: str = "", ok: bool = True) -> None:
    w.call(
        f'<ModifyPresetTour {TPTZ}>{P}<PresetTour token="{token}"><Name xmlns="{TT}">round</Name>'
        f'<Status xmlns="{TT}"><State>Idle</State></Status>'
        f'<AutoStart xmlns="{TT}">false</AutoStart>'
        f'<StartingCondition xmlns="{TT}">{cond}</StartingCondition>{spots}</PresetTour>'
        "</ModifyPresetTour>",
        ok=ok,
    )


def spot(detail: str, stay: str = "PT2S", speed: str = "") -> str:
    return (
        f'<TourSpot xmlns="{TT}"><PresetDetail>{detail}</PresetDetail>{speed}'
        f"<StayTime>{stay}</StayTime></TourSpot>"
    )


def operate(w: World, token: str, op: str, ok: bool = True) -> None:
    w.call(
        f"<OperatePresetTour {TPTZ}>{P}<PresetTourToken>{token}</PresetTourToken>"
        f"<Operation>{op}</Operation></OperatePresetTour>",
        ok=ok,
    )


def tour_status(w: World, token: str) -> tuple[str, str | None]:
    root = w.call(
        f"<GetPresetTour {TPTZ}>{P}<PresetTourToken>{token}</PresetTourToken></GetPresetTour>"
    )
    state = root.findtext(f".//{{{TT}}}Status/{{{TT}}}State") or ""
    cur = root.find(f".//{{{TT}}}Status/{{{TT}}}CurrentTourSpot/{{{TT}}}PresetDetail")
    return state, (None if cur is None else etree.tostring(cur[0], encoding=str))


def test_tour_moves_the_head_through_its_spots(w: World) -> None:
    a = preset_at(w, "a", 0.5, 0.0, 0.0)
    b = preset_at(w, "b", -0.5, 0.0, 0.0)
    root = w.call(f"<GetNodes {TPTZ}/>")
    sup = root.find(f".//{{{TT}}}SupportedPresetTour")
    assert sup is not None and sup.findtext(f"{{{TT}}}MaximumNumberOfPresetTours") == "8"
    assert [e.text for e in sup.findall(f"{{{TT}}}PTZPresetTourOperation")] == [
        "Start",
        "Stop",
        "Pause",
    ]
    tok = create_tour(w)
    opts = w.call(f"<GetPresetTourOptions {TPTZ}>{P}</GetPresetTourOptions>")
    assert [e.text for e in opts.iter(f"{{{TT}}}PresetToken")] == [a, b]
    assert opts.findtext(f".//{{{TT}}}StayTime/{{{TT}}}Min") == "PT1S"
    # the head is at b; a at 1 unit/s is 1 s away, b 1 s more, the spot at pan 0 0.5 s
    modify_tour(
        w,
        tok,
        spot(f"<PresetToken>{a}</PresetToken>")
        + spot(f"<PresetToken>{b}</PresetToken>", stay="PT1S")
        + spot(
            f'<PTZPosition><PanTilt x="0" y="0.5" space="{ABS_PT}"/></PTZPosition>',
            speed='<Speed><PanTilt x="0.5" y="0.5"/></Speed>',
        ),
        "<RecurringTime>2</RecurringTime><Direction>Forward</Direction>",
    )
    assert tour_status(w, tok) == ("Idle", None)
    operate(w, tok, "Start")
    w.clock.t += 0.5
    assert w.status() == ((0.0, 0.0, 0.0), ("MOVING", "IDLE"))
    state, cur = tour_status(w, tok)
    assert state == "Touring" and cur is not None and a in cur
    w.clock.t += 1.5  # at a since 1 s, staying 2 s
    assert w.status() == ((0.5, 0.0, 0.0), ("IDLE", "IDLE"))
    w.clock.t += 1.5  # left a at 3 s, 0.5 s toward b
    assert w.status()[0] == (0.0, 0.0, 0.0)
    # pause holds the head; a resume continues the same spot
    operate(w, tok, "Pause")
    w.clock.t += 30
    assert w.status() == ((0.0, 0.0, 0.0), ("IDLE", "IDLE"))
    assert tour_status(w, tok)[0] == "Paused"
    operate(w, tok, "Start")
    w.clock.t += 0.5  # at b
    w.clock.t += 1.0  # stayed 1 s at b; toward (0, 0.5) at 0.5 units/s: 1 s
    w.clock.t += 0.5
    assert w.status() == ((-0.25, 0.25, 0.0), ("MOVING", "IDLE"))
    # second pass, then the tour ends (RecurringTime 2) where its last spot is
    w.clock.t += 0.5 + 2 + 1.0 + 2 + 2 + 1 + 1 + 2
    assert tour_status(w, tok) == ("Idle", None)
    assert w.status() == ((0.0, 0.5, 0.0), ("IDLE", "IDLE"))
    # a manual move ends a touring tour
    operate(w, tok, "Start")
    w.clock.t += 0.25
    absolute(w, 0.0, 0.0)
    assert tour_status(w, tok) == ("Idle", None)
    w.call(f"<Stop {TPTZ}>{P}</Stop>")
    # definitions persist; runs do not
    operate(w, tok, "Start")
    w.load()
    root = w.call(f"<GetPresetTours {TPTZ}>{P}</GetPresetTours>")
    tours = root.findall(f".//{{{NS}}}PresetTour")
    assert [t.get("token") for t in tours] == [tok]
    assert tours[0].findtext(f"{{{TT}}}Status/{{{TT}}}State") == "Idle"
    assert len(tours[0].findall(f"{{{TT}}}TourSpot")) == 3
    assert tours[0].findtext(f".//{{{TT}}}RecurringTime") == "2"
    w.call(
        f"<RemovePresetTour {TPTZ}>{P}<PresetTourToken>{tok}</PresetTourToken></RemovePresetTour>"
    )
    assert (
        w.call(f"<GetPresetTours {TPTZ}>{P}</GetPresetTours>").find(f".//{{{NS}}}PresetTour")
        is None
    )


def test_tour_backward_duration_and_stop(w: World) -> None:
    tok = create_tour(w)
    modify_tour(
        w,
        tok,
        spot(f'<PTZPosition><PanTilt x="1" y="0" space="{ABS_PT}"/></PTZPosition>', "PT1S")
        + spot("<Home>true</Home>", "PT1S"),
        "<RecurringDuration>PT10S</RecurringDuration><Direction>Backward</Direction>",
    )
    operate(w, tok, "Start")
    w.clock.t += 0.5
    assert w.status() == ((0.0, 0.0, 0.0), ("IDLE", "IDLE"))  # home first: already there
    w.clock.t += 1.0  # toward pan 1 since 1 s
    assert w.status() == ((0.5, 0.0, 0.0), ("MOVING", "IDLE"))
    w.clock.t += 100  # RecurringDuration ends it at 10 s: passes of 3, 4 and 3 s
    assert tour_status(w, tok) == ("Idle", None)
    assert w.status() == ((1.0, 0.0, 0.0), ("IDLE", "IDLE"))
    operate(w, tok, "Start")  # home first again: 1 s back from pan 1
    w.clock.t += 0.5
    operate(w, tok, "Stop")
    w.clock.t += 5
    assert w.status() == ((0.5, 0.0, 0.0), ("IDLE", "IDLE"))
    assert tour_status(w, tok) == ("Idle", None)
    operate(w, tok, "Stop")  # stopping an idle tour is fine


def reason(root: etree._Element) -> str:
    return root.findtext(".//{http://www.w3.org/2003/05/soap-envelope}Text") or ""


def test_tour_faults_and_bounds(w: World) -> None:
    a = preset_at(w, "a", 0.5, 0.0, 0.0)
    tok = create_tour(w)
    operate(w, tok, "Start", ok=False)
    assert w.subcodes[-1] == "ter:ActivationFailed"
    for spots, cond, text in (
        (spot("<PresetToken>nope</PresetToken>"), "", "no preset"),
        (spot("<Home>true</Home>", stay="PT0.5S"), "", "StayTime"),
        (spot(f'<PTZPosition><Zoom x="2" space="{ABS_Z}"/></PTZPosition>'), "", "zoom 2 is"),
        (spot("<Home>true</Home>") * 33, "", "ptz_max_tour_spots"),
        (spot("<Home>true</Home>"), "<RecurringTime>-1</RecurringTime>", "RecurringTime"),
        (spot("<Home>true</Home>"), "<Direction>Extended</Direction>", "Direction"),
    ):
        root = w.call(
            f'<ModifyPresetTour {TPTZ}>{P}<PresetTour token="{tok}">'
            f'<Status xmlns="{TT}"><State>Idle</State></Status>'
            f'<AutoStart xmlns="{TT}">false</AutoStart>'
            f'<StartingCondition xmlns="{TT}">{cond}</StartingCondition>{spots}</PresetTour>'
            "</ModifyPresetTour>",
            ok=False,
        )
        assert w.subcodes[-1] == "ter:InvalidPresetTour" and text in reason(root), reason(root)
    other = create_tour(w)
    modify_tour(w, tok, spot(f"<PresetToken>{a}</PresetToken>"))
    modify_tour(w, other, spot("<Home>true</Home>"))
    operate(w, tok, "Start")
    operate(w, other, "Start", ok=False)
    assert w.subcodes[-1] == "ter:ActivationFailed"
    operate(w, tok, "Extended", ok=False)
    assert w.subcodes[-1] == "ter:InvalidArgVal"
    operate(w, "nope", "Start", ok=False)
    assert w.subcodes[-1] == "ter:NoToken"
    operate(w, tok, "Stop")
    # a removed preset makes the tour fail to start, with the spot named
    w.call(f"<RemovePreset {TPTZ}>{P}<PresetToken>{a}</PresetToken></RemovePreset>")
    operate(w, tok, "Start", ok=False)
    assert w.subcodes[-1] == "ter:ActivationFailed"
    for _ in range(6):
        create_tour(w)
    root = w.call(f"<CreatePresetTour {TPTZ}>{P}</CreatePresetTour>", ok=False)
    assert w.subcodes[-1] == "ter:TooManyPresetTours" and "ptz_max_tours" in reason(root)


def test_tour_config_keys() -> None:
    cfg = from_dict({"onvif": {"ptz_max_tours": 2, "ptz_max_tour_spots": 4}})
    assert (cfg.onvif.ptz_max_tours, cfg.onvif.ptz_max_tour_spots) == (2, 4)
    with pytest.raises(ConfigError, match="ptz_max_tour_spots"):
        from_dict({"onvif": {"ptz_max_tour_spots": 0}})


# --------------------------------------------------------------------------- state machine


def _run(passes: int | None = None, until: float | None = None) -> tuple[Head, TourRun]:
    legs = [
        Leg(0, (1.0, 0.0, None), (1.0, 1.0, 1.0), 1.0),
        Leg(1, (-1.0, 0.5, 0.5), (2.0, 2.0, 0.5), 1.5),
        Leg(2, (None, None, 0.0), (1.0, 1.0, 1.0), 1.0),
    ]
    head = Head()
    run = TourRun("t", legs, passes=passes, until=until)
    head.run = run
    run.start(head, 0.0)
    return head, run


def test_tour_run_long_gap_matches_step_by_step() -> None:
    stepped, _ = _run()
    times = [k * 0.25 for k in range(1, 4001)]
    expect = {t: stepped.position(t) for t in times}
    for t in (7.0, 123.25, 999.75, 1000.0):
        jumped, run = _run()
        assert jumped.position(t) == pytest.approx(expect[t], abs=1e-9), t
        assert run.events <= 3 * 2 * 3 + 2  # at most ~3 passes replayed, however long the gap
    # a year later: still a bounded amount of work
    far, run = _run()
    far.position(365 * 86400.0)
    assert run.events <= 20 and run.state == TOURING


def test_tour_run_passes_until_and_pause() -> None:
    head, run = _run(passes=2)
    head.position(1000.0)
    assert run.state == IDLE and head.run is None and run.done == 2
    head, run = _run(until=3.0)  # leg 0 ends at 2 s, leg 1 moves from 2 s at 2 units/s
    assert head.position(10.0) == pytest.approx((-1.0, 0.5, 0.5))  # stopped at 3 s
    assert run.state == IDLE
    head, run = _run()
    head.position(0.5)
    run.pause(head, 0.5)
    assert run.state == PAUSED and head.position(50.0) == (0.5, 0.0, 0.0)
    run.resume(head, 50.0)
    assert head.position(50.5) == (1.0, 0.0, 0.0) and run.state == TOURING
    run.stop(head, 50.5)
    assert run.state == IDLE


def test_a_malformed_stored_tour_is_left_out_with_one_warning(
    w: World, caplog: pytest.LogCaptureFixture
) -> None:
    """A hand-edited state file: the tour whose stay is a string (and garbage entries) are
    left out of every answer; the good tour still works; one warning per bad tour."""
    good = create_tour(w)
    modify_tour(w, good, spot("<Home>true</Home>", "PT1S"), "<Direction>Forward</Direction>")
    cam = w.reg.cameras["Lobby"]
    doc = dict(cam.doc["ptz"])
    bad = {"token": "bad", "spots": [{"home": True, "stay": "five"}]}
    doc["tours"] = [*doc["tours"], bad, "junk", {"token": "b2", "spots": [{"pan": 9, "tilt": 0}]}]
    cam.doc["ptz"] = doc
    cam.save()
    w.load()
    with caplog.at_level("WARNING", logger="onvifcam.onvif.ptz"):
        for _ in range(3):
            root = w.call(f"<GetPresetTours {TPTZ}>{P}</GetPresetTours>")
            assert [t.get("token") for t in root.findall(f".//{{{NS}}}PresetTour")] == [good]
        operate(w, good, "Start")
        faulted = w.call(
            f"<OperatePresetTour {TPTZ}>{P}<PresetTourToken>bad</PresetTourToken>"
            "<Operation>Start</Operation></OperatePresetTour>",
            ok=False,
        )
    assert "no preset tour with token 'bad'" in reason(faulted)
    warned = [r.getMessage() for r in caplog.records if "malformed" in r.getMessage()]
    assert len(warned) == 3 and any("'bad'" in m for m in warned), warned
