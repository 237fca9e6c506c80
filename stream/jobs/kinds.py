"""What an input is (a photo, a video, a folder, a stream) and what it may be written to,
decided before anything opens."""

from __future__ import annotations

import os
from pathlib import Path

import cv2

from veil.errors import InputError, OutputError
from veil.stream.io.live import is_camera
from veil.stream.io.publish import is_network_output
from veil.stream.io.sink import VIDEO_SUFFIXES as VIDEO_OUTPUTS

# Photos: what OpenCV reads and writes (a GIF, WebP or AVIF with more than one frame is a video).
PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".avif", ".gif", ".jp2"}
ALPHA_SUFFIXES = {".png", ".webp", ".tif", ".tiff"}  # photo formats that keep transparency
VIDEO_SUFFIXES = {
    ".mp4", ".m4v", ".mkv", ".mov", ".avi", ".webm", ".ts", ".mts", ".flv", ".wmv",
    ".mpg", ".mpeg", ".y4m", ".h264", ".264", ".h265", ".265", ".hevc",
}  # fmt: skip


def is_photo(path) -> bool:
    """A still image OpenCV reads; an animated GIF, WebP or AVIF is a video."""
    path = str(path)
    if Path(path).suffix.lower() not in PHOTO_SUFFIXES or "%" in path:  # img%04d.png is a sequence
        return False
    try:
        return cv2.imcount(path) <= 1
    except cv2.error:
        return True  # unreadable: reading it as a photo says so in one line


def is_live_output(output_path: str) -> bool:
    return is_network_output(output_path) or output_path.startswith("webrtc://")


def check_paths(input_path: str, output_path: str) -> None:
    is_url = "://" in input_path or is_camera(input_path)
    if not is_url and "%" not in input_path and not os.path.exists(input_path):
        raise InputError(f"input not found: {input_path}")
    if is_live_output(output_path):
        return
    if os.path.exists(input_path) and os.path.exists(output_path) and os.path.samefile(input_path, output_path):
        raise OutputError("output must not be the input")
    parent = Path(output_path).parent
    if os.path.isdir(input_path):
        return
    if not parent.is_dir():
        raise OutputError(f"cannot write {output_path}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise OutputError(f"cannot write {output_path}: folder {parent} is not writable")
    if os.path.isdir(output_path):
        raise OutputError(f"cannot write {output_path}: it is a folder")
    check_kind(input_path, Path(output_path), photo=not is_url and is_photo(input_path))


def check_kind(input_path, output: Path, *, photo: bool) -> None:
    """A photo is written as a photo, a video as a video."""
    suffix = output.suffix.lower()
    if photo and not (suffix in PHOTO_SUFFIXES and cv2.haveImageWriter(str(output))):
        raise OutputError(f"cannot write {output}: {Path(input_path).name} is a photo; write one of {', '.join(sorted(PHOTO_SUFFIXES))}")
    if not photo and suffix not in VIDEO_OUTPUTS:
        why = f"{Path(input_path).name} is a video" if suffix in PHOTO_SUFFIXES else f"Veil does not write {suffix or 'files without an extension'}"
        raise OutputError(f"cannot write {output}: {why}; write one of {', '.join(VIDEO_OUTPUTS)}")
