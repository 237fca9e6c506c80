"""The live encoder sink: H.264 and AAC to an RTMP server (what YouTube, Twitch and
nginx-rtmp accept), an SRT/UDP peer, or a recording file.

Live frames carry capture-clock timestamps and decoded audio (see ``veil.stream.io.live``);
both are encoded here with low-latency settings. When a network output drops (the
server restarts), frames are dropped (they are anonymised; nothing leaks) and the
stream is republished with backoff until the output has been down ``give_up_s``.
A recording is written under a partial name and named only by ``commit()``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av

from veil.errors import OutputError, reason
from veil.stream.elements import OutputSink
from veil.stream.frame import Frame
from veil.stream.io import credentials
from veil.stream.io.partial import PartialFile
from veil.stream.io.sink import AudioEncoder, add_video, finish, tag, video_picture

AUDIO_GAP_S = 0.1  # a longer hole in the audio (a lost source) is filled with silence
OPEN_TIMEOUT_S = 5.0
MAX_INTERLEAVE_S = 0.1
NETWORK_FORMATS = {"rtmp": "flv", "rtmps": "flv", "srt": "mpegts", "udp": "mpegts", "tcp": "mpegts"}


def is_network_output(target: str) -> bool:
    return target.split("://", 1)[0].lower() in NETWORK_FORMATS if "://" in target else False


class LiveEncoderSink(OutputSink):
    def __init__(
        self,
        target: str,
        *,
        width: int,
        height: int,
        rate: Fraction,
        time_base: Fraction,
        audio: bool,
        give_up_s: float = 30.0,
        log: Callable[[str], None] = print,
        metadata: dict[str, str] | None = None,
        preset: str | None = None,
    ):
        """``metadata``: a recording's container tags (veil.stream.io.provenance's marks).
        ``preset``: x264's speed in place of the live default (veil.stream.io.sink.add_video)."""
        self.target, self.log, self.metadata, self.preset = target, log, metadata, preset
        self.network = is_network_output(target)
        self.path = None if self.network else Path(target)
        self.file = None if self.network else PartialFile(self.path)  # the claim on a recording
        self.partial = None if self.network else self.file.partial
        self.width, self.height, self.rate, self.time_base = width, height, Fraction(rate), time_base
        self.with_audio, self.give_up_s = audio, give_up_s
        self.frames = self.unsent = 0
        self.container = None
        self._down_since: float | None = None
        self._retry_at = 0.0
        self._backoff = 0.5
        self._open()  # the first connection must work: a wrong URL is the user's to fix

    # --- connection -------------------------------------------------------
    def _open(self) -> None:
        scheme = self.target.split("://", 1)[0].lower() if self.network else None
        try:
            if self.network:
                # The muxer holds video until audio of the same time is there; bound that
                # wait, or audio that runs slow (camera clocks drift) delays the video more
                # and more.
                self.container = av.open(
                    self.target, mode="w", format=NETWORK_FORMATS[scheme], timeout=OPEN_TIMEOUT_S,
                    container_options={"max_interleave_delta": str(round(MAX_INTERLEAVE_S * 1e6))},
                )  # fmt: skip
            else:
                self.container = av.open(str(self.partial), mode="w")
        except (av.FFmpegError, OSError, ValueError) as error:
            self._abandon_recording()
            raise OutputError(f"cannot publish to {self.target}: {reason(error)}") from None
        try:
            self._add_streams()
            self.container.start_encoding()  # PyAV connects on the first write; connect now
        except (av.FFmpegError, OSError) as error:
            self._close_quietly()
            self._abandon_recording()
            raise OutputError(f"cannot publish to {self.target}: {reason(error)}") from None
        except BaseException:
            self._close_quietly()
            self._abandon_recording()
            raise

    def _abandon_recording(self) -> None:
        """A recording that could not even start is removed (a network output has none)."""
        if self.file is not None and self.frames == 0:
            self.file.abort()

    def _add_streams(self) -> None:
        fps = float(self.rate)
        # Keyframes every 2 s (what streaming platforms ask), no B-frames, no lookahead.
        self.video = add_video(self.container, self.width, self.height, self.rate, self.time_base, live=True,
                               keyframe_every=max(1, round(2 * fps)), preset=self.preset)
        if self.metadata and not self.network:
            tag(self.container, self.metadata)
        if self.video.codec_context.name == "libx264":
            maxrate = str(max(500_000, int(self.width * self.height * fps * 0.15)))
            self.video.options = {**self.video.options, "maxrate": maxrate, "bufsize": maxrate}
        self.audio = AudioEncoder(self.container, gap_s=AUDIO_GAP_S) if self.with_audio else None

    def _close_quietly(self) -> None:
        container, self.container = self.container, None
        try:
            container.close()
        except (av.FFmpegError, OSError):
            pass  # the peer is gone; what it did not take is lost either way

    def _drop_connection(self, reason: str) -> None:
        self._close_quietly()
        now = time.monotonic()
        if self._down_since is None:
            self._down_since = now
            self._backoff = 0.5
            self.log(f"veil: output {self.target} lost ({reason}); republishing")
        self._retry_at = now + self._backoff

    def _reconnect(self) -> bool:
        now = time.monotonic()
        if now - self._down_since > self.give_up_s:
            raise OutputError(f"output {self.target} down for {self.give_up_s:g} s; giving up")
        if now < self._retry_at:
            return False
        try:
            self._open()
        except OutputError as error:
            self._backoff = min(self._backoff * 2, 8.0)
            self._retry_at = time.monotonic() + self._backoff
            self.log(f"veil: republish failed ({error}); next try in {self._backoff:.1f} s")
            return False
        self.log(f"veil: output {self.target} republished after {now - self._down_since:.1f} s")
        self._down_since = None
        return True

    # --- frames -------------------------------------------------------------
    def write(self, frame: Frame) -> None:
        if self.container is None and not self._reconnect():
            self.unsent += 1
            return
        picture = video_picture(frame)
        picture.pts, picture.time_base = frame.pts, frame.time_base
        try:
            self.container.mux(self.video.encode(picture))
            if self.audio is not None:
                for sound in frame.audio:
                    self.container.mux(self.audio.encode(sound))
        except (av.FFmpegError, OSError) as error:
            if not self.network:
                raise OutputError(f"cannot write {self.target}: {reason(error)}") from None
            self._drop_connection(reason(error))
            self.unsent += 1
            return
        self.frames += 1

    def close(self) -> None:
        """Flush the encoders and finish the stream or file."""
        if self.container is None:
            return
        container, self.container = self.container, None
        try:
            if self.audio is not None:
                container.mux(self.audio.flush())
            finish(container, [self.video])
        except (av.FFmpegError, OSError) as error:
            if not self.network:
                raise OutputError(f"cannot finish {self.target}: {reason(error)}") from None
        if self.metadata and self.file is not None:
            credentials.sign(self.partial, self.metadata, title=self.path.name)

    def commit(self) -> Path | None:
        """Give a finished recording its real name (network outputs have none)."""
        return None if self.file is None else self.file.commit()

    def keep(self) -> Path | None:
        return None if self.file is None else self.file.keep()

    def abort(self) -> None:
        if self.container is not None:
            self._close_quietly()
        if self.file is not None:
            self.file.abort()
