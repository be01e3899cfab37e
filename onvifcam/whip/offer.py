"""WHIP signalling without I/O: the SDP offer, the answer, the stream's SDP, credentials.

Everything SDP goes through :mod:`onvifcam.media.sdp`'s classes. The offer is checked and
narrowed before aiortc sees it: one H.264 format (packetization-mode 1) and Opus, no RTX,
RED or FEC, so the publisher sends exactly what is passed through to RTSP readers without
transcoding. aiortc only negotiates H.264 Constrained Baseline; a publisher offering another
profile (OBS's High, say) is shown the baseline profile to aiortc and its own profile again
in the answer, which is what it will send, since nothing here decodes the video.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field

from onvifcam.auth.gate import PlainCredentials
from onvifcam.media import h264
from onvifcam.media.sdp import MediaDescription, SdpError, SessionDescription

__all__ = [
    "Choice",
    "Offer",
    "OfferError",
    "credentials",
    "fix_answer",
    "ice_server_links",
    "parse_offer",
]

# What aiortc negotiates for H.264 (its only H.264 capability with packetization-mode 1).
AIORTC_H264_FMTP = "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"
_VIDEO_KEEP_FB = ("nack", "goog-remb", "ccm")


class OfferError(ValueError):
    """An offer refused; ``status`` is the HTTP status (400 malformed, 422 unusable)."""

    def __init__(self, reason: str, status: int = 422) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


@dataclass(frozen=True)
class Choice:
    """The format taken from one offered m= section."""

    kind: str  # "video" or "audio"
    mid: str
    pt: int
    encoding: str  # "H264" or "opus"
    clock_rate: int
    channels: int | None
    fmtp: dict[str, str] = field(default_factory=dict)
    feedback: tuple[str, ...] = ()  # rtcp-fb values offered for the format ("nack pli"...)

    @property
    def nack(self) -> bool:
        """The publisher retransmits on a generic NACK."""
        return "nack" in self.feedback

    @property
    def remb(self) -> bool:
        """The publisher listens to REMB."""
        return "goog-remb" in self.feedback


@dataclass
class Offer:
    """A checked WHIP offer and the formats taken from it (video first)."""

    sdp: SessionDescription
    choices: list[Choice]

    @property
    def video(self) -> Choice | None:
        """The H.264 format, if the offer has video."""
        return next((c for c in self.choices if c.kind == "video"), None)

    @property
    def audio(self) -> Choice | None:
        """The Opus format, if the offer has audio."""
        return next((c for c in self.choices if c.kind == "audio"), None)

    def for_aiortc(self) -> str:
        """The offer narrowed to the chosen formats, as text for aiortc."""
        narrowed = SessionDescription(
            version=self.sdp.version,
            origin=self.sdp.origin,
            name=self.sdp.name,
            connection=self.sdp.connection,
            times=list(self.sdp.times),
            attributes=list(self.sdp.attributes),
            bandwidth=list(self.sdp.bandwidth),
        )
        by_mid = {c.mid: c for c in self.choices}
        for md in self.sdp.media:
            choice = by_mid.get(md.get("mid") or "")
            if choice is None or md.media.lower() not in ("audio", "video"):
                narrowed.media.append(md)
                continue
            narrowed.media.append(_narrow(md, choice))
        return narrowed.serialize().decode()

    def stream_session(self, name: str) -> SessionDescription:
        """The SDP the stream publishes to RTSP readers (no transport lines: those are
        the reader's), one m= section per chosen format, video first."""
        session = SessionDescription(name=name, attributes=[("tool", "onvifcam whip")])
        for c in sorted(self.choices, key=lambda c: c.kind != "video"):
            md = MediaDescription(c.kind, 0, "RTP/AVP", [str(c.pt)])
            if c.kind == "video":
                md.attributes.append(("rtpmap", f"{c.pt} H264/90000"))
                params = ["packetization-mode=1"]
                if "profile-level-id" in c.fmtp:
                    params.append(f"profile-level-id={c.fmtp['profile-level-id']}")
                if "sprop-parameter-sets" in c.fmtp:
                    params.append(f"sprop-parameter-sets={c.fmtp['sprop-parameter-sets']}")
                md.attributes.append(("fmtp", f"{c.pt} {';'.join(params)}"))
            else:
                md.attributes.append(("rtpmap", f"{c.pt} opus/48000/2"))
                stereo = c.fmtp.get("stereo") == "1"
                md.attributes.append(("fmtp", f"{c.pt} sprop-stereo={int(stereo)}"))
            md.attributes.append(("control", f"trackID={len(session.media)}"))
            session.media.append(md)
        return session


def _narrow(md: MediaDescription, choice: Choice) -> MediaDescription:
    """``md`` with only the chosen payload type (aiortc's H.264 fmtp for video)."""
    keep: list[tuple[str, str | None]] = []
    for name, value in md.attributes:
        lname = name.lower()
        if lname in ("rtpmap", "fmtp", "rtcp-fb"):
            pt_text = (value or "").split(None, 1)[0] if value else ""
            if pt_text != str(choice.pt) and not (lname == "rtcp-fb" and pt_text == "*"):
                continue
            if lname == "fmtp" and choice.kind == "video":
                value = f"{choice.pt} {AIORTC_H264_FMTP}"
        elif lname in ("ssrc-group",):
            continue  # FID (RTX) groups: RTX is not negotiated
        keep.append((name, value))
    if choice.kind == "video" and not any(n.lower() == "fmtp" for n, _ in keep):
        keep.append(("fmtp", f"{choice.pt} {AIORTC_H264_FMTP}"))
    return MediaDescription(
        md.media,
        md.port,
        md.proto,
        [str(choice.pt)],
        keep,
        md.connection,
        list(md.bandwidth),
    )


def _choose(md: MediaDescription, mid: str) -> Choice:
    kind = md.media.lower()
    rtpmap = md.rtpmap
    fmtps = md.fmtp
    offered = []
    for fmt in md.formats:
        try:
            pt = int(fmt)
        except ValueError:
            continue
        name, rate, channels = rtpmap.get(pt, ("", 0, None))
        offered.append((pt, name, rate, channels))
    feedback: dict[int, list[str]] = {}
    for value in md.get_all("rtcp-fb"):
        pt_text, _, fb = (value or "").strip().partition(" ")
        for pt, *_ in offered:
            if pt_text in ("*", str(pt)):
                feedback.setdefault(pt, []).append(fb.strip().lower())
    names = sorted({n for _pt, n, _r, _c in offered if n})
    if kind == "video":
        for pt, name, rate, channels in offered:
            params = fmtps.get(pt, {})
            if name.upper() == "H264" and rate == 90000:
                if params.get("packetization-mode", "0") == "1":
                    _check_profile(params)
                    fb = tuple(f for f in feedback.get(pt, []) if f.split()[0] in _VIDEO_KEEP_FB)
                    return Choice("video", mid, pt, "H264", rate, channels, params, fb)
        raise OfferError(
            "the video section offers no H.264 with packetization-mode=1 (offered: "
            f"{', '.join(names) or 'nothing usable'}); video passes through to RTSP readers "
            "without transcoding, so publish H.264"
        )
    for pt, name, rate, channels in offered:
        if name.lower() == "opus" and rate == 48000:
            params = fmtps.get(pt, {})
            return Choice("audio", mid, pt, "opus", rate, channels, params, ())
    raise OfferError(
        f"the audio section offers no Opus (offered: {', '.join(names) or 'nothing usable'});"
        " audio passes through without transcoding, so publish Opus, or video only"
    )


def _check_profile(params: dict[str, str]) -> None:
    plid = params.get("profile-level-id")
    if plid is not None:
        try:
            int(plid, 16)
        except ValueError:
            raise OfferError(f"invalid H.264 profile-level-id {plid[:12]!r}", 400) from None
        if len(plid) != 6:
            raise OfferError(f"invalid H.264 profile-level-id {plid[:12]!r}", 400)
    sprop = params.get("sprop-parameter-sets")
    if sprop is not None:
        try:
            h264.parse_sprop_parameter_sets(sprop)
        except ValueError:
            del params["sprop-parameter-sets"]  # useless, not fatal


def parse_offer(body: bytes) -> Offer:
    """Check an offer and choose its formats; raises :class:`OfferError`."""
    try:
        sdp = SessionDescription.parse(body)
    except SdpError as exc:
        raise OfferError(f"malformed SDP offer: {exc}", 400) from None
    choices: list[Choice] = []
    seen: dict[str, int] = {}
    pts: dict[int, str] = {}
    for i, md in enumerate(sdp.media):
        kind = md.media.lower()
        if kind not in ("audio", "video") or md.port == 0:
            continue
        if "SAVPF" not in md.proto.upper():
            raise OfferError(
                f"m= section {i} uses {md.proto!r}; WebRTC publishers use UDP/TLS/RTP/SAVPF", 400
            )
        seen[kind] = seen.get(kind, 0) + 1
        if seen[kind] > 1:
            raise OfferError(
                f"the offer has more than one {kind} section; WHIP takes one MediaStream "
                "with at most one audio and one video track"
            )
        mid = md.get("mid")
        if mid is None:
            raise OfferError(f"m= section {i} has no a=mid (BUNDLE needs one)", 400)
        direction = next(
            (n.lower() for n, _v in md.attributes if n.lower() in _DIRECTIONS), "sendrecv"
        )
        if direction not in ("sendonly", "sendrecv"):
            raise OfferError(f"the {kind} section is {direction}: a publisher must send", 422)
        choice = _choose(md, mid.strip())
        if choice.pt in pts:
            raise OfferError(
                f"payload type {choice.pt} is used by both {pts[choice.pt]} and {kind}", 422
            )
        pts[choice.pt] = kind
        choices.append(choice)
    if not choices:
        raise OfferError("the offer has no audio or video section to publish")
    return Offer(sdp, choices)


_DIRECTIONS = ("sendonly", "recvonly", "sendrecv", "inactive")


def fix_answer(answer: str, offer: Offer) -> bytes:
    """aiortc's answer with the publisher's own H.264 profile restored (see module doc)."""
    sdp = SessionDescription.parse(answer)
    video = offer.video
    if video is not None:
        params = ["level-asymmetry-allowed=1", "packetization-mode=1"]
        if "profile-level-id" in video.fmtp:
            params.append(f"profile-level-id={video.fmtp['profile-level-id']}")
        for md in sdp.media:
            if md.media.lower() != "video":
                continue
            md.attributes = [
                (n, f"{video.pt} {';'.join(params)}")
                if n.lower() == "fmtp" and (v or "").split(None, 1)[:1] == [str(video.pt)]
                else (n, v)
                for n, v in md.attributes
            ]
    return sdp.serialize()


def credentials(
    authorization: str | None, query_key: str | None = None
) -> tuple[PlainCredentials, str]:
    """What a WHIP client presented, and the scheme it used ("" when none).

    ``Bearer TOKEN``: the token is the path's stream key (``publish_key``); a token of the
    form ``USER:PASSWORD`` is also tried as the path's publish credentials. ``Basic`` gives
    credentials. A ``?key=`` on the endpoint URL is the stream key when a bearer token
    carries the credentials.
    """
    scheme, _, value = (authorization or "").strip().partition(" ")
    value = value.strip()
    scheme = scheme.lower()
    user = password = ""
    key: str | None = None
    if scheme == "bearer" and value:
        key = value
        if ":" in value:
            user, _, password = value.partition(":")
    elif scheme == "basic" and value:
        try:
            text = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            text = ""
        user, _, password = text.partition(":")
    else:
        scheme = ""
    if query_key:
        key = query_key
    return PlainCredentials(user, password, key), scheme


def ice_server_links(urls: tuple[str, ...], username: str = "", password: str = "") -> list[str]:
    """``Link`` header values for STUN/TURN servers (RFC 9725 section 4.6)."""
    out = []
    for url in urls:
        value = f'<{url}>; rel="ice-server"'
        if url.lower().startswith(("turn:", "turns:")) and username:
            user = username.replace('"', "")
            cred = password.replace('"', "")
            value += f'; username="{user}"; credential="{cred}"; credential-type="password"'
        out.append(value)
    return out
