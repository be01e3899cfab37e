"""The URL rules of onvifcam.addressing: which host and port a client gets for a camera."""

from __future__ import annotations

import pytest

from onvifcam.addressing import (
    Addressing,
    Arrival,
    Place,
    display_host,
    host_from_header,
    interface_host,
    sdp_host,
    specific,
    split_advertise,
    url_host,
)
from onvifcam.config import ServerConfig
from onvifcam.discovery.netif import Iface

LO = Iface("lo", 1, ("127.0.0.1",), True, loopback=True)
ETH = Iface("eth0", 2, ("192.168.1.5",), True)
LINK_LOCAL = Iface("eth1", 3, ("169.254.3.4",), False)
DOWN = Iface("eth2", 4, ("10.0.0.9",), False, up=False)
TABLE = [LO, DOWN, LINK_LOCAL, ETH]

PLAIN = Place(slug="lobby", path="live/lobby", onvif_port=8100)
OWN = Place(slug="dock", path="dock", address="192.0.2.21", onvif_port=80)
OWN_RTSP = Place(slug="dock", path="dock", address="192.0.2.21", onvif_port=80, own_rtsp=True)
UNBOUND = Place(slug="yard", path="yard")


def addr(
    host: str = "0.0.0.0", advertise: str = "", table: list[Iface] | None = None
) -> Addressing:
    a = Addressing(ServerConfig(host=host, advertise=advertise), TABLE if table is None else table)
    a.rtsp_port, a.http_port = 8554, 8080
    return a


def test_url_host_brackets_ipv6_only() -> None:
    assert url_host("192.0.2.1") == "192.0.2.1"
    assert url_host("cams.example") == "cams.example"
    assert url_host("2001:db8::1") == "[2001:db8::1]"


@pytest.mark.parametrize(
    ("ip", "out"),
    [
        ("0.0.0.0", ""),
        ("::", ""),
        ("", ""),
        ("::ffff:192.0.2.9", "192.0.2.9"),
        ("192.0.2.9", "192.0.2.9"),
        ("2001:db8::1", "2001:db8::1"),
    ],
)
def test_specific_unmaps_and_drops_wildcards(ip: str, out: str) -> None:
    assert specific(ip) == out


def test_host_header_is_validated() -> None:
    assert host_from_header("cams.example:8080") == "cams.example"
    assert host_from_header("[2001:db8::1]:80") == "2001:db8::1"
    assert host_from_header("[::ffff:192.0.2.9]:80") == "192.0.2.9"
    for bad in ("0.0.0.0:80", "[::]", "evil<script>", "", None, "a b", "[::1"):
        assert host_from_header(bad) == "", bad


def test_interface_host_skips_down_loopback_and_link_local() -> None:
    assert interface_host(TABLE) == "192.168.1.5"
    assert interface_host([LO, DOWN, LINK_LOCAL]) == "127.0.0.1"
    assert interface_host([]) == "127.0.0.1"


@pytest.mark.parametrize(
    ("place", "server", "advertise", "arrival", "host"),
    [
        # 1. the camera's own address beats everything
        (OWN, "0.0.0.0", "cams.example", Arrival("10.0.0.1", 80, "x.test"), "192.0.2.21"),
        # 2. advertise
        (PLAIN, "0.0.0.0", "cams.example", Arrival("10.0.0.1", 80, "x.test"), "cams.example"),
        # 3. wildcard listener: the Host header the client used
        (PLAIN, "0.0.0.0", "", Arrival("10.0.0.1", 80, "nvr-lab.test:80"), "nvr-lab.test"),
        # an unusable Host header is ignored: the address the request came in on
        (PLAIN, "0.0.0.0", "", Arrival("10.0.0.1", 80, "0.0.0.0:80"), "10.0.0.1"),
        (PLAIN, "0.0.0.0", "", Arrival("10.0.0.1", 80, "evil<x>"), "10.0.0.1"),
        # 4. specific listener: the address it came in on, not the Host header
        (PLAIN, "10.0.0.1", "", Arrival("10.0.0.1", 80, "nvr-lab.test"), "10.0.0.1"),
        # ::ffff: mapped IPv4 is unmapped
        (PLAIN, "::", "", Arrival("::ffff:10.0.0.7", 80, None), "10.0.0.7"),
        # 5. no usable local address: the Host header
        (PLAIN, "10.0.0.1", "", Arrival("", 0, "nvr-lab.test"), "nvr-lab.test"),
        # 6. nothing from the request: an interface's address, never the wildcard
        (PLAIN, "0.0.0.0", "", Arrival("0.0.0.0", 0, "[::]"), "192.168.1.5"),
        # no request at all: the listening host when specific, else an interface's
        (PLAIN, "10.0.0.1", "", None, "10.0.0.1"),
        (PLAIN, "0.0.0.0", "", None, "192.168.1.5"),
        (PLAIN, "0.0.0.0", "adv.example", None, "adv.example"),
        # a camera "address" that is a wildcard is no address of its own
        (Place("w", "w", address="0.0.0.0"), "0.0.0.0", "", None, "192.168.1.5"),
    ],
)
def test_host_rules(
    place: Place, server: str, advertise: str, arrival: Arrival | None, host: str
) -> None:
    assert addr(server, advertise).host(place, arrival) == host


def test_last_resort_is_loopback() -> None:
    a = addr("0.0.0.0", table=[LO])
    assert a.host(PLAIN, Arrival("", 0, None)) == "127.0.0.1"


def test_urls_of_a_camera_with_its_own_socket() -> None:
    urls = addr().urls(PLAIN, Arrival("10.0.0.1", 8080, None))
    assert urls.onvif_url == "http://10.0.0.1:8100/onvif/device_service"
    assert urls.snapshot_url == "http://10.0.0.1:8100/onvif/snapshot"
    assert urls.rtsp_url == "rtsp://10.0.0.1:8554/live/lobby"


def test_urls_of_a_camera_without_a_socket_name_it_on_the_main_port() -> None:
    urls = addr().urls(Place("Front Door", "front door"), Arrival("10.0.0.1", 8080, None))
    assert urls.onvif_url == "http://10.0.0.1:8080/onvif/Front%20Door/device_service"
    assert urls.rtsp_url == "rtsp://10.0.0.1:8554/front%20door"


def test_stream_uri_names_the_cameras_own_rtsp_listener_only_when_it_has_one() -> None:
    a = addr("127.0.0.1")
    # own address, RTSP on the main (specific) listener: the main RTSP address
    assert a.urls(OWN).rtsp_url == "rtsp://127.0.0.1:8554/dock"
    assert a.urls(OWN).onvif_url == "http://192.0.2.21:80/onvif/device_service"
    # serving RTSP on its own address: that address
    assert a.urls(OWN_RTSP).rtsp_url == "rtsp://192.0.2.21:8554/dock"
    # a camera's rtsp_port setting is the port of its URIs
    p = Place("c", "c", address="192.0.2.21", rtsp_port=9554, own_rtsp=True)
    assert a.urls(p).rtsp_url == "rtsp://192.0.2.21:9554/c"
    # a wildcard RTSP listener is reachable on the camera's address too
    assert addr("0.0.0.0").urls(OWN).rtsp_url == "rtsp://192.0.2.21:8554/dock"
    # RTSP on a specific address other than the HTTP host: advertise, else that address
    assert addr("127.0.0.1", "cams.example").urls(OWN).rtsp_url == ("rtsp://cams.example:8554/dock")


def test_ipv6_hosts_are_bracketed() -> None:
    a = addr("::")
    urls = a.urls(PLAIN, Arrival("2001:db8::5", 8080, None))
    assert urls.onvif_url == "http://[2001:db8::5]:8100/onvif/device_service"
    assert urls.rtsp_url == "rtsp://[2001:db8::5]:8554/live/lobby"
    own = Place("v6", "v6", address="2001:db8::9", onvif_port=80, own_rtsp=True)
    assert a.urls(own).rtsp_url == "rtsp://[2001:db8::9]:8554/v6"


def test_soap_base_points_back_at_the_socket_and_path_used() -> None:
    a = addr()
    assert a.service_base(PLAIN, "10.0.0.1", 8080, "/onvif/lobby") == (
        "http://10.0.0.1:8080/onvif/lobby"
    )
    assert a.service_base(PLAIN, "2001:db8::1", 8100, "/onvif") == "http://[2001:db8::1]:8100/onvif"


def test_network_interface_address_is_an_ip_not_a_name() -> None:
    a = addr()
    assert a.ip(PLAIN, Arrival("10.0.0.1", 80, "nvr-lab.test")) == "10.0.0.1"
    assert a.ip(OWN, Arrival("10.0.0.1", 80, None)) == "192.0.2.21"


def test_discovery_xaddr_template() -> None:
    a = addr()
    assert a.discovery_xaddr(PLAIN) == ("", "http://{host}:8100/onvif/device_service")
    assert a.discovery_xaddr(UNBOUND) == ("", "http://{host}:8080/onvif/yard/device_service")
    assert a.discovery_xaddr(OWN) == ("192.0.2.21", "http://{host}:80/onvif/device_service")
    assert addr("10.0.0.1").discovery_xaddr(PLAIN)[0] == "10.0.0.1"
    assert addr("0.0.0.0", "cams.example").discovery_xaddr(PLAIN)[0] == "cams.example"


def test_sdp_and_display_hosts_never_wildcard() -> None:
    assert sdp_host(ServerConfig(advertise="adv.example"), "10.0.0.1") == "adv.example"
    assert sdp_host(ServerConfig(), "::ffff:10.0.0.1") == "10.0.0.1"
    assert sdp_host(ServerConfig(host="10.0.0.2"), "0.0.0.0") == "10.0.0.2"
    assert display_host(ServerConfig(host="0.0.0.0"), TABLE) == "192.168.1.5"
    assert display_host(ServerConfig(host="::"), [LO]) == "127.0.0.1"
    assert display_host(ServerConfig(host="10.0.0.2", advertise="a.example"), TABLE) == "a.example"


def test_rtsp_template_of_the_landing_page() -> None:
    assert addr().rtsp_template(Arrival("10.0.0.1", 8080, "lab.test:8080")) == (
        "rtsp://lab.test:8554/NAME"
    )


@pytest.mark.parametrize(
    ("value", "out"),
    [
        ("cams.example", ("cams.example", 0)),
        ("cams.example:18080", ("cams.example", 18080)),
        ("192.0.2.7:80", ("192.0.2.7", 80)),
        ("[2001:db8::1]:8080", ("2001:db8::1", 8080)),
        ("2001:db8::1", ("2001:db8::1", 0)),
        ("", ("", 0)),
    ],
)
def test_split_advertise(value: str, out: tuple[str, int]) -> None:
    assert split_advertise(value) == out


@pytest.mark.parametrize("bad", ["host:0", "host:99999", "host:x", ":80", "[::1"])
def test_split_advertise_refuses_bad_ports(bad: str) -> None:
    with pytest.raises(ValueError):
        split_advertise(bad)


def test_advertised_port_behind_port_mapping() -> None:
    """A container run with -p 8080:18080 -p 554:18554: every URL names the mapped ports."""
    a = Addressing(
        ServerConfig(host="0.0.0.0", advertise="nvr-host.example:8080", advertise_rtsp_port=554),
        TABLE,
    )
    a.rtsp_port, a.http_port = 18554, 18080
    arrival = Arrival(local="172.17.0.2", port=18080, host_header="172.17.0.2:18080")
    urls = a.urls(UNBOUND, arrival)
    assert urls.onvif_url == "http://nvr-host.example:8080/onvif/yard/device_service"
    assert urls.rtsp_url == "rtsp://nvr-host.example:554/yard"
    assert urls.snapshot_url == "http://nvr-host.example:8080/onvif/yard/snapshot"
    host = a.host(UNBOUND, arrival)
    assert a.service_base(UNBOUND, host, 18080, "/onvif/yard") == (
        "http://nvr-host.example:8080/onvif/yard"
    )
    # a camera with its own socket keeps its own port unless it advertises one
    assert a.urls(PLAIN, arrival).onvif_url == "http://nvr-host.example:8100/onvif/device_service"
    mapped = Place(slug="lobby", path="live/lobby", onvif_port=8100, advertise="198.51.100.4:9100")
    urls = a.urls(mapped, arrival)
    assert urls.onvif_url == "http://198.51.100.4:9100/onvif/device_service"
    assert urls.rtsp_url == "rtsp://198.51.100.4:554/live/lobby"
    assert a.service_base(mapped, a.host(mapped, arrival), 8100, "/onvif") == (
        "http://198.51.100.4:9100/onvif"
    )
    assert a.discovery_xaddr(mapped) == ("198.51.100.4", "http://{host}:9100/onvif/device_service")
    assert a.discovery_xaddr(UNBOUND) == (
        "nvr-host.example",
        "http://{host}:8080/onvif/yard/device_service",
    )
    assert sdp_host(a.server, "172.17.0.2") == "nvr-host.example"
    assert display_host(a.server, TABLE) == "nvr-host.example"


def test_bad_advertise_is_a_config_error_naming_the_key() -> None:
    from onvifcam.config import ConfigError, from_dict

    with pytest.raises(ConfigError, match=r"\[server\] advertise"):
        from_dict({"server": {"advertise": "cams.example:99999"}})
    with pytest.raises(ConfigError, match=r"cameras\[0\]\.advertise"):
        from_dict({"cameras": [{"path": "a", "advertise": "http://x/"}]})
    cfg = from_dict({"cameras": [{"path": "a", "advertise": "[2001:db8::1]:8080"}]})
    assert cfg.cameras[0].advertise == "[2001:db8::1]:8080"
