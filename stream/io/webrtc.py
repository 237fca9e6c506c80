"""WebRTC in and out: ``veil serve`` and ``veil run SRC -o webrtc://HOST:PORT``.

A small aiohttp server hands out one page (``stream/io/web/index.html``) and answers
WebRTC offers with aiortc:

- ``POST /offer``: a browser sends its camera; the anonymised video comes back on
  the same peer connection. Each camera gets its own stage graph (``run_live`` in a
  worker thread); all graphs share one detector.
- ``POST /watch``: a receive-only viewer gets the broadcast: the output of the
  newest camera still connected, or, with ``WebRtcSink``, the published source.

The runtime owns asyncio (one event loop in one thread); stages stay synchronous.
Between them are only newest-wins slots: a camera frame the graph is too busy to take
is dropped before anonymising (``FrameSlot``), and an outgoing track keeps only the
newest graph output. Fail closed: an outgoing track is fed by graph output alone,
never by a received frame, and a graph that fails covers the frame whole and hangs
up on its peer.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import av

from veil.errors import MissingDependency, OutputError, reason
from veil.stream.frame import Frame
from veil.stream.io.live import CLOCK, CoverGaps, FrameSlot
from veil.stream.io.sink import video_picture

try:
    from aiohttp import web
    from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
    from aiortc.mediastreams import MediaStreamError
except ImportError as error:
    raise MissingDependency(f"WebRTC needs {error.name}: pip install 'veil[webrtc]'") from None

if TYPE_CHECKING:
    from typing import Self

PAGE = Path(__file__).with_name("web") / "index.html"
DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8080
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0
JOIN_TIMEOUT_S = 15.0  # a camera's graph: its own joins take up to 5 s each
CAMERA_GAP_S = 0.5  # no frame for this long: repeat the last picture, covered whole
MAX_CAMERAS = 4
LAST_FRAMES_S = 0.5  # a graph that stops: its peer is hung up on this much later
MAX_BODY = 256 * 1024  # an SDP offer is a few kB


class _OutputTrack(MediaStreamTrack):
    """An outgoing video track fed with graph output only; keeps the newest frame.

    ``push`` and ``recv`` both run on the event loop. With ``restamp`` the frames get
    this track's own 90 kHz clock (a broadcast mixes graphs with different clocks);
    otherwise they keep the graph's pts, which are already on ``CLOCK``.
    """

    kind = "video"

    def __init__(self, *, restamp: bool):
        super().__init__()
        self.restamp = restamp
        self._frame: Frame | None = None
        self._ready = asyncio.Event()
        self._t0: float | None = None
        self._last_pts = -1
        self.sent = 0

    def push(self, frame: Frame) -> None:
        self._frame = frame
        self._ready.set()

    async def recv(self) -> av.VideoFrame:
        while self._frame is None and self.readyState == "live":
            self._ready.clear()
            await self._ready.wait()
        if self.readyState != "live":
            raise MediaStreamError
        frame, self._frame = self._frame, None
        picture = video_picture(frame.image)
        picture.pts = self._pts(frame)
        picture.time_base = CLOCK
        self.sent += 1
        return picture

    def _pts(self, frame: Frame) -> int:
        if self.restamp:
            now = time.monotonic()
            if self._t0 is None:
                self._t0 = now
            pts = round((now - self._t0) / CLOCK)
        else:
            pts = round(frame.pts * frame.time_base / CLOCK)
        self._last_pts = max(self._last_pts + 1, pts)
        return self._last_pts

    def stop(self) -> None:
        super().stop()
        self._ready.set()


class _Broadcast:
    """What ``/watch`` viewers see: one source at a time, the newest one still on.

    Runs on the event loop. A viewer that joins gets the latest frame at once.
    """

    def __init__(self):
        self.tracks: set[_OutputTrack] = set()
        self.sources: list[object] = []
        self.latest: Frame | None = None

    def add_source(self, key: object) -> None:
        self.sources.append(key)

    def remove_source(self, key: object) -> None:
        if key in self.sources:
            self.sources.remove(key)

    def publish(self, key: object, frame: Frame) -> None:
        if not self.sources or self.sources[-1] is not key:
            return
        self.latest = frame
        for track in self.tracks:
            track.push(frame)

    def subscribe(self) -> _OutputTrack:
        track = _OutputTrack(restamp=True)
        if self.latest is not None:
            track.push(self.latest)
        self.tracks.add(track)
        return track

    def unsubscribe(self, track: _OutputTrack) -> None:
        self.tracks.discard(track)
        track.stop()


class _PeerSource(CoverGaps):
    """A camera session's frames as the graph reads them (see ``run_live``)."""

    rate = 30

    def __init__(self, slot: FrameSlot):
        super().__init__(slot, gap_s=CAMERA_GAP_S)

    @property
    def dropped(self) -> int:
        return self.slot.dropped


class _SessionSink:
    """The graph's sink: hands each anonymised frame to the event loop."""

    def __init__(self, server: WebRtcServer, session: CameraSession):
        self.server, self.session = server, session

    def write(self, frame: Frame) -> None:
        self.session.frames_out += 1
        self.server._from_graph(self.session, frame)

    def close(self) -> None:
        pass


class CameraSession:
    """One browser camera: its peer connection, its slot, its graph thread."""

    def __init__(self, server: WebRtcServer, pc: RTCPeerConnection, number: int):
        self.server, self.pc, self.number = server, pc, number
        self.slot = FrameSlot()
        self.output = _OutputTrack(restamp=False)
        self.frames_in = self.frames_out = 0
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run_graph, name=f"veil-camera-{number}", daemon=True)
        self._reader: asyncio.Task | None = None

    def start(self, track: MediaStreamTrack) -> None:
        """On the event loop: start reading ``track`` and the graph thread."""
        self.thread.start()
        self._reader = asyncio.ensure_future(self._read(track))

    async def _read(self, track: MediaStreamTrack) -> None:
        loop = asyncio.get_running_loop()
        first: float | None = None
        error = None
        try:
            while True:
                decoded = await track.recv()
                now = time.monotonic()
                convert = functools.partial(decoded.to_ndarray, format="bgr24")
                image = await loop.run_in_executor(None, convert)
                if decoded.pts is not None and decoded.time_base is not None:
                    source_time = float(decoded.pts * decoded.time_base)
                else:
                    source_time = now
                if first is None:
                    first = source_time
                pts = round((source_time - first) / CLOCK)
                self.frames_in += 1
                self.slot.put(Frame(image=image, pts=pts, time_base=CLOCK, index=0, captured=now))
        except MediaStreamError:
            pass  # the peer hung up or the connection closed
        except Exception as failure:  # noqa: BLE001 - ends the graph with the reason
            error = failure
        finally:
            self.slot.end(error)

    def _run_graph(self) -> None:
        from veil.stream.jobs import run_live

        server = self.server
        source = _PeerSource(self.slot)
        try:
            run_live(
                source,
                _SessionSink(server, self),
                server.options,
                server.detector,
                log=self._log,
            )
        except Exception as error:  # noqa: BLE001 - logged; the peer is hung up on
            self.error = error
            server.log(f"veil: camera {self.number} stopped: {error}")
        finally:
            server._graph_ended(self)

    def _log(self, text: str) -> None:
        """The graph's lines, saying which camera they are about."""
        if text.startswith("veil: "):
            text = f"veil: camera {self.number}: {text.removeprefix('veil: ')}"
        self.server.log(text)

    def end(self) -> None:
        """No more frames: the graph finishes what it holds and stops."""
        self.slot.end()
        if self._reader is not None:
            self._reader.cancel()


class WebRtcServer:
    """The page, ``/offer`` for cameras and ``/watch`` for viewers, on an event loop
    in its own thread. ``start()`` binds the port (``OutputError`` when it cannot);
    ``stop()`` hangs up on every peer and joins every thread, each with a timeout.

    ``cameras=False`` serves viewers only (``WebRtcSink``): frames come from
    ``publish``. ``tap`` sees every frame a camera's graph outputs, in that graph's
    sink thread (tests use it to judge what leaves the server).
    """

    def __init__(
        self,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        *,
        options=None,
        detector=None,
        cameras: bool = True,
        max_cameras: int = MAX_CAMERAS,
        tap: Callable[[Frame], None] | None = None,
        log: Callable[[str], None] = print,
    ):
        if cameras and options is None:
            raise ValueError("a server that takes cameras needs Options")
        if cameras and detector is None:
            from veil.stream.jobs import live_detector

            detector = live_detector(options)
        self.host, self.port = host, port
        self.options, self.detector = options, detector
        self.cameras, self.max_cameras = cameras, max_cameras
        self.tap, self.log = tap, log
        self.sessions: list[CameraSession] = []
        self._numbers = 0
        self._peers: set[RTCPeerConnection] = set()
        self._broadcast = _Broadcast()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    # --- lifecycle (any thread) -------------------------------------------
    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def start(self) -> Self:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="veil-webrtc", daemon=True)
        self._thread.start()
        try:
            self._call(self._open(), START_TIMEOUT_S)
        except BaseException:
            self._close_loop()
            raise
        return self

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        if self._loop is None:
            return
        try:
            self._call(self._shutdown(), timeout)
        except concurrent.futures.TimeoutError:
            self.log(f"veil: the WebRTC server did not stop within {timeout:g} s")
        finally:
            self._close_loop()
        for session in list(self.sessions):
            session.slot.end()
            session.thread.join(timeout=JOIN_TIMEOUT_S)
            if session.thread.is_alive():
                self.log(f"veil: camera {session.number}'s graph did not stop")

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def publish(self, frame: Frame) -> None:
        """Broadcast an (anonymised) frame to the viewers; any thread."""
        self._post(self._broadcast.publish, self, frame)

    @property
    def viewers(self) -> int:
        return len(self._broadcast.tracks)

    def _call(self, coroutine, timeout: float):
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:  # not the built-in one before 3.11
            future.cancel()
            raise

    def _post(self, callback, *args) -> None:
        """Run ``callback`` on the loop; nothing if the server has stopped (a frame
        for a peer that has gone is dropped, after anonymisation)."""
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop has closed
            loop.call_soon_threadsafe(callback, *args)

    def _close_loop(self) -> None:
        loop, self._loop = self._loop, None
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(timeout=STOP_TIMEOUT_S)
        if not self._thread.is_alive():
            loop.close()

    # --- graph threads --------------------------------------------------
    def _from_graph(self, session: CameraSession, frame: Frame) -> None:
        if self.tap is not None:
            self.tap(frame)
        self._post(self._deliver, session, frame)

    def _deliver(self, session: CameraSession, frame: Frame) -> None:
        session.output.push(frame)
        self._broadcast.publish(session, frame)

    def _graph_ended(self, session: CameraSession) -> None:
        self._post(self._forget, session)

    def _forget(self, session: CameraSession) -> None:
        if session in self.sessions:
            self.sessions.remove(session)
        self._broadcast.remove_source(session)
        # The last frames (a failed one, covered whole) leave before the hang-up.
        hang_up = functools.partial(self._hang_up, session.pc)
        asyncio.get_running_loop().call_later(LAST_FRAMES_S, _spawn, hang_up)

    # --- on the event loop ---------------------------------------------
    async def _open(self) -> None:
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_get("/", self._page)
        app.router.add_post("/offer", self._offer)
        app.router.add_post("/watch", self._watch)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        try:
            await site.start()
        except OSError as error:
            await runner.cleanup()
            raise OutputError(f"cannot serve on {self.host}:{self.port}: {reason(error)}") from None
        self._runner = runner
        self.port = runner.addresses[0][1]
        if not self.cameras:
            self._broadcast.add_source(self)

    async def _shutdown(self) -> None:
        for session in self.sessions:
            session.end()
        await asyncio.gather(*(self._hang_up(pc) for pc in list(self._peers)), return_exceptions=True)
        for track in list(self._broadcast.tracks):
            self._broadcast.unsubscribe(track)
        if self._runner is not None:
            await self._runner.cleanup()

    async def _hang_up(self, pc: RTCPeerConnection) -> None:
        if pc in self._peers:
            self._peers.discard(pc)
            await pc.close()

    async def _page(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(PAGE, headers={"Cache-Control": "no-store"})

    async def _offer(self, request: web.Request) -> web.Response:
        """A camera: its video in, the anonymised video back on the same connection."""
        if not self.cameras:
            raise web.HTTPConflict(text="this server only broadcasts: press Watch")
        pc, tracks = await self._accept(await _read_offer(request))
        video = [track for track in tracks if track.kind == "video"]
        if not video:
            await self._hang_up(pc)
            raise web.HTTPBadRequest(text="the offer sends no video: share a camera")
        if len(self.sessions) >= self.max_cameras:
            await self._hang_up(pc)
            raise web.HTTPServiceUnavailable(text=f"busy: {self.max_cameras} cameras are already connected")
        for track in tracks:
            if track is not video[0]:
                asyncio.ensure_future(_discard(track))  # only one video is returned
        self._numbers += 1
        session = CameraSession(self, pc, self._numbers)
        pc.addTrack(session.output)
        self.sessions.append(session)
        self._broadcast.add_source(session)
        session.start(video[0])
        pc.on("connectionstatechange", functools.partial(self._on_state, pc, session))
        try:
            answer = await self._answer(pc)
        except BaseException:
            session.end()
            await self._hang_up(pc)
            raise
        self.log(f"veil: camera {session.number} connected")
        return answer

    async def _watch(self, request: web.Request) -> web.Response:
        """A viewer: receive-only, gets the broadcast."""
        pc, tracks = await self._accept(await _read_offer(request))
        if tracks:
            await self._hang_up(pc)
            raise web.HTTPBadRequest(text="a viewer's offer must be receive-only")
        if not any(t.kind == "video" for t in pc.getTransceivers()):
            await self._hang_up(pc)
            raise web.HTTPBadRequest(text="the offer asks for no video")
        track = self._broadcast.subscribe()
        pc.addTrack(track)
        pc.on("connectionstatechange", functools.partial(self._on_state, pc, track))
        try:
            return await self._answer(pc)
        except BaseException:
            self._broadcast.unsubscribe(track)
            await self._hang_up(pc)
            raise

    async def _accept(self, offer: RTCSessionDescription) -> tuple[RTCPeerConnection, list]:
        pc = RTCPeerConnection()
        self._peers.add(pc)
        tracks = []
        pc.on("track", tracks.append)
        try:
            await pc.setRemoteDescription(offer)
        except Exception as error:  # noqa: BLE001 - whatever the peer sent, it is refused
            await self._hang_up(pc)
            raise _bad_offer(error) from None
        if not pc.getTransceivers():
            await self._hang_up(pc)
            raise web.HTTPBadRequest(text="bad offer: the SDP has no media section")
        return pc, tracks

    async def _answer(self, pc: RTCPeerConnection) -> web.Response:
        try:
            await pc.setLocalDescription(await pc.createAnswer())
        except Exception as error:  # noqa: BLE001 - e.g. no codec in common
            raise _bad_offer(error) from None
        answer = pc.localDescription
        return web.json_response({"sdp": answer.sdp, "type": answer.type})

    async def _on_state(self, pc: RTCPeerConnection, owner) -> None:
        if pc.connectionState not in ("failed", "closed"):
            return
        if isinstance(owner, CameraSession):
            owner.end()
        else:
            self._broadcast.unsubscribe(owner)
        await self._hang_up(pc)


async def _read_offer(request: web.Request) -> RTCSessionDescription:
    expected = 'expected JSON {"sdp": "...", "type": "offer"}'
    try:
        body = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(text=f"the body is not JSON: {expected}") from None
    if not isinstance(body, dict) or not isinstance(body.get("sdp"), str):
        raise web.HTTPBadRequest(text=expected)
    if body.get("type") != "offer":
        raise web.HTTPBadRequest(text=f"type must be 'offer', got {body.get('type')!r}")
    return RTCSessionDescription(sdp=body["sdp"], type="offer")


def _bad_offer(error: Exception) -> web.HTTPBadRequest:
    text = str(error) or f"unreadable SDP ({type(error).__name__})"
    return web.HTTPBadRequest(text=f"bad offer: {text}")


def _spawn(coroutine_function) -> None:
    asyncio.ensure_future(coroutine_function())


async def _discard(track: MediaStreamTrack) -> None:
    """Read a track nobody uses, so aiortc's unbounded queue for it stays empty."""
    with contextlib.suppress(MediaStreamError):
        while True:
            await track.recv()


def serve(host: str, port: int, options, *, log=print) -> None:
    """``veil serve``: the page, cameras in, anonymised video out, until Ctrl-C."""
    options.anonymiser()  # a bad mode or shape fails before the model loads
    server = WebRtcServer(host, port, options=options, log=log).start()
    try:  # from here on, Ctrl-C must reach server.stop(): its loop thread keeps the process alive
        log(f"veil: serving on {server.url} (Ctrl-C to stop)")
        if host not in ("127.0.0.1", "::1", "localhost"):
            log("veil: browsers share a camera only with https or localhost pages; from other machines, Watch works, Use my camera does not")
        while True:
            time.sleep(1.0)
    except KeyboardInterrupt:
        pass  # Ctrl-C or SIGTERM is how a server is meant to stop
    finally:
        log("veil: stopping")
        server.stop()


def parse_url(url: str) -> tuple[str, int]:
    """(host, port) of ``webrtc://HOST:PORT``; either part may be left out."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise OutputError(f"bad WebRTC output {url!r}: {error}") from None
    if parts.scheme != "webrtc":
        raise OutputError(f"bad WebRTC output {url!r}: expected webrtc://HOST:PORT")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise OutputError(f"bad WebRTC output {url!r}: expected webrtc://HOST:PORT")
    return parts.hostname or DEFAULT_HOST, DEFAULT_PORT if port is None else port


class WebRtcSink:
    """``-o webrtc://HOST:PORT``: serves the page, and every frame written (graph
    output, so already anonymised) goes to the viewers who press Watch."""

    def __init__(self, url: str, *, log=print):
        host, port = parse_url(url)
        self.log = log
        self.server = WebRtcServer(host, port, cameras=False, log=log).start()
        self.frames = 0
        log(f"veil: watch on {self.server.url}")

    @property
    def url(self) -> str:
        return self.server.url

    def write(self, frame: Frame) -> None:
        self.server.publish(frame)
        self.frames += 1

    def close(self) -> None:
        self.server.stop()
