"""Video file sink: H.264 (libx264) with the source's timestamps and its audio
stream-copied, through PyAV.

It writes to ``<name>.partial<ext>`` and renames to the real name only in
``commit()``, so a run that fails never leaves a file that looks complete.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from stream.errors import OutputError, reason
from stream.frame import Frame


def partial_path(path: Path) -> Path:
    return path.with_name(f"{path.stem}.partial{path.suffix}")


def add_h264(container, width: int, height: int, rate: Fraction, time_base: Fraction, options: dict) -> av.video.stream.VideoStream:
    """A libx264 video stream in ``container`` that takes frames stamped in ``time_base``."""
    if "libx264" not in av.codecs_available:
        raise OutputError("this FFmpeg build has no libx264 encoder (reinstall PyAV from its wheels)")
    stream = container.add_stream("libx264", rate=rate)
    stream.width, stream.height = width, height
    # 4:2:0 needs even sizes; odd sizes keep every pixel with 4:4:4 instead of cropping.
    stream.pix_fmt = "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
    stream.time_base = time_base
    stream.codec_context.time_base = time_base
    stream.options = options
    if container.format.name.split(",")[0] in ("mov", "mp4"):
        container.options["movflags"] = "+faststart"
    return stream


def finish(container, encoders: list) -> None:
    """Flush each encoder into the container, then close it (always)."""
    try:
        for stream in encoders:
            container.mux(stream.encode(None))
    finally:
        container.close()


def video_picture(image: np.ndarray) -> av.VideoFrame:
    """A frame for the encoder: BGR, or the I420 planes (H*3/2 x W) the GPU path hands over
    already in the encoder's pixel format."""
    return av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="yuv420p" if image.ndim == 2 else "bgr24")


class VideoFileSink:
    def __init__(
        self,
        path: str | os.PathLike,
        *,
        width: int,
        height: int,
        rate: Fraction,
        time_base: Fraction,
        audio: list[av.audio.stream.AudioStream] = (),
        crf: int = 18,
        preset: str = "veryfast",
    ):
        self.path = Path(path)
        self.partial = partial_path(self.path)
        try:
            self.container = av.open(str(self.partial), mode="w")
        except (av.FFmpegError, OSError, ValueError) as error:
            raise OutputError(f"cannot write {self.path}: {reason(error)}") from None
        try:
            self.video = add_h264(self.container, width, height, rate, time_base, {"crf": str(crf), "preset": preset})
            self.audio = {stream.index: self._add_audio_copy(stream) for stream in audio}
        except BaseException:
            self.abort()
            raise
        self.frames = 0

    def _add_audio_copy(self, template: av.audio.stream.AudioStream):
        codec = template.codec_context.name
        if codec not in self.container.supported_codecs:
            raise OutputError(
                f"audio codec {codec} cannot be stored in {self.path.suffix or 'this'} files; "
                "choose an .mkv output to keep the audio"
            )
        return self.container.add_stream_from_template(template)

    def write(self, frame: Frame) -> None:
        picture = video_picture(frame.image)
        picture.pts = frame.pts
        picture.time_base = frame.time_base
        try:
            self.container.mux(self.video.encode(picture))
            for packet in frame.audio:
                out = self.audio.get(packet.stream.index)
                if out is not None:
                    packet.stream = out
                    self.container.mux(packet)
        except (av.FFmpegError, OSError) as error:  # a full disk, a vanished folder
            raise OutputError(f"cannot write {self.path}: {reason(error)}") from None
        self.frames += 1

    def close(self) -> None:
        """Flush the encoder and finish the file (still under its partial name)."""
        if self.container is None:
            return
        container, self.container = self.container, None
        try:
            finish(container, [self.video])
        except (av.FFmpegError, OSError) as error:
            raise OutputError(f"cannot finish {self.path}: {reason(error)}") from None

    def commit(self) -> Path:
        """Give the finished file its real name."""
        os.replace(self.partial, self.path)
        return self.path

    def abort(self) -> None:
        """Remove the partial file: used when not one frame could be written."""
        if self.container is not None:
            try:
                self.container.close()
            except av.FFmpegError:
                pass
            self.container = None
        self.partial.unlink(missing_ok=True)
