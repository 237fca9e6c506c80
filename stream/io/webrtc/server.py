"""The page, ``/offer`` for cameras and ``/watch`` for viewers."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from veil.errors import MissingDependency, OutputError, VeilError, reason
from veil.stream.frame import Frame
from veil.stream.io.webrtc.session import CameraSession
from veil.stream.io.webrtc.tracks import Broadcast, discard

try:
    from aiohttp import web
    from aiortc import RTCPeerConnection, RTCSessionDescription
except ImportError as error:
    raise MissingDependency(f"WebRTC needs {error.name}: pip install 'veil[webrtc]'") from None

if TYPE_CHECKING:
    from typing import Self

PAGE = Path(__file__).with_name("index.html")
DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8080
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0
JOIN_TIMEOUT_S = 15.0  # a camera's graph: its own joins take up to 5 s each
MAX_CAMERAS = 4
LAST_FRAMES_S = 0.5  # a graph that stops: its peer is hung up on this much later
MAX_BODY = 256 * 1024  # an SDP offer is a few kB


class WebRtcServer:
    """The page, ``/offer`` for cameras and ``/watch`` for viewers, on an event loop
    in its own thread. ``start()`` binds the port (``OutputError`` when it cannot);
    ``stop()`` hangs up on every peer and joins every thread, each with a timeout.

    ``run_graph(source, sink, log, controls)`` runs each camera's graph (``veil serve`` gives
    one that runs the live pipeline); without it the server serves viewers only
    (``WebRtcSink``): frames come from ``publish``. ``controls()`` makes each camera's
    veil.stream.controls.LiveControls, which the page reads and changes at ``/session/N``. ``tap`` sees every frame a camera's
    graph outputs, in that graph's sink thread (tests use it to judge what leaves the
    server).
    """

    def __init__(
        self,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        *,
        run_graph: Callable[..., object] | None = None,
        controls: Callable[[], object] | None = None,
        max_cameras: int = MAX_CAMERAS,
        tap: Callable[[Frame], None] | None = None,
        log: Callable[[str], None] = print,
    ):
        self.host, self.port = host, port
        self.run_graph, self.controls = run_graph, controls
        self.cameras, self.max_cameras = run_graph is not None, max_cameras
        self.tap, self.log = tap, log
        self.sessions: list[CameraSession] = []
        self._numbers = 0
        self._peers: set[RTCPeerConnection] = set()
        self._broadcast = Broadcast()
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
        app.router.add_get("/session/{number}", self._session_status)
        app.router.add_post("/session/{number}", self._session_change)
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
                asyncio.ensure_future(discard(track))  # only one video is returned
        self._numbers += 1
        try:
            controls = None if self.controls is None else await asyncio.get_running_loop().run_in_executor(None, self.controls)
        except BaseException:
            await self._hang_up(pc)
            raise
        session = CameraSession(self, pc, self._numbers, controls)
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
        if controls is None:
            return answer
        return web.json_response({**json.loads(answer.text), "session": session.number})  # the page's controls are at /session/N

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

    def _session(self, request: web.Request) -> CameraSession:
        found = [s for s in self.sessions if str(s.number) == request.match_info["number"] and s.controls is not None]
        if not found:
            raise web.HTTPNotFound(text=f"no camera {request.match_info['number']} on this server (it stopped, or never was)")
        return found[0]

    async def _session_status(self, request: web.Request) -> web.Response:
        return web.json_response(self._session(request).controls.status())

    async def _session_change(self, request: web.Request) -> web.Response:
        """``{"mode": ..., "strength": ..., "keep": true|false}``: any of them."""
        session = self._session(request)
        try:
            body = await request.json()
        except ValueError:
            raise web.HTTPBadRequest(text='the body is not JSON: expected {"mode": ..., "strength": ..., "keep": ...}') from None
        if not isinstance(body, dict) or set(body) - {"mode", "strength", "keep"}:
            raise web.HTTPBadRequest(text="expected a JSON object of mode, strength and keep")
        change = functools.partial(session.controls.change, **body)
        try:
            status = await asyncio.get_running_loop().run_in_executor(None, change)  # a generator may load
        except (VeilError, TypeError, ValueError) as error:
            raise web.HTTPBadRequest(text=str(error)) from None
        return web.json_response(status)

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


