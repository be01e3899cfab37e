// Subscribes to one camera's events with the npm `onvif` package (its pull-point loop:
// CreatePullPointSubscription, PullMessages PT1M, Renew after every pull) and prints one JSON
// line per thing that happens: every raw SOAP response (the Python test validates them
// against the ONVIF schemas), every event with its topic, operation and items, every error.
// usage: node events_client.js HOST PORT USER PASSWORD SECONDS
'use strict';
const { Cam } = require('onvif');

const [host, port, username, password, seconds] = process.argv.slice(2);

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

function items(group) {
  const out = {};
  let list = group && group.simpleItem;
  if (!list) return out;
  if (!Array.isArray(list)) list = [list];
  for (const item of list) {
    if (item && item.$) out[item.$.Name] = String(item.$.Value);
  }
  return out;
}

const cam = new Cam({ hostname: host, port: Number(port), username, password, timeout: 10000, autoconnect: false });
cam.on('rawResponse', (xml, status) => emit({ kind: 'raw', status, xml }));
cam.connect((err) => {
  if (err) {
    emit({ kind: 'error', error: String(err && err.message ? err.message : err) });
    process.exit(1);
  }
  emit({ kind: 'connected', events: Boolean(cam.uri && cam.uri.events) });
  cam.on('eventsError', (e) => emit({ kind: 'eventsError', error: String(e && e.message ? e.message : e) }));
  cam.on('event', (message) => {
    const m = message.message && message.message.message;
    emit({
      kind: 'event',
      topic: message.topic && message.topic._,
      operation: m && m.$ && m.$.PropertyOperation,
      utc: m && m.$ && String(m.$.UtcTime),
      items: Object.assign(items(m && m.source), items(m && m.data)),
    });
  });
});
setTimeout(() => process.exit(0), Number(seconds) * 1000);
