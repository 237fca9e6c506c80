"""Clips composed from real talking-head footage for selective anonymisation: a 2x2 call
gallery of four people, and one person walking in front of another. Each knows where each
person is, so a test or a benchmark can tell whose face the privacy gate found."""

from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np

from veil.testing.privacy import decoded_frames

CELL = 320
FPS = 25


def heads(clip: Path, start_s: float, count: int) -> list[np.ndarray]:
    """``count`` frames of a talking-head clip from ``start_s``, centre squares of CELLxCELL."""
    found = []
    with av.open(str(clip)) as container:
        for frame in container.decode(video=0):
            if frame.time < start_s:
                continue
            image = frame.to_ndarray(format="bgr24")
            side = min(image.shape[:2])
            top, left = (image.shape[0] - side) // 2, (image.shape[1] - side) // 2
            found.append(cv2.resize(image[top:top + side, left:left + side], (CELL, CELL), interpolation=cv2.INTER_AREA))
            if len(found) == count:
                break
    if len(found) < count:
        raise ValueError(f"{clip} has {len(found)} frames from {start_s:g} s, not {count}")
    return found


def write(path: Path, images: list[np.ndarray]) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.height, stream.width = images[0].shape[:2]
        stream.options = {"crf": "16"}
        for image in images:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")))
        container.mux(stream.encode(None))


def decoded(path: Path) -> list[np.ndarray]:
    return [image for _, image in decoded_frames(path)]


def make_grid(path: Path, clips: list[Path], seconds: float) -> None:
    """Four people, one per cell: 0 top left, 1 top right, 2 bottom left, 3 bottom right."""
    cells = [heads(clip, 0.0, round(seconds * FPS)) for clip in clips]
    write(path, [np.vstack([np.hstack([a, b]), np.hstack([c, d])]) for a, b, c, d in zip(*cells)])


def cell_of(box) -> int:
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return int(cy >= CELL) * 2 + int(cx >= CELL)


def make_crossing(path: Path, walker: Path, stander: Path, seconds: float, start_s: float = 2.0) -> list[int]:
    """``walker`` crosses in front of ``stander`` from left to right; the walker's square's
    left edge on each frame (the stander stands in the middle of a frame 3 cells wide)."""
    count = round(seconds * FPS)
    walking, standing = heads(walker, start_s, count), heads(stander, start_s, count)
    width, frames, lefts = 3 * CELL, [], []
    for index, (a, b) in enumerate(zip(walking, standing)):
        image = np.full((CELL + 40, width, 3), 90, np.uint8)
        left = round(index / (count - 1) * (width - CELL))
        image[20:20 + CELL, CELL:2 * CELL] = b
        image[20:20 + CELL, left:left + CELL] = a  # in front
        frames.append(image)
        lefts.append(left)
    write(path, frames)
    return lefts
