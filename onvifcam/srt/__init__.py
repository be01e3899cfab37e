"""SRT ingest: a listener for callers that push MPEG-TS (packet, handshake, crypto,
receiver and listener are sans-I/O; server.py is the asyncio part)."""
