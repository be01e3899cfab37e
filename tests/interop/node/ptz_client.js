// The npm `onvif` package driving PTZ: AbsoluteMove, then GetStatus until the head is idle.
// Prints JSON: every status read, and every raw SOAP response (validated by the Python test).
// usage: node ptz_client.js HOST PORT USER PASSWORD X Y ZOOM
'use strict';
const { Cam } = require('onvif');

const [host, port, username, password, x, y, zoom] = process.argv.slice(2);
const responses = [];
const statuses = [];
const out = { responses, statuses };

function finish(err) {
  if (err) {
    out.error = String(err && err.message ? err.message : err);
  }
  process.stdout.write(JSON.stringify(out));
  process.exit(err ? 1 : 0);
}

const timer = setTimeout(() => finish(new Error('timeout: the head did not stop')), 30000);
const cam = new Cam({ hostname: host, port: Number(port), username, password, timeout: 10000, autoconnect: false });
cam.on('rawResponse', (xml, status) => responses.push({ status, xml }));
cam.connect((err) => {
  if (err) return finish(err);
  cam.absoluteMove({ x: Number(x), y: Number(y), zoom: Number(zoom) }, (err2) => {
    if (err2) return finish(err2);
    const poll = () => cam.getStatus((err3, status) => {
      if (err3) return finish(err3);
      statuses.push(status);
      const ms = status.moveStatus || {};
      if (ms.panTilt === 'IDLE' && ms.zoom === 'IDLE') {
        clearTimeout(timer);
        return finish(null);
      }
      setTimeout(poll, 100);
    });
    poll();
  });
});
