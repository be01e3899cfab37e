// onvifcam dashboard: plain JS, no build step, nothing from elsewhere.
// Data: GET /api/cameras (every 3 s and on camera/stream events), live events over
// Server-Sent Events (/api/events/stream). Everything is written with textContent.
"use strict";

const REFRESH_MS = 3000;
const SNAPSHOT_MS = 5000;
const MAX_LOG = 200;
const cards = new Map(); // slug -> {el, cam, snapAt}
let editing = null; // slug of the camera in the form, null: a new one
let refreshTimer = null;

const $ = (sel, root = document) => root.querySelector(sel);

function el(tag, props = {}, ...children) {
  const e = document.createElement(tag);
  Object.assign(e, props);
  for (const c of children) e.append(c);
  return e;
}

async function api(method, url, body) {
  const opts = { method, credentials: "same-origin", headers: {} };
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const r = await fetch(url, opts);
  let data = null;
  if (r.status !== 204) {
    try { data = await r.json(); } catch (_e) { data = null; }
  }
  if (!r.ok) {
    const err = new Error((data && data.error) || `HTTP ${r.status}`);
    err.field = data && data.field;
    err.status = r.status;
    throw err;
  }
  return data;
}

function toast(text) {
  const t = el("div", { className: "toast", textContent: text });
  document.body.append(t);
  setTimeout(() => t.remove(), 2500);
}

async function copy(text) {
  try {
    if (navigator.clipboard && window.isSecureContext) {
      await navigator.clipboard.writeText(text);
    } else {
      const ta = el("textarea", { value: text });
      ta.style.position = "fixed";
      ta.style.opacity = "0";
      document.body.append(ta);
      ta.select();
      document.execCommand("copy");
      ta.remove();
    }
    toast("Copied");
  } catch (_e) {
    toast("Copy failed: select the text instead");
  }
}

function urlRow(label, value) {
  const code = el("code", { textContent: value });
  const btn = el("button", { type: "button", className: "small copy", textContent: "Copy" });
  btn.addEventListener("click", () => copy(value));
  return el("div", { className: "url" }, el("span", { className: "label", textContent: label }), code, btn);
}

// Ready-to-paste commands for every ingest this server has on.
function pushCommands(cam) {
  const p = cam.push || {};
  const out = [];
  if (p.rtsp) {
    out.push(["ffmpeg", `ffmpeg -re -stream_loop -1 -i input.mp4 -c copy -f rtsp ${p.rtsp}`]);
    out.push(["GStreamer", "gst-launch-1.0 videotestsrc is-live=true ! x264enc tune=zerolatency "
      + `key-int-max=50 ! h264parse ! rtspclientsink location=${p.rtsp}`]);
  }
  if (p.rtmp) {
    out.push(["ffmpeg RTMP", `ffmpeg -re -stream_loop -1 -i input.mp4 -c copy -f flv ${p.rtmp}`]);
  }
  if (p.obs_server) {
    out.push(["OBS server", p.obs_server]);
    out.push(["OBS key", p.obs_key || "(leave empty)"]);
  }
  if (p.srt) {
    out.push(["SRT", `ffmpeg -re -stream_loop -1 -i input.mp4 -c copy -f mpegts '${p.srt}'`]);
  }
  if (p.whip) out.push(["WHIP (OBS)", p.whip]);
  return out;
}

function videoText(cam) {
  const parts = [cam.codec, cam.resolution];
  if (cam.fps) parts.push(`${Math.round(cam.fps * 10) / 10} fps`);
  return parts.filter(Boolean).join(" ");
}

function refreshSnapshot(entry, force) {
  const now = Date.now();
  const live = entry.cam.state === "online";
  if (!force && (!live || now - entry.snapAt < SNAPSHOT_MS)) return;
  entry.snapAt = now;
  const img = $(".snap", entry.el);
  img.src = `${entry.cam.api_snapshot_url}?t=${now}`;
}

function fillCard(entry) {
  const { el: card, cam } = entry;
  $(".name", card).textContent = cam.name;
  const st = $(".state", card);
  st.textContent = cam.state;
  st.className = `state pill ${cam.state}`;
  $(".video", card).textContent = videoText(cam);
  $(".bitrate", card).textContent = cam.state === "online" ? `${cam.bitrate_kbps} kbit/s` : "-";
  $(".readers", card).textContent = String(cam.readers);
  $(".publisher", card).textContent = cam.publisher_address
    ? `${cam.publisher_protocol} ${cam.publisher_address}` : "-";
  const urls = $(".urls", card);
  urls.replaceChildren(urlRow("RTSP", cam.rtsp_url), urlRow("ONVIF", cam.onvif_url));
  const cmds = $(".cmds", card);
  cmds.replaceChildren(...pushCommands(cam).map(([k, v]) => urlRow(k, v)));
  const editable = cam.origin !== "config";
  $(".edit", card).hidden = !editable;
  $(".remove", card).hidden = !editable;
  card.dataset.state = cam.state;
}

function makeCard(cam) {
  const card = $("#card").content.firstElementChild.cloneNode(true);
  card.dataset.slug = cam.slug;
  const entry = { el: card, cam, snapAt: 0 };
  const fire = (type, state) => async () => {
    const body = type === "motion" ? { type, state } : { type, state, input: "DI_1" };
    try {
      await api("POST", `/api/cameras/${encodeURIComponent(entry.cam.slug)}/events`, body);
    } catch (e) {
      toast(`${type}: ${e.message}`);
    }
  };
  $(".motion-on", card).addEventListener("click", fire("motion", true));
  $(".motion-off", card).addEventListener("click", fire("motion", false));
  $(".di-on", card).addEventListener("click", fire("digital_input", true));
  $(".di-off", card).addEventListener("click", fire("digital_input", false));
  $(".edit", card).addEventListener("click", () => openEditor(entry.cam.slug));
  $(".remove", card).addEventListener("click", async () => {
    if (!confirm(`Remove camera ${entry.cam.name}?`)) return;
    try {
      await api("DELETE", `/api/cameras/${encodeURIComponent(entry.cam.slug)}`);
      await refresh();
    } catch (e) {
      toast(`Remove: ${e.message}`);
    }
  });
  return entry;
}

async function refresh() {
  clearTimeout(refreshTimer);
  try {
    const data = await api("GET", "/api/cameras");
    const fallback = $("#fallback");
    if (fallback) fallback.remove();
    $("#app").hidden = false;
    const seen = new Set();
    const grid = $("#grid");
    for (const cam of data.cameras) {
      seen.add(cam.slug);
      let entry = cards.get(cam.slug);
      const wasLive = entry && entry.cam.state === "online";
      if (!entry) {
        entry = makeCard(cam);
        cards.set(cam.slug, entry);
        grid.append(entry.el);
      }
      entry.cam = cam;
      fillCard(entry);
      refreshSnapshot(entry, !entry.snapAt || wasLive !== (cam.state === "online"));
    }
    for (const [slug, entry] of cards) {
      if (!seen.has(slug)) {
        entry.el.remove();
        cards.delete(slug);
      }
    }
    const online = data.cameras.filter((c) => c.state === "online").length;
    $("#summary").textContent = `${data.cameras.length} cameras, ${online} online`;
    $("#empty").hidden = data.cameras.length > 0;
  } catch (e) {
    $("#summary").textContent = `cannot load cameras: ${e.message}`;
  }
  refreshTimer = setTimeout(refresh, REFRESH_MS);
}

// ---------------------------------------------------------------- event log
function describe(ev) {
  const skip = new Set(["type", "at", "id"]);
  return Object.entries(ev).filter(([k]) => !skip.has(k))
    .map(([k, v]) => `${k}=${typeof v === "object" ? JSON.stringify(v) : v}`).join(" ");
}

function logEvent(ev) {
  const list = $("#events");
  const t = new Date(ev.at * 1000);
  const li = el("li", {},
    el("time", { textContent: t.toLocaleTimeString() }),
    el("span", { className: "type", textContent: ev.type }),
    el("span", { textContent: describe(ev) }));
  li.dataset.type = ev.type;
  list.prepend(li);
  while (list.children.length > MAX_LOG) list.lastElementChild.remove();
}

let lastId = 0;
function onEvent(ev) {
  if (ev.id <= lastId) return;
  lastId = ev.id;
  logEvent(ev);
  if (/^(Camera|Stream|Endpoint)/.test(ev.type)) {
    clearTimeout(refreshTimer);
    refreshTimer = setTimeout(refresh, 200);
  }
}

async function connectEvents() {
  try {
    const data = await api("GET", "/api/events?limit=50");
    for (const ev of data.events) onEvent(ev);
  } catch (_e) { /* the stream below says whether events work */ }
  const live = $("#live");
  const source = new EventSource("/api/events/stream");
  source.onopen = () => { live.textContent = "events: live"; live.className = "pill live"; };
  source.onmessage = (m) => {
    try { onEvent(JSON.parse(m.data)); } catch (_e) { /* not JSON: ignore */ }
  };
  source.addEventListener("overflow", () => {
    live.textContent = "events: catching up";
  });
  source.onerror = () => { live.textContent = "events: reconnecting"; live.className = "pill off"; };
}

// ---------------------------------------------------------------- add / edit
const FIELDS = ["name", "path", "sub_path", "username", "password", "onvif_port", "address",
  "width", "height", "fps", "codec", "offline", "location", "model"];
const NUMBERS = new Set(["onvif_port", "width", "height", "fps"]);

async function openEditor(slug) {
  const form = $("#camera-form");
  form.reset();
  for (const i of form.querySelectorAll(".invalid")) i.classList.remove("invalid");
  $("#form-error").hidden = true;
  editing = slug;
  $("#editor-title").textContent = slug ? "Edit camera" : "Add camera";
  form.elements.name.disabled = Boolean(slug);
  if (slug) {
    try {
      const cam = await api("GET", `/api/cameras/${encodeURIComponent(slug)}`);
      for (const f of FIELDS) {
        const v = cam.config[f];
        form.elements[f].value = v === 0 || v === undefined || v === null ? "" : String(v);
      }
    } catch (e) {
      toast(`Edit: ${e.message}`);
      return;
    }
  }
  $("#editor").showModal();
}

function formBody() {
  const form = $("#camera-form");
  const body = {};
  for (const f of FIELDS) {
    const input = form.elements[f];
    if (input.disabled) continue;
    const v = input.value.trim();
    if (v === "") {
      if (editing) body[f] = NUMBERS.has(f) ? 0 : "";
      continue;
    }
    body[f] = NUMBERS.has(f) ? Number(v) : v;
  }
  return body;
}

async function save(ev) {
  ev.preventDefault();
  const form = $("#camera-form");
  for (const i of form.querySelectorAll(".invalid")) i.classList.remove("invalid");
  const err = $("#form-error");
  try {
    if (editing) {
      await api("PATCH", `/api/cameras/${encodeURIComponent(editing)}`, formBody());
    } else {
      await api("POST", "/api/cameras", formBody());
    }
    $("#editor").close();
    await refresh();
  } catch (e) {
    err.textContent = e.field ? `${e.field}: ${e.message}` : e.message;
    err.hidden = false;
    if (e.field && form.elements[e.field]) form.elements[e.field].classList.add("invalid");
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("#add").addEventListener("click", () => openEditor(null));
  $("#cancel").addEventListener("click", () => $("#editor").close());
  $("#camera-form").addEventListener("submit", save);
  $("#clear-log").addEventListener("click", () => $("#events").replaceChildren());
  setInterval(() => { for (const entry of cards.values()) refreshSnapshot(entry, false); }, 1000);
  refresh();
  connectEvents();
});
