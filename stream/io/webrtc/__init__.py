"""WebRTC in and out: ``veil serve`` and ``veil run SRC -o webrtc://HOST:PORT``.

A small aiohttp server hands out one page (``index.html`` here) and answers
WebRTC offers with aiortc:

- ``POST /offer``: a browser sends its camera; the anonymised video comes back on
  the same peer connection. Each camera gets its own stage graph, run by the server's ``run_graph``
  in a worker thread (``veil serve`` shares one detector between them).
- ``POST /watch``: a receive-only viewer gets the broadcast: the output of the
  newest camera still connected, or, with ``WebRtcSink``, the published source.

The runtime owns asyncio (one event loop in one thread); stages stay synchronous.
Between them are only newest-wins slots: a camera frame the graph is too busy to take
is dropped before anonymising (``FrameSlot``), and an outgoing track keeps only the
newest graph output. Fail closed: an outgoing track is fed by graph output alone,
never by a received frame, and a graph that fails covers the frame whole and hangs
up on its peer.
"""

from veil.stream.io.webrtc.server import DEFAULT_HOST, DEFAULT_PORT, WebRtcServer
from veil.stream.io.webrtc.sink import WebRtcSink, parse_url

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "WebRtcServer", "WebRtcSink", "parse_url"]
