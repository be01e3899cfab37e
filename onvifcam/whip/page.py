"""``GET /whip/PATH/publish``: a self-contained page that publishes with WHIP.

Plain HTML and JavaScript, nothing loaded from anywhere else. It publishes the browser's
camera and microphone (getUserMedia), or a generated test pattern (an animated canvas and
a tone), as H.264 and Opus to ``/whip/PATH`` on the same server. ``?start=camera`` or
``?start=canvas`` starts at once (``&token=...`` for the bearer token), which is how the
tests drive a headless Chromium without a WebDriver.
"""

from __future__ import annotations

import html
import json
from urllib.parse import quote

__all__ = ["publish_page"]

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>whip: idle</title>
<style>
body{font:15px system-ui,sans-serif;margin:1.5em;max-width:52em;color:#222}
video{width:100%;max-width:640px;background:#111;display:block;margin:.8em 0}
button{font:inherit;padding:.35em .9em;margin-right:.4em}
input{font:inherit;padding:.3em;width:18em}
code{background:#f2f2f2;padding:.1em .3em}
#status{font-weight:600}
</style></head><body>
<h1>Publish to <code>__PATH_HTML__</code></h1>
<p>WHIP endpoint: <code id="endpoint"></code> (OBS: Settings &gt; Stream &gt; Service WHIP).
Readers: <code>rtsp://HOST:RTSP_PORT/__PATH_HTML__</code></p>
<p><label>Bearer token (stream key, or user:password):
<input id="token" type="password" autocomplete="off"></label></p>
<p><button id="camera">Publish camera</button><button id="canvas">Publish test pattern</button>
<button id="stop" disabled>Stop</button></p>
<p>Status: <span id="status">idle</span></p>
<video id="preview" muted autoplay playsinline></video>
<canvas id="pattern" width="640" height="360" hidden></canvas>
<script>
"use strict";
const PATH = __PATH_JSON__;
const endpoint = "/whip/" + __PATH_URL_JSON__;
const $ = (id) => document.getElementById(id);
$("endpoint").textContent = location.origin + endpoint;
let pc = null, session = null, media = null, timer = null, audioCtx = null;

function status(text) {
  $("status").textContent = text;
  document.title = "whip: " + text;
  console.log("whip status: " + text);
}

function testPattern() {
  const c = $("pattern"), g = c.getContext("2d");
  let n = 0;
  timer = setInterval(() => {
    n++;
    g.fillStyle = "hsl(" + (n * 3 % 360) + ",60%,35%)";
    g.fillRect(0, 0, c.width, c.height);
    g.fillStyle = "#fff";
    g.fillRect((n * 7) % c.width, 150, 60, 60);
    g.font = "48px monospace";
    g.fillText(PATH + " " + new Date().toISOString().slice(11, 23), 20, 80);
  }, 1000 / 30);
  const stream = c.captureStream(30);
  try {
    audioCtx = new AudioContext();
    const osc = audioCtx.createOscillator(), dest = audioCtx.createMediaStreamDestination();
    osc.frequency.value = 440;
    osc.connect(dest);
    osc.start();
    dest.stream.getAudioTracks().forEach((t) => stream.addTrack(t));
  } catch (e) { console.log("whip: no test tone: " + e); }
  return stream;
}

function gathered(pc) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => { if (pc.iceGatheringState === "complete") resolve(); };
    pc.addEventListener("icegatheringstatechange", done);
    setTimeout(resolve, 3000);  // publish with what we have
  });
}

async function start(kind) {
  await stop();
  status("starting " + kind);
  try {
    if (kind === "camera" && !(navigator.mediaDevices && navigator.mediaDevices.getUserMedia))
      throw new Error("browsers allow the camera only on https:// or http://localhost pages; " +
                      "the test pattern works anywhere");
    media = kind === "camera"
      ? await navigator.mediaDevices.getUserMedia({video: {width: 1280, height: 720}, audio: true})
      : testPattern();
    $("preview").srcObject = media;
    pc = new RTCPeerConnection({bundlePolicy: "max-bundle"});
    pc.addEventListener("connectionstatechange", () => status(pc.connectionState));
    const h264 = (RTCRtpSender.getCapabilities("video") || {codecs: []}).codecs.filter(
      (c) => c.mimeType.toLowerCase() === "video/h264" &&
             /packetization-mode=1/.test(c.sdpFmtpLine || ""));
    for (const track of media.getTracks()) {
      const tr = pc.addTransceiver(track, {direction: "sendonly", streams: [media]});
      if (track.kind === "video") {
        if (!h264.length) throw new Error("this browser cannot send H.264");
        tr.setCodecPreferences(h264);
      }
    }
    await pc.setLocalDescription(await pc.createOffer());
    await gathered(pc);
    const headers = {"Content-Type": "application/sdp"};
    const token = $("token").value;
    if (token) headers["Authorization"] = "Bearer " + token;
    const r = await fetch(endpoint, {method: "POST", headers, body: pc.localDescription.sdp});
    const text = await r.text();
    if (r.status !== 201) throw new Error("server said " + text.trim());
    session = new URL(r.headers.get("Location"), location.href).href;
    await pc.setRemoteDescription({type: "answer", sdp: text});
    status("connecting");
    $("stop").disabled = false;
  } catch (e) {
    status("error: " + e.message);
    await stop(true);
  }
}

async function stop(keepStatus) {
  if (session) {
    const headers = {};
    if ($("token").value) headers["Authorization"] = "Bearer " + $("token").value;
    try { await fetch(session, {method: "DELETE", headers}); } catch (e) {}
    session = null;
  }
  if (pc) { pc.close(); pc = null; }
  if (media) { media.getTracks().forEach((t) => t.stop()); media = null; }
  if (timer) { clearInterval(timer); timer = null; }
  if (audioCtx) { audioCtx.close(); audioCtx = null; }
  $("stop").disabled = true;
  if (keepStatus !== true) status("idle");
}

$("camera").onclick = () => start("camera");
$("canvas").onclick = () => start("canvas");
$("stop").onclick = () => stop();
window.addEventListener("pagehide", () => {
  if (!session) return;
  const headers = {};
  if ($("token").value) headers["Authorization"] = "Bearer " + $("token").value;
  fetch(session, {method: "DELETE", headers, keepalive: true});
});
const q = new URLSearchParams(location.search);
if (q.get("token")) $("token").value = q.get("token");
if (q.get("start") === "camera" || q.get("start") === "canvas") start(q.get("start"));
</script>
</body></html>
"""


def _js(value: str) -> str:
    """A JSON string literal that is safe inside a <script> element."""
    return json.dumps(value).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def publish_page(path: str) -> str:
    """The publish page for stream ``path``."""
    return (
        _PAGE.replace("__PATH_HTML__", html.escape(path))
        .replace("__PATH_URL_JSON__", _js(quote(path)))
        .replace("__PATH_JSON__", _js(path))
    )
