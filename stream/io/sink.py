"""Video file sink: the source's timestamps, its audio stream-copied (or re-encoded where
the container cannot hold it), through PyAV.

The video codec is the first of ``VIDEO_ENCODERS`` that the output container takes:
H.264 for mp4, mkv, mov, avi, ts and flv; VP9 for webm; GIF for gif. The file is written
as ``<name>.partial<ext>`` and renamed only in ``commit()`` (``veil.stream.io.partial``).
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from veil.errors import OutputError, reason
from veil.stream.elements import OutputSink
from veil.stream.frame import Frame
from veil.stream.io import credentials
from veil.stream.io.partial import PartialFile

# What each encoder is given for a file, and for a live stream (low latency, keyframes every
# ``g`` frames, filled in by ``add_video``). Tried in this order.
VIDEO_ENCODERS = {
    "libx264": ({"crf": "18", "preset": "veryfast"}, {"preset": "veryfast", "tune": "zerolatency", "crf": "23"}),
    "libvpx-vp9": (
        {"crf": "31", "b": "0", "deadline": "good", "cpu-used": "5", "row-mt": "1"},
        {"crf": "33", "b": "0", "deadline": "realtime", "cpu-used": "8", "row-mt": "1", "lag-in-frames": "0"},
    ),
    "gif": ({}, {}),
}
VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".m4v", ".webm", ".avi", ".ts", ".flv", ".gif")
# Audio that a container cannot hold as it is gets re-encoded into the first of these it takes.
AUDIO_ENCODERS = ("aac", "libopus")
AUDIO_RATE = 48000


def add_video(container, width: int, height: int, rate: Fraction, time_base: Fraction, *, live: bool = False,
              keyframe_every: int | None = None, preset: str | None = None) -> av.video.stream.VideoStream:
    """A video stream in ``container`` that takes frames stamped in ``time_base``. ``preset``:
    x264's speed in place of the file default (H.264 outputs only)."""
    for name, (file_options, live_options) in VIDEO_ENCODERS.items():
        if name not in av.codecs_available:
            continue
        try:
            stream = container.add_stream(name, rate=rate)
        except ValueError:  # the container does not take this codec
            continue
        stream.width, stream.height = width, height
        if name == "gif":
            stream.pix_fmt = "rgb8"
        else:
            # 4:2:0 needs even sizes; odd sizes keep every pixel with 4:4:4 instead of cropping.
            stream.pix_fmt = "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
        stream.time_base = time_base
        stream.codec_context.time_base = time_base
        options = dict(live_options if live else file_options)
        if preset is not None:
            if name != "libx264":
                raise OutputError(f"an encoder preset is for H.264 outputs (mp4, mkv, mov, avi, ts, flv); {container.format.long_name} is written as {name}")
            options["preset"] = preset
        if keyframe_every is not None and name != "gif":
            options["g"] = str(keyframe_every)
        stream.options = options
        if container.format.name.split(",")[0] in ("mov", "mp4"):
            container.options["movflags"] = "+faststart"
        return stream
    raise OutputError(
        f"cannot write {container.name}: {container.format.long_name} files take none of Veil's video codecs "
        f"({', '.join(VIDEO_ENCODERS)}); write one of {', '.join(VIDEO_SUFFIXES)}"
    )


def tag(container, metadata: dict[str, str]) -> None:
    """Container tags that survive: mp4 and mov keep tags of their own names only when told."""
    container.metadata.update(metadata)
    if container.format.name.split(",")[0] in ("mov", "mp4"):
        container.options["movflags"] = container.options.get("movflags", "") + "+use_metadata_tags"


def finish(container, encoders: list) -> None:
    """Flush each encoder into the container, then close it (always)."""
    try:
        for stream in encoders:
            container.mux(stream.encode(None))
    finally:
        container.close()


def video_picture(frame: Frame) -> av.VideoFrame:
    """A host frame for the encoder, in its layout: BGR, or the I420 planes the GPU path
    hands over already in the encoder's pixel format."""
    if frame.place != "host":
        raise ValueError(f"an encoder takes host frames, got frame {frame.index} on the {frame.place}")
    return av.VideoFrame.from_ndarray(np.ascontiguousarray(frame.image), format="yuv420p" if frame.layout == "i420" else "bgr24")


class AudioEncoder:
    """Decoded audio in, encoded packets out: resampled to 48 kHz stereo, with a sample count
    that stays contiguous (AAC and Opus need it); holes longer than ``gap_s`` (a lost live
    source) become silence."""

    def __init__(self, container, *, gap_s: float = 0.1, bit_rate: int = 128_000):
        self.stream = None
        for name in AUDIO_ENCODERS:
            try:
                self.stream = container.add_stream(name, rate=AUDIO_RATE)
                break
            except ValueError:
                continue
        if self.stream is None:
            raise OutputError(f"cannot write {container.name}: {container.format.long_name} files take none of {', '.join(AUDIO_ENCODERS)}")
        self.stream.layout = "stereo"
        self.stream.bit_rate = bit_rate
        self.gap_s = gap_s
        self._format = self.stream.codec_context.codec.audio_formats[0].name
        self._resampler = None
        self._resampler_input = None
        self._next_sample: int | None = None

    def encode(self, sound: av.AudioFrame) -> list[av.Packet]:
        shape = (sound.format.name, sound.layout.name, sound.sample_rate)
        if shape != self._resampler_input:
            self._resampler = av.AudioResampler(format=self._format, layout="stereo", rate=AUDIO_RATE)
            self._resampler_input = shape
        start = round(float(sound.pts * sound.time_base) * AUDIO_RATE) if sound.pts is not None and sound.time_base else None
        packets = []
        if self._next_sample is None:
            self._next_sample = start or 0
        elif start is not None and start - self._next_sample > self.gap_s * AUDIO_RATE:
            packets += self._silence(start - self._next_sample)
        for resampled in self._resampler.resample(sound):
            packets += self._encode(resampled)
        return packets

    def flush(self) -> list[av.Packet]:
        packets = []
        if self._resampler is not None:
            for resampled in self._resampler.resample(None):
                packets += self._encode(resampled)
        return packets + list(self.stream.encode(None))

    def _silence(self, samples: int) -> list[av.Packet]:
        packets = []
        for begin in range(0, samples, AUDIO_RATE):
            chunk = av.AudioFrame(format=self._format, layout="stereo", samples=min(AUDIO_RATE, samples - begin))
            for plane in chunk.planes:
                plane.update(bytes(plane.buffer_size))
            chunk.sample_rate = AUDIO_RATE
            packets += self._encode(chunk)
        return packets

    def _encode(self, sound: av.AudioFrame) -> list[av.Packet]:
        sound.pts, sound.time_base = self._next_sample, Fraction(1, AUDIO_RATE)
        self._next_sample += sound.samples
        return list(self.stream.encode(sound))


class VideoFileSink(OutputSink):
    def __init__(
        self,
        path: str | os.PathLike,
        *,
        width: int,
        height: int,
        rate: Fraction,
        time_base: Fraction,
        audio: list[av.audio.stream.AudioStream] = (),
        metadata: dict[str, str] | None = None,
        preset: str | None = None,
    ):
        """``metadata``: tags for the container (veil.stream.io.provenance's marks). ``preset``:
        x264's speed (veil.stream.options.ENCODER_PRESETS; None: VIDEO_ENCODERS' own)."""
        self.path, self.metadata = Path(path), metadata
        self.file = PartialFile(self.path)  # the claim: a second run on this output fails here
        self.partial = self.file.partial
        try:
            self.container = av.open(str(self.partial), mode="w")
        except (av.FFmpegError, OSError, ValueError) as error:
            self.file.abort()
            raise OutputError(f"cannot write {self.path}: {reason(error)}") from None
        try:
            self.video = add_video(self.container, width, height, rate, time_base, preset=preset)
            if metadata:
                tag(self.container, metadata)
            self.copies: dict[int, av.stream.Stream] = {}
            self.transcodes: dict[int, AudioEncoder] = {}
            for stream in audio:
                self._add_audio(stream)
        except BaseException:
            self.abort()
            raise
        self.frames = 0

    def _add_audio(self, template: av.audio.stream.AudioStream) -> None:
        """Stream-copy the audio where the container holds its codec; re-encode it where not
        (AAC into webm becomes Opus)."""
        try:
            self.copies[template.index] = self.container.add_stream_from_template(template)
        except ValueError:
            self.transcodes[template.index] = AudioEncoder(self.container)

    def write(self, frame: Frame) -> None:
        picture = video_picture(frame)
        picture.pts = frame.pts
        picture.time_base = frame.time_base
        try:
            self.container.mux(self.video.encode(picture))
            for packet in frame.audio:
                self._write_audio(packet)
        except (av.FFmpegError, OSError) as error:  # a full disk, a vanished folder
            raise OutputError(f"cannot write {self.path}: {reason(error)}") from None
        self.frames += 1

    def _write_audio(self, packet: av.Packet) -> None:
        index = packet.stream.index
        if index in self.copies:
            packet.stream = self.copies[index]
            self.container.mux(packet)
        elif index in self.transcodes:
            encoder = self.transcodes[index]
            for sound in packet.decode():
                self.container.mux(encoder.encode(sound))

    def close(self) -> None:
        """Flush the encoders and finish the file (still under its partial name)."""
        if self.container is None:
            return
        container, self.container = self.container, None
        try:
            for encoder in self.transcodes.values():
                container.mux(encoder.flush())
            finish(container, [self.video])
        except (av.FFmpegError, OSError) as error:
            raise OutputError(f"cannot finish {self.path}: {reason(error)}") from None
        if self.metadata:
            credentials.sign(self.partial, self.metadata, title=self.path.name)

    def commit(self) -> Path:
        """Give the finished file its real name."""
        return self.file.commit()

    def keep(self) -> Path:
        """Leave the finished file under its partial name: the run failed after writing frames."""
        return self.file.keep()

    def abort(self) -> None:
        """Remove the partial file: used when not one frame could be written."""
        if self.container is not None:
            try:
                self.container.close()
            except (av.FFmpegError, OSError):
                pass
            self.container = None
        self.file.abort()
