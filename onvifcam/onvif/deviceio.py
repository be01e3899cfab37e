"""ONVIF DeviceIO service (ver10 deviceIO/wsdl) and the relay/digital-input model behind it.

Every camera has ``[events] digital_inputs`` inputs (``DI_1``..) and ``relay_outputs``
relays (``Relay_1``..). Inputs change only from outside (the trigger API); relays change
with SetRelayOutputState, and a Monostable relay drops back to inactive after its
DelayTime. Relay settings (mode, delay, idle state) are kept in the camera's state
document; logical states start inactive. Every change is published on the event bus
(DigitalInputChanged / RelayChanged), where the Events service turns it into the
``tns1:Device/Trigger/*`` properties.

The Device service's relay operations (tds:GetRelayOutputs, SetRelayOutputSettings,
SetRelayOutputState) are answered here too, from the same model. DeviceIO's
GetRelayOutputs and SetRelayOutputState use those tds elements (as the official WSDL
does), so one handler serves both endpoints; only SetRelayOutputSettings has a DeviceIO
element of its own (tmd:, with a tt:RelayOutput). DeviceIO's GetVideoSources,
GetAudioSources and GetAudioOutputs are the Media (trt:) elements, answered by the Media
service.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lxml import etree
from lxml.builder import ElementMaker

from onvifcam.cameras import Camera
from onvifcam.events import DigitalInputChanged, EventBus, RelayChanged
from onvifcam.onvif.soap import (
    ACTUATE,
    NS_TDS,
    NSMAP,
    PRE_AUTH,
    READ_MEDIA,
    READ_SYSTEM,
    TDS,
    TT,
    Context,
    OperationTable,
    child,
    invalid_arg,
    require,
    text_of,
)
from onvifcam.onvif.xstime import duration_seconds, format_duration

log = logging.getLogger(__name__)

NS_TMD = "http://www.onvif.org/ver10/deviceIO/wsdl"
TMD = ElementMaker(namespace=NS_TMD, nsmap={**NSMAP, "tmd": NS_TMD})

MODES = ("Monostable", "Bistable")
IDLE_STATES = ("closed", "open")
MIN_DELAY = 0.1  # seconds (Monostable DelayTime range advertised in GetRelayOutputOptions)
MAX_DELAY = 3600.0


def input_tokens(cam: Camera) -> list[str]:
    """The camera's digital input tokens."""
    return [f"DI_{i}" for i in range(1, cam.app_cfg.events.digital_inputs + 1)]


def relay_tokens(cam: Camera) -> list[str]:
    """The camera's relay output tokens."""
    return [f"Relay_{i}" for i in range(1, cam.app_cfg.events.relay_outputs + 1)]


@dataclass
class RelaySettings:
    """tt:RelayOutputSettings."""

    mode: str = "Bistable"
    delay: float = 1.0
    idle: str = "closed"


class DeviceIO:
    """Relay and digital-input state of every camera, its SOAP operations and bus events."""

    def __init__(
        self, bus: EventBus | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.bus = bus
        self.clock = clock
        self._inputs: dict[str, dict[str, bool]] = {}
        self._relays: dict[str, dict[str, bool]] = {}
        self._release: dict[tuple[str, str], float] = {}  # Monostable: (camera, relay) -> when
        self._timers: dict[tuple[str, str], asyncio.TimerHandle] = {}
        self._cams: dict[str, Camera] = {}
        self.ops = self._operations()

    # ------------------------------------------------------------------ model
    def inputs(self, cam: Camera) -> dict[str, bool]:
        """Logical state of every digital input (true = active)."""
        states = self._inputs.setdefault(cam.key, {})
        return {t: states.get(t, False) for t in input_tokens(cam)}

    def relays(self, cam: Camera) -> dict[str, bool]:
        """Logical state of every relay (true = active)."""
        states = self._relays.setdefault(cam.key, {})
        return {t: states.get(t, False) for t in relay_tokens(cam)}

    def settings(self, cam: Camera, token: str) -> RelaySettings:
        """A relay's settings (stored in the camera's state document)."""
        d = cam.doc.get("relays", {}).get(token, {})
        s = RelaySettings()
        if d.get("mode") in MODES:
            s.mode = d["mode"]
        if isinstance(d.get("delay"), int | float) and MIN_DELAY <= d["delay"] <= MAX_DELAY:
            s.delay = float(d["delay"])
        if d.get("idle") in IDLE_STATES:
            s.idle = d["idle"]
        return s

    def set_input(self, cam: Camera, token: str, state: bool) -> bool:
        """Set a digital input (from the trigger API); True when it changed."""
        if token not in input_tokens(cam):
            raise KeyError(token)
        states = self._inputs.setdefault(cam.key, {})
        if states.get(token, False) == state:
            return False
        states[token] = state
        if self.bus is not None:
            self.bus.publish(DigitalInputChanged(cam.key, token, state))
        return True

    def set_settings(self, cam: Camera, token: str, s: RelaySettings) -> None:
        """Store a relay's settings; a Bistable relay keeps its state, a Monostable one that
        is active drops back after the new delay."""
        self._check_relay(cam, token)
        if s.mode not in MODES:
            raise invalid_arg("ter:ModeError", f"relay mode {s.mode!r} is not Monostable/Bistable")
        if s.idle not in IDLE_STATES:
            raise invalid_arg("ter:ModeError", f"relay idle state {s.idle!r} is not closed/open")
        if s.mode == "Monostable" and not MIN_DELAY <= s.delay <= MAX_DELAY:
            raise invalid_arg(
                "ter:ModeError",
                f"Monostable DelayTime {format_duration(s.delay)} is outside "
                f"{format_duration(MIN_DELAY)}..{format_duration(MAX_DELAY)}",
            )
        relays = dict(cam.doc.get("relays", {}))
        new = {"mode": s.mode, "delay": s.delay, "idle": s.idle}
        if relays.get(token) != new:
            relays[token] = new
            cam.doc["relays"] = relays
            cam.save()
        self._cancel(cam.key, token)
        if s.mode == "Monostable" and self.relays(cam)[token]:
            self._arm(cam, token, s.delay)

    def set_relay(self, cam: Camera, token: str, active: bool) -> bool:
        """SetRelayOutputState; True when the logical state changed."""
        self._check_relay(cam, token)
        s = self.settings(cam, token)
        self._cancel(cam.key, token)
        if active and s.mode == "Monostable":
            self._arm(cam, token, s.delay)
        return self._set(cam, token, active)

    def expire(self, now: float | None = None) -> int:
        """Drop every Monostable relay whose DelayTime has passed; how many dropped."""
        now = self.clock() if now is None else now
        due = [k for k, when in self._release.items() if when <= now]
        for key in due:
            self._cancel(*key)
            cam = self._cams.get(key[0])
            if cam is not None:
                self._set(cam, key[1], False)
        return len(due)

    def close(self) -> None:
        """Cancel every pending Monostable timer."""
        for h in self._timers.values():
            h.cancel()
        self._timers.clear()

    def _set(self, cam: Camera, token: str, active: bool) -> bool:
        states = self._relays.setdefault(cam.key, {})
        if states.get(token, False) == active:
            return False
        states[token] = active
        if self.bus is not None:
            self.bus.publish(RelayChanged(cam.key, token, active))
        return True

    def _arm(self, cam: Camera, token: str, delay: float) -> None:
        key = (cam.key, token)
        self._cams[cam.key] = cam
        self._release[key] = self.clock() + delay
        with contextlib.suppress(RuntimeError):  # no loop: expire() is called by the owner
            loop = asyncio.get_running_loop()
            self._timers[key] = loop.call_later(delay, self.expire)

    def _cancel(self, cam_key: str, token: str) -> None:
        self._release.pop((cam_key, token), None)
        h = self._timers.pop((cam_key, token), None)
        if h is not None:
            h.cancel()

    def _check_relay(self, cam: Camera, token: str) -> None:
        if token not in relay_tokens(cam):
            raise invalid_arg("ter:RelayToken", f"no relay output {token[:64]!r}")

    # ------------------------------------------------------------------ XML
    def _relay_el(self, maker: Any, name: str, cam: Camera, token: str) -> etree._Element:
        s = self.settings(cam, token)
        return getattr(maker, name)(
            TT.Properties(
                TT.Mode(s.mode), TT.DelayTime(format_duration(s.delay)), TT.IdleState(s.idle)
            ),
            token=token,
        )

    # ------------------------------------------------------------------ operations
    def _operations(self) -> OperationTable:
        ops = OperationTable()

        @ops.op(NS_TMD, "GetServiceCapabilities", PRE_AUTH)
        def get_service_capabilities(ctx: Context, req: etree._Element) -> etree._Element:
            """DeviceIO capabilities: inputs, relays, sources."""
            return TMD.GetServiceCapabilitiesResponse(capabilities_tmd(ctx))

        @ops.op(NS_TMD, "GetDigitalInputs", READ_SYSTEM)
        def get_digital_inputs(ctx: Context, req: etree._Element) -> etree._Element:
            """Every digital input (IdleState closed: a closed contact is the idle state)."""
            return TMD.GetDigitalInputsResponse(
                *[TMD.DigitalInputs(token=t, IdleState="closed") for t in input_tokens(ctx.camera)]
            )

        @ops.op(NS_TMD, "GetRelayOutputOptions", PRE_AUTH)
        def get_relay_output_options(ctx: Context, req: etree._Element) -> etree._Element:
            """Both modes and the DelayTime range, for one relay or all."""
            tokens = relay_tokens(ctx.camera)
            want = text_of(req, "RelayOutputToken")
            if want is not None:
                self._check_relay(ctx.camera, want)
                tokens = [want]
            return TMD.GetRelayOutputOptionsResponse(
                *[
                    TMD.RelayOutputOptions(
                        TMD.Mode("Monostable"),
                        TMD.Mode("Bistable"),
                        TMD.DelayTimes(f"{MIN_DELAY:g} {MAX_DELAY:g}"),
                        token=t,
                    )
                    for t in tokens
                ]
            )

        @ops.op(NS_TMD, "SetRelayOutputSettings", ACTUATE)
        def set_relay_output_settings_tmd(ctx: Context, req: etree._Element) -> etree._Element:
            """tmd:SetRelayOutputSettings (RelayOutput with token and Properties)."""
            relay = child(req, "RelayOutput")
            if relay is None or not relay.get("token"):
                raise invalid_arg("ter:RelayToken", "RelayOutput needs a token attribute")
            self.set_settings(ctx.camera, relay.get("token", ""), _settings(relay))
            return TMD.SetRelayOutputSettingsResponse()

        @ops.op(NS_TMD, "GetVideoOutputs", READ_MEDIA)
        def get_video_outputs(ctx: Context, req: etree._Element) -> etree._Element:
            """No video outputs."""
            return TMD.GetVideoOutputsResponse()

        @ops.op(NS_TMD, "GetSerialPorts", READ_SYSTEM)
        def get_serial_ports(ctx: Context, req: etree._Element) -> etree._Element:
            """No serial ports."""
            return TMD.GetSerialPortsResponse()

        # Device service (ONVIF Core "Input/Output"), same model.
        @ops.op(NS_TDS, "GetRelayOutputs", READ_MEDIA)
        def get_relay_outputs_tds(ctx: Context, req: etree._Element) -> etree._Element:
            """tds:GetRelayOutputs."""
            cam = ctx.camera
            return TDS.GetRelayOutputsResponse(
                *[self._relay_el(TDS, "RelayOutputs", cam, t) for t in relay_tokens(cam)]
            )

        @ops.op(NS_TDS, "SetRelayOutputSettings", ACTUATE)
        def set_relay_output_settings_tds(ctx: Context, req: etree._Element) -> etree._Element:
            """tds:SetRelayOutputSettings (RelayOutputToken and Properties)."""
            token = require(req, "RelayOutputToken")
            self.set_settings(ctx.camera, token, _settings(req))
            return TDS.SetRelayOutputSettingsResponse()

        @ops.op(NS_TDS, "SetRelayOutputState", ACTUATE)
        def set_relay_output_state(ctx: Context, req: etree._Element) -> etree._Element:
            """Set a relay active or inactive (Device and DeviceIO endpoints)."""
            self.set_relay(ctx.camera, require(req, "RelayOutputToken"), _logical(req))
            return TDS.SetRelayOutputStateResponse()

        return ops


def capabilities_tmd(ctx: Context) -> etree._Element:
    """tmd:Capabilities (GetServiceCapabilities, GetServices with capabilities)."""
    return TMD.Capabilities(
        VideoSources="1",
        VideoOutputs="0",
        AudioSources="1" if ctx.camera.audio("main") is not None else "0",
        AudioOutputs="0",
        RelayOutputs=str(len(relay_tokens(ctx.camera))),
        SerialPorts="0",
        DigitalInputs=str(len(input_tokens(ctx.camera))),
    )


def _logical(req: etree._Element) -> bool:
    state = require(req, "LogicalState")
    if state not in ("active", "inactive"):
        raise invalid_arg("ter:InvalidArgs", f"LogicalState {state[:32]!r} is not active/inactive")
    return state == "active"


def _settings(el: etree._Element) -> RelaySettings:
    props = child(el, "Properties")
    if props is None:
        raise invalid_arg("ter:InvalidArgs", "Properties (tt:RelayOutputSettings) is required")
    s = RelaySettings(
        mode=require(props, "Mode"),
        idle=require(props, "IdleState"),
    )
    delay = require(props, "DelayTime")
    try:
        s.delay = parse_duration(delay)
    except ValueError as exc:
        raise invalid_arg("ter:ModeError", f"DelayTime: {exc}") from None
    return s


def parse_duration(text: str) -> float:
    """A relay DelayTime (xs:duration) in seconds; ValueError when malformed or negative."""
    value = duration_seconds(text)
    if value < 0:
        raise ValueError(f"negative duration {text[:40]!r}")
    return value
