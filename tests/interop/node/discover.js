// Runs the npm `onvif` package's WS-Discovery probe and prints what it found as JSON.
// Usage: node discover.js [timeout_ms] [interface]
'use strict';
const onvif = require('onvif');

const timeout = parseInt(process.argv[2] || '3000', 10);
const device = process.argv[3];
const options = { timeout: timeout, resolve: false };
if (device) {
  options.device = device;
}
onvif.Discovery.on('error', function () {
  // Foreign datagrams (Hello, Bye) arrive on the same socket; the package reports them here.
});
onvif.Discovery.probe(options, function (err, found) {
  const out = (found || []).map(function (d) {
    const m = d.probeMatches.probeMatch;
    return {
      epr: m.endpointReference.address,
      xaddrs: String(m.XAddrs || '').split(' '),
      scopes: String(m.scopes || '').split(' '),
      types: String(m.types || ''),
    };
  });
  process.stdout.write(JSON.stringify({ devices: out }) + '\n');
});
