// Connects the npm `onvif` package (used by many NVR integrations) to one camera and
// prints what it learned as JSON: profiles, stream URIs, snapshot URI and every raw SOAP
// response (the Python test validates those against the ONVIF schemas).
// usage: node onvif_client.js HOST PORT USER PASSWORD
'use strict';
const { Cam } = require('onvif');

const [host, port, username, password] = process.argv.slice(2);
const responses = [];
const warnings = [];
const out = { responses, warnings };

function finish(err) {
  if (err) {
    out.error = String(err && err.message ? err.message : err);
  }
  process.stdout.write(JSON.stringify(out));
  process.exit(err ? 1 : 0);
}

const timer = setTimeout(() => finish(new Error('timeout')), 30000);

const cam = new Cam({ hostname: host, port: Number(port), username, password, timeout: 10000, autoconnect: false });
cam.on('rawResponse', (xml, status) => responses.push({ status, xml }));
cam.on('warning', (w) => warnings.push(String(w)));
cam.connect((err) => {
  if (err) return finish(err);
  out.media2 = Boolean(cam.media2Support);
  out.profiles = (cam.profiles || []).map((p) => ({
    token: p.$ && p.$.token,
    encoding: p.videoEncoderConfiguration && p.videoEncoderConfiguration.encoding,
    width: p.videoEncoderConfiguration && p.videoEncoderConfiguration.resolution &&
      p.videoEncoderConfiguration.resolution.width,
  }));
  out.activeSource = cam.activeSource || null;
  if (!cam.activeSource) {
    return finish(new Error('no usable media profile: ' + (warnings[0] || 'unknown')));
  }
  cam.getStreamUri({ protocol: 'RTSP' }, (err2, stream) => {
    if (err2) return finish(err2);
    out.uri = stream.uri;
    cam.getSnapshotUri({}, (err3, snap) => {
      if (err3) return finish(err3);
      out.snapshot = snap.uri;
      cam.getDeviceInformation((err4, info) => {
        if (err4) return finish(err4);
        out.serial = info.serialNumber;
        clearTimeout(timer);
        finish(null);
      });
    });
  });
});
