"""The built-in example: a clip made at run time from real face photos that
scikit-image ships (the astronaut, the cameraman), moved, scaled, mirrored and
duplicated so several faces of different sizes enter and leave the frame. It has
an audio track and known face boxes, so tests use the same maker.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

# Each photo, the crop around the head that moves, and the face box inside that crop
# (x, y, w, h), found once with YuNet on the full photo.
_PHOTOS = {
    "astronaut": ((130, 20, 320, 230), (48.0, 42.6, 90.4, 113.9)),
    "camera": ((160, 80, 300, 230), (35.5, 32.6, 61.1, 81.7)),
}


@dataclass(frozen=True)
class Actor:
    """A face sprite crossing the frame in a straight line between two times."""

    photo: str
    scale: float
    start: tuple[float, float]  # top-left of the sprite, as fractions of the frame
    end: tuple[float, float]
    enter_s: float
    leave_s: float
    mirror: bool = False
    tint: tuple[float, float, float] = (1.0, 1.0, 1.0)  # BGR gains


DEFAULT_CAST = (
    Actor("astronaut", 2.0, (-0.05, 0.15), (0.55, 0.2), 0.0, 6.0),
    Actor("astronaut", 0.6, (1.02, 0.6), (-0.15, 0.55), 0.5, 5.0, mirror=True, tint=(0.9, 1.0, 1.15)),
    Actor("camera", 1.0, (0.75, -0.3), (0.7, 1.05), 0.0, 6.0),
    Actor("astronaut", 0.4, (0.1, 0.85), (0.4, 0.6), 1.5, 4.5, tint=(1.1, 1.05, 0.9)),
    Actor("camera", 1.5, (-0.2, 0.55), (0.3, 0.5), 2.0, 6.0, mirror=True),
)


def _photo(name: str) -> np.ndarray:
    from skimage import data

    image = getattr(data, name)()
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    return cv2.cvtColor(image, cv2.COLOR_RGB2BGR)


def _background(width: int, height: int) -> np.ndarray:
    from skimage import data

    scene = cv2.cvtColor(data.rocket(), cv2.COLOR_RGB2BGR)
    return cv2.GaussianBlur(cv2.resize(scene, (width, height), interpolation=cv2.INTER_AREA), (0, 0), 3)


def _sprite(actor: Actor, frame_height: int) -> tuple[np.ndarray, np.ndarray]:
    """The scaled head crop and the face box inside it (x1, y1, x2, y2); scales are
    for a 720-line frame, so smaller clips keep the same composition."""
    (left, top, right, bottom), (fx, fy, fw, fh) = _PHOTOS[actor.photo]
    crop = _photo(actor.photo)[top:bottom, left:right]
    crop = np.clip(crop * np.array(actor.tint), 0, 255).astype(np.uint8)
    if actor.mirror:
        crop = crop[:, ::-1]
        fx = crop.shape[1] - fx - fw
    scale = actor.scale * frame_height / 720
    size = (round(crop.shape[1] * scale), round(crop.shape[0] * scale))
    sprite = cv2.resize(crop, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
    box = np.array([fx, fy, fx + fw, fy + fh], np.float32) * scale
    return sprite, box


def render_frames(width: int, height: int, fps: float, seconds: float, cast=DEFAULT_CAST):
    """Yield (image, boxes of the faces at least partly in it) for each frame; a box of
    a face crossing the edge reaches past it, so callers can tell how much is visible."""
    background = _background(width, height)
    sprites = [_sprite(actor, height) for actor in cast]
    for index in range(round(fps * seconds)):
        t = index / fps
        image = background.copy()
        boxes = []
        for actor, (sprite, face) in zip(cast, sprites):
            if not actor.enter_s <= t < actor.leave_s:
                continue
            u = (t - actor.enter_s) / (actor.leave_s - actor.enter_s)
            x = round((actor.start[0] + u * (actor.end[0] - actor.start[0])) * width)
            y = round((actor.start[1] + u * (actor.end[1] - actor.start[1])) * height)
            _paste(image, sprite, x, y)
            box = face + np.array([x, y, x, y], np.float32)
            if box[0] < width and box[1] < height and box[2] > 0 and box[3] > 0:
                boxes.append(box)
        yield image, np.array(boxes, np.float32).reshape(-1, 4)


def _paste(image: np.ndarray, sprite: np.ndarray, x: int, y: int) -> None:
    h, w = sprite.shape[:2]
    x1, y1 = max(x, 0), max(y, 0)
    x2, y2 = min(x + w, image.shape[1]), min(y + h, image.shape[0])
    if x2 > x1 and y2 > y1:
        image[y1:y2, x1:x2] = sprite[y1 - y : y2 - y, x1 - x : x2 - x]


def make_example_clip(
    path: str | Path,
    *,
    width: int = 1280,
    height: int = 720,
    fps: int = 25,
    seconds: float = 6.0,
    cast=DEFAULT_CAST,
    audio: bool = True,
    frame_pts: list[int] | None = None,
    time_base: Fraction | None = None,
    mark=None,
) -> list[np.ndarray]:
    """Write the clip (H.264, AAC tone) and return the face boxes of each frame.

    ``frame_pts`` (in ``time_base`` units) makes a variable-frame-rate clip; ``mark(image,
    index)`` may draw on each frame first (tests stamp its number with veil.testing.timecode).
    """
    time_base = time_base or Fraction(1, fps * 512)
    truth = []
    with av.open(str(path), mode="w") as container:
        video = container.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.time_base = video.codec_context.time_base = time_base
        video.options = {"crf": "16", "preset": "veryfast"}
        tone = None
        if audio:
            tone = container.add_stream("aac", rate=48000, layout="mono")
        for index, (image, boxes) in enumerate(render_frames(width, height, fps, seconds, cast)):
            if mark is not None:
                mark(image, index)
            picture = av.VideoFrame.from_ndarray(image, format="bgr24")
            picture.pts = frame_pts[index] if frame_pts else round(index / fps / time_base)
            picture.time_base = time_base
            container.mux(video.encode(picture))
            truth.append(boxes)
        container.mux(video.encode(None))
        if tone is not None:
            _write_tone(container, tone, seconds)
    return truth


def _write_tone(container, stream, seconds: float, hz: float = 440.0) -> None:
    rate, chunk = 48000, 1024
    samples = np.sin(2 * np.pi * hz * np.arange(round(rate * seconds)) / rate).astype(np.float32) * 0.3
    for start in range(0, len(samples), chunk):
        frame = av.AudioFrame.from_ndarray(samples[None, start : start + chunk], format="fltp", layout="mono")
        frame.sample_rate, frame.pts = rate, start
        container.mux(stream.encode(frame))
    container.mux(stream.encode(None))
