#!/usr/bin/env python3
"""ONVIF Events benchmark: one camera, N pull-point subscribers, motion triggered R times a
second; delivery latency from the trigger to the PullMessages response that carries it, and
the server's CPU per delivered message.

The server is a real ``onvifcam serve`` pinned to CPU 0 (``taskset``). This process, the
load generator, runs on CPU 1 with uvloop when installed: N keep-alive HTTP/1.1 connections
on raw asyncio streams, each looping PullMessages (Timeout PT60S, MessageLimit 100, a fresh
WS-Security PasswordDigest per request, as Home Assistant does), and one connection POSTing
``{"type": "motion", "state": ...}`` to /api/cameras/Lobby/events at a fixed schedule,
alternating on and off so every trigger changes the MotionAlarm property (each trigger is
two ONVIF messages: MotionAlarm and CellMotionDetector/Motion).

Latency = the monotonic time the PullMessages response holding the k-th MotionAlarm change
was read, minus the time the k-th trigger request was written. Server CPU comes from
/proc/PID/stat over the triggering window (until every subscriber has every message). As a
reference measured in the same run (the machine's speed and load change a lot), the server's
CPU per GetStreamUri request (WS-Security, 8 connections) comes first, and the CPU per
delivered message is also given in GetStreamUri requests.

Loopback only, temp files only, bounded in time, cleans up what it starts::

    python3 scripts/bench_events.py                       # 100 subscribers, 100 events/s, 20 s
    python3 scripts/bench_events.py --subscribers 10 --rate 50 --seconds 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import (
    LOOPBACK_CONFIG,
    Conn,
    cameras,
    cpu_seconds,
    onvifcam_server,
    pct,
    pin_and_use_uvloop,
    soap_request,
)

SERVER_CPU = 0
LOAD_CPU = 1
TEV = 'xmlns="http://www.onvif.org/ver10/events/wsdl"'

CONFIG = (
    LOOPBACK_CONFIG
    + """max_nonces = 500000

[events]
max_subscriptions = {max_subs}

[[cameras]]
name = "Lobby"
path = "lobby"
username = "admin"
password = "secret"
"""
)


def camera_port(http: int) -> int:
    """The Lobby camera's own ONVIF port, from /api/cameras."""
    return int(cameras(http)["Lobby"]["port"])  # type: ignore[arg-type]


def motion_changes(body: bytes) -> tuple[int, int]:
    """(MotionAlarm Changed messages, all messages) in a PullMessagesResponse."""
    parts = body.split(b"<wsnt:NotificationMessage")[1:]
    changed = sum(1 for p in parts if b"tns1:VideoSource/MotionAlarm" in p and b'"Changed"' in p)
    return changed, len(parts)


async def run(subscribers: int, rate: float, seconds: float) -> dict[str, object]:
    with onvifcam_server(
        CONFIG.format(max_subs=subscribers + 8), SERVER_CPU, "onvifcam-bench-events-"
    ) as (proc, ports):
        http = int(ports["http_port"])
        cam_port = await asyncio.to_thread(camera_port, http)

        # reference in the same run: CPU per GetStreamUri (WS-Security, 8 connections)
        uri_body = (
            '<GetStreamUri xmlns="http://www.onvif.org/ver10/media/wsdl" '
            'xmlns:tt="http://www.onvif.org/ver10/schema"><StreamSetup>'
            "<tt:Stream>RTP-Unicast</tt:Stream><tt:Transport><tt:Protocol>RTSP</tt:Protocol>"
            "</tt:Transport></StreamSetup><ProfileToken>Profile_1</ProfileToken></GetStreamUri>"
        )
        ref_conns = [await Conn.open(cam_port) for _ in range(8)]
        per_conn = 150
        ref_reqs = [
            [soap_request(cam_port, "/onvif/media_service", uri_body) for _ in range(per_conn)]
            for _ in ref_conns
        ]

        async def ref_worker(c: Conn, reqs: list[bytes]) -> None:
            for r in reqs:
                status, _h, body = await c.exchange(r)
                assert status == 200, body[:300]

        ref0 = cpu_seconds(proc.pid)
        await asyncio.gather(*[ref_worker(c, r) for c, r in zip(ref_conns, ref_reqs, strict=True)])
        ref_cpu_us = 1e6 * (cpu_seconds(proc.pid) - ref0) / (per_conn * len(ref_conns))
        for c in ref_conns:
            c.close()

        # subscribe, and drain the Initialized messages
        conns: list[Conn] = []
        paths: list[str] = []
        for _ in range(subscribers):
            c = await Conn.open(cam_port)
            status, _h, body = await c.exchange(
                soap_request(
                    cam_port, "/onvif/events_service", f"<CreatePullPointSubscription {TEV}/>"
                )
            )
            assert status == 200, body[:500]
            addr = body.split(b"<wsa:Address>")[1].split(b"</wsa:Address>")[0].decode()
            u = urlsplit(addr)
            paths.append(f"{u.path}?{u.query}")
            pull0 = (
                f"<PullMessages {TEV}><Timeout>PT0S</Timeout>"
                "<MessageLimit>100</MessageLimit></PullMessages>"
            )
            await c.exchange(soap_request(cam_port, paths[-1], pull0))
            conns.append(c)

        n_triggers = int(rate * seconds)
        sent: list[float] = []
        latencies: list[float] = []
        got = [0] * subscribers
        messages = 0
        responses = 0
        done = asyncio.Event()
        pull = (
            f"<PullMessages {TEV}><Timeout>PT60S</Timeout>"
            "<MessageLimit>100</MessageLimit></PullMessages>"
        )

        async def subscriber(i: int) -> None:
            nonlocal messages, responses
            c, path = conns[i], paths[i]
            while got[i] < n_triggers:
                status, _h, body = await c.exchange(soap_request(cam_port, path, pull))
                t = time.monotonic()
                assert status == 200, body[:500]
                changed, total = motion_changes(body)
                responses += 1
                messages += total
                for _ in range(changed):
                    if got[i] < len(sent):
                        latencies.append(t - sent[got[i]])
                    got[i] += 1
            if all(g >= n_triggers for g in got):
                done.set()

        tasks = [asyncio.create_task(subscriber(i)) for i in range(subscribers)]
        trig = await Conn.open(http)
        answers: list[int] = []

        async def read_answers() -> None:
            # HTTP/1.1 pipelining: triggers go out on schedule, answers are read in order
            for _ in range(n_triggers):
                status, _h, answer = await trig.read_response()
                assert status == 200, answer
                answers.append(status)

        reader = asyncio.create_task(read_answers())
        cpu0 = cpu_seconds(proc.pid)
        load0 = time.process_time()
        t0 = time.monotonic()
        for k in range(n_triggers):
            delay = t0 + k / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            body = json.dumps({"type": "motion", "state": k % 2 == 0}).encode()
            req = (
                f"POST /api/cameras/Lobby/events HTTP/1.1\r\nHost: 127.0.0.1:{http}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode() + body
            sent.append(time.monotonic())
            trig.writer.write(req)
        await reader
        trigger_end = time.monotonic()
        try:
            await asyncio.wait_for(done.wait(), 30)
        except TimeoutError:
            pass
        wall = time.monotonic() - t0
        cpu = cpu_seconds(proc.pid) - cpu0
        load = time.process_time() - load0
        for t in tasks:
            t.cancel()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        errors = [
            repr(e)[:300]
            for e in outcomes
            if isinstance(e, BaseException) and not isinstance(e, asyncio.CancelledError)
        ]
        for c in [*conns, trig]:
            c.close()
        delivered = sum(min(g, n_triggers) for g in got)
        return {
            "subscribers": subscribers,
            "rate_per_s": rate,
            "triggers": n_triggers,
            "trigger_rate_achieved": round(n_triggers / (trigger_end - t0), 1),
            "motion_changes_delivered": delivered,
            "motion_changes_expected": n_triggers * subscribers,
            "subscriber_errors": len(errors),
            "first_error": errors[0] if errors else "",
            "messages_delivered": messages,
            "pull_responses": responses,
            "messages_per_response": round(messages / max(1, responses), 2),
            "latency_ms_p50": round(pct(latencies, 50) * 1000, 2),
            "latency_ms_p99": round(pct(latencies, 99) * 1000, 2),
            "latency_ms_max": round(max(latencies, default=float("nan")) * 1000, 2),
            "server_cpu_pct": round(100 * cpu / wall, 1),
            "server_cpu_us_per_message": round(1e6 * cpu / max(1, messages), 1),
            "server_cpu_us_per_trigger": round(1e6 * cpu / max(1, n_triggers), 1),
            "load_generator_cpu_pct": round(100 * load / wall, 1),
            "reference_getstreamuri_cpu_us": round(ref_cpu_us, 1),
            "message_cost_in_getstreamuri": round(1e6 * cpu / max(1, messages) / ref_cpu_us, 2),
        }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--subscribers", type=int, default=100)
    ap.add_argument("--rate", type=float, default=100.0, help="triggers per second")
    ap.add_argument("--seconds", type=float, default=20.0)
    args = ap.parse_args(argv)
    if not shutil.which("taskset"):
        print("bench_events: taskset (util-linux) is required", file=sys.stderr)
        return 2
    pin_and_use_uvloop(LOAD_CPU)
    result = asyncio.run(run(args.subscribers, args.rate, args.seconds))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
