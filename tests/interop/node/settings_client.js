// The npm `onvif` package as an NVR settings page uses it: set a video encoder configuration
// (the package picks Media2 when the camera has it) and the NTP servers, then read both back.
// Prints JSON: what was read back and every raw SOAP response (validated by the Python test).
// usage: node settings_client.js HOST PORT USER PASSWORD [set|get]  (get: read back only)
'use strict';
const { Cam } = require('onvif');

const [host, port, username, password, mode] = process.argv.slice(2);
const responses = [];
const out = { responses };

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
cam.connect((err) => {
  if (err) return finish(err);
  out.media2 = Boolean(cam.media2Support);
  const conf = {
    $: { token: 'VideoEncoder_1', GovLength: 40, Profile: 'High' },
    name: 'FromNode',
    encoding: 'H264',
    resolution: { width: 640, height: 360 },
    quality: 61,
    rateControl: { frameRateLimit: 20, encodingInterval: 1, bitrateLimit: 1500 },
    H264: { govLength: 40, profile: 'High' },
  };
  const ntp = { fromDHCP: false, NTPManual: [{ type: 'IPv4', IPv4Address: '192.0.2.77' }] };
  const setEncoder = (next) => (mode === 'get' ? next(null) : cam.setVideoEncoderConfiguration(conf, next));
  const setNTP = (next) => (mode === 'get' ? next(null) : cam.setNTP(ntp, next));
  setEncoder((err2) => {
    if (err2) return finish(err2);
    cam.getVideoEncoderConfigurations((err3, confs) => {
      if (err3) return finish(err3);
      out.encoders = confs;
      setNTP((err4) => {
        if (err4) return finish(err4);
        cam.getNTP((err5, info) => {
          if (err5) return finish(err5);
          out.ntp = info;
          clearTimeout(timer);
          finish(null);
        });
      });
    });
  });
});
