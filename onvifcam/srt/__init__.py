"""SRT ingest: a listener for callers that push MPEG-TS (packet, handshake, crypto,
receiver and listener are sans-I/O; server.py is the asyncio part)."""

# libsrt's SRTO_PASSPHRASE accepts 10..79 characters (srt-live-transmit, ffmpeg's libsrt);
# a longer one is refused there, so a peer could never match it.
PASSPHRASE_MIN = 10
PASSPHRASE_MAX = 79
