"""One browser camera: its frames in, its graph, its anonymised video back."""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from typing import TYPE_CHECKING

from veil.errors import MissingDependency
from veil.stream.elements import Sink, Source
from veil.stream.frame import Frame
from veil.stream.io.live import CLOCK, CoverGaps, FrameSlot
from veil.stream.io.webrtc.tracks import OutputTrack

try:
    from aiortc import MediaStreamTrack, RTCPeerConnection
    from aiortc.mediastreams import MediaStreamError
except ImportError as error:
    raise MissingDependency(f"WebRTC needs {error.name}: pip install 'veil[webrtc]'") from None

if TYPE_CHECKING:
    from veil.stream.io.webrtc.server import WebRtcServer

CAMERA_GAP_S = 0.5  # no frame for this long: repeat the last picture, covered whole


class PeerSource(CoverGaps, Source):
    """A camera session's frames as the graph reads them (a live source: the newest frame, covered while none comes)."""

    rate = 30
    live = True

    def __init__(self, slot: FrameSlot):
        super().__init__(slot, gap_s=CAMERA_GAP_S)

    @property
    def dropped(self) -> int:
        return self.slot.dropped


class SessionSink(Sink):
    """The graph's sink: hands each anonymised frame to the event loop."""

    def __init__(self, server: WebRtcServer, session: CameraSession):
        self.server, self.session = server, session

    def write(self, frame: Frame) -> None:
        self.session.frames_out += 1
        self.server._from_graph(self.session, frame)

    def close(self) -> None:
        """The peer connection is the server's to close."""


class CameraSession:
    """One browser camera: its peer connection, its slot, its graph thread."""

    def __init__(self, server: WebRtcServer, pc: RTCPeerConnection, number: int, controls=None):
        self.server, self.pc, self.number, self.controls = server, pc, number, controls
        self.slot = FrameSlot()
        self.output = OutputTrack(restamp=False)
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
        server = self.server
        try:
            server.run_graph(PeerSource(self.slot), SessionSink(server, self), self._log, self.controls)
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
