"""The thorough detector (``veil run --thorough``) against the default: faces found, false
alarms, and seconds a frame.

    python -m benchmarks.thorough [--out benchmarks/THOROUGH.md] [--every 10]

- *Annotated photos*: dlib's 9 PASCAL VOC photos (43 faces, ``../shared/data/annotated``),
  as they are and made harder the way dataset footage is: half and quarter size (small
  faces), blurred (sigma 2 px, focus and motion), and at 30 % exposure (night). A face is
  found when a box overlaps its annotation by IoU 0.4, and covered when 70 % of it lies
  inside one box; a box overlapping no face by IoU 0.4 is a false alarm.
- *Shared clips*: every ``--every``-th frame of the real videos. The privacy gate's
  detectors (dlib HOG and CenterFace, ``veil.testing.privacy``) name the faces; a face is
  found when a box overlaps it by IoU 0.3, as the gate judges a leak, and covered as above.
Both detectors run with their settings as ``veil run`` builds them for files.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import cv2
import numpy as np

from benchmarks.compare_deface import darkened, kept_analysis, machine_info
from veil.stream.faces import iou_matrix
from veil.stream.options import Options
from veil.stream.pipeline import file_detector
from veil.testing.annotated import annotated_photos
from veil.testing.privacy import IndependentDetector, decoded_frames

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data"
PHOTOS = DATA / "annotated" / "dlib_faces"
CLIPS = ("crowd_arcade_1080p.mp4", "stage_audience_360p.mp4", "crowd_overhead_mot20.mp4", "fisheye_two_people_2560x1920.mp4",
         "selfie_portrait_1080x608.mp4")
CONDITIONS = {
    "as is": (1.0, lambda image: image),
    "half size": (0.5, lambda image: image),
    "quarter size": (0.25, lambda image: image),
    "blurred": (1.0, lambda image: cv2.GaussianBlur(image, (0, 0), 2.0)),
    "30% exposure": (1.0, darkened),
}
COVERED = 0.7


def found(truth: np.ndarray, boxes: np.ndarray, iou: float) -> tuple[int, int, int]:
    """Faces of ``truth`` that a box overlaps by ``iou``; faces that one box covers (70 % of
    the face inside it: merged boxes are larger than a face, and hide it all the same); and
    boxes that overlap no face by ``iou``."""
    if not len(truth) or not len(boxes):
        return 0, 0, len(boxes)
    overlap = iou_matrix(truth, boxes)
    low, high = np.maximum(truth[:, None, :2], boxes[None, :, :2]), np.minimum(truth[:, None, 2:], boxes[None, :, 2:])
    inside = np.prod(np.clip(high - low, 0, None), axis=2) / np.prod(truth[:, 2:] - truth[:, :2], axis=1)[:, None]
    return int((overlap.max(axis=1) >= iou).sum()), int((inside.max(axis=1) >= COVERED).sum()), int((overlap.max(axis=0) < iou).sum())


def timed(detector, image) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    boxes = detector.detect(image).boxes
    return boxes, time.perf_counter() - start


def photos_part(detectors: dict) -> list[str]:
    photos = annotated_photos(PHOTOS, "testing.xml") + annotated_photos(PHOTOS, "training.xml")
    lines = [f"## Annotated photos ({len(photos)} photos, {sum(len(b) for _, b, _ in photos)} faces)", "",
             "| photos | detector | faces found (IoU 0.4) | faces covered | false alarms | ms a photo |", "|---|---|---:|---:|---:|---:|"]
    for condition, (scale, change) in CONDITIONS.items():
        for name, detector in detectors.items():
            counts = np.zeros(3, int)
            seconds = []
            for image, truth, _ in photos:
                image = change(cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale != 1 else image)
                boxes, spent = timed(detector, image)
                counts += found(truth * scale, boxes, 0.4)
                seconds.append(spent)
            total = sum(len(b) for _, b, _ in photos)
            lines.append(f"| {condition} | {name} | {counts[0]}/{total} | {counts[1]}/{total} | {counts[2]} | {np.mean(seconds) * 1000:.0f} |")
            print(lines[-1], flush=True)
    return lines + [""]


def clips_part(detectors: dict, every: int) -> list[str]:
    gate = IndependentDetector()
    lines = [f"## Shared clips (every {every}th frame; the gate's faces)", "",
             "| clip | size | frames | detector | gate's faces found (IoU 0.3) | covered | other boxes | ms a frame |", "|---|---|---:|---|---:|---:|---:|---:|"]
    for name in CLIPS:
        clip = DATA / "video" / name
        if not clip.exists():
            continue
        frames = [image for _, image in decoded_frames(clip, every)]
        truths = [gate.detect(image) for image in frames]
        for label, detector in detectors.items():
            counts = np.zeros(3, int)
            seconds = []
            for image, truth in zip(frames, truths, strict=True):
                boxes, spent = timed(detector, image)
                counts += found(truth, boxes, 0.3)
                seconds.append(spent)
            size, total = f"{frames[0].shape[1]}x{frames[0].shape[0]}", sum(map(len, truths))
            lines.append(f"| {name.removesuffix('.mp4')} | {size} | {len(frames)} | {label} | {counts[0]}/{total} | {counts[1]}/{total} | "
                         f"{counts[2]} | {np.mean(seconds) * 1000:.0f} |")  # fmt: skip
            print(lines[-1], flush=True)
    return lines + [""]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "THOROUGH.md"))
    parser.add_argument("--every", type=int, default=10, help="judge every Nth frame of the clips (default 10)")
    args = parser.parse_args(argv)
    if not PHOTOS.is_dir():
        raise SystemExit(f"thorough: {PHOTOS} not found: the benchmark needs ../shared/data")
    began = time.perf_counter()
    detectors = {"default": file_detector(Options()), "thorough": file_detector(Options(detector="thorough"))}
    body = photos_part(detectors) + clips_part(detectors, args.every)
    head = ["# The thorough detector against the default", "",
            f"`python -m benchmarks.thorough --every {args.every}`, {time.strftime('%Y-%m-%d %H:%M')}, {platform.machine()} "
            f"(whole run {time.perf_counter() - began:.0f} s).", "", *machine_info(), ""]
    out = Path(args.out)
    out.write_text("\n".join(head + body) + kept_analysis(out))
    print(f"thorough: wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
