"""Selective anonymisation: how the match threshold trades the kept person's visibility
against bystander exposure (--keep), and the hidden person's exposure against others masked
(--only); and what the recogniser costs.

    python -m benchmarks.selective [--parts photos clips speed] [--thresholds 0.3 0.35 ...] [--seconds 2]

1. Photos: SFace cosine between each glint24 person's first photo and every other photo
   (same person: genuine; other people: impostor), through Veil's own path (YuNet landmarks,
   ArcFace alignment). The share of genuine pairs accepted and of impostor pairs accepted.
2. Clips: the 2x2 gallery of the four talking heads in ../shared/data (each person in turn
   the chosen one, the reference their clip's frame at 10 s, or its last for d0, which is
   3.1 s long), and that person walking in front of another. The privacy gate (dlib + CenterFace, independent of YuNet and SFace) on
   every output frame says whose faces are visible.
3. Speed: the built-in example at 1280x720 with 1 and 4 faces, without and with --keep and
   --only, in this process.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import av
import cv2
import numpy as np

from veil.stream.detectors import make_detector
from veil.stream.identify.recogniser import Recogniser
from veil.stream.jobs import run
from veil.stream.options import REFERENCE_SCORE, Options
from veil.testing.clips import DEFAULT_CAST, make_example_clip
from veil.testing.gallery import CELL, cell_of, decoded, heads, make_crossing, make_grid
from veil.testing.privacy import IndependentDetector

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
PEOPLE = ("d3", "d10", "d13", "d0")


def photo_scores(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """Genuine and impostor cosines over glint24 (each 112x112 crop enlarged and padded so
    the detector sees a whole head, as in a photo)."""
    detector, recogniser = make_detector("yunet", score_threshold=REFERENCE_SCORE), Recogniser()
    people = {}
    for person in sorted(p for p in folder.iterdir() if p.is_dir()):
        rows = []
        for path in sorted(person.iterdir()):
            image = cv2.copyMakeBorder(cv2.resize(cv2.imread(str(path)), (224, 224)), 60, 60, 60, 60, cv2.BORDER_REPLICATE)
            faces = detector.detect(image)
            crop = None if not len(faces) else recogniser.crop(image, faces.landmarks[int(np.argmax(faces.scores))])
            if crop is not None:
                rows.append(recogniser.embed([crop])[0])
        if len(rows) >= 2:
            people[person.name] = np.stack(rows)
    genuine, impostor = [], []
    for name, rows in people.items():
        genuine += list(rows[1:] @ rows[0])
        for other, others in people.items():
            if other != name:
                impostor += list(others @ rows[0])
    return np.array(genuine), np.array(impostor)


def duration(clip: Path) -> float:
    with av.open(str(clip)) as container:
        return container.duration / 1e6


def clip_rows(scratch: Path, thresholds: list[float], seconds: float) -> list[dict]:
    clips = [DATA / "video" / f"talking_head_{name}.mp4" for name in PEOPLE]
    gate = IndependentDetector()
    rows = []
    for chosen in range(len(PEOPLE)):
        order = [chosen] + [i for i in range(len(PEOPLE)) if i != chosen]  # the chosen one top left
        grid = scratch / f"grid{chosen}.mp4"
        make_grid(grid, [clips[i] for i in order], seconds)
        reference = scratch / f"{PEOPLE[chosen]}.jpg"
        cv2.imwrite(str(reference), heads(clips[chosen], min(10.0, duration(clips[chosen]) - 0.2), 1)[0])
        before = [{cell_of(box) for box in gate.detect(image)} for image in decoded(grid)]
        crossing = scratch / f"cross{chosen}.mp4"
        lefts = make_crossing(crossing, clips[chosen], clips[order[1]], seconds + 0.5, start_s=0.0)
        for threshold in thresholds:
            for policy in ("keep", "only"):
                out = scratch / f"{policy}{chosen}-{threshold}.mp4"
                options = Options(progress=False, match_threshold=threshold, **{policy: (str(reference),)})
                run(str(grid), str(out), options, log=lambda line: None)
                after = [{cell_of(box) for box in gate.detect(image)} for image in decoded(out)]
                row = {"person": PEOPLE[chosen], "threshold": threshold, "policy": policy, "frames": len(after),
                       "chosen_seen": sum(0 in cells for cells in before),
                       "chosen_visible": sum(0 in a for a, b in zip(after, before) if 0 in b),
                       "others_seen": sum(len(b - {0}) for b in before),
                       "others_visible": sum(len(a - {0}) for a in after)}  # fmt: skip
                if policy == "keep":
                    out = scratch / f"cross{chosen}-{threshold}.mp4"
                    run(str(crossing), str(out), options, log=lambda line: None)
                    row["crossing_leaks"] = sum(
                        any(not left <= (box[0] + box[2]) / 2 < left + CELL for box in gate.detect(image))
                        for image, left in zip(decoded(out), lefts)
                    )  # fmt: skip
                rows.append(row)
                print(row, flush=True)
    return rows


def speed_rows(scratch: Path, seconds: float) -> list[str]:
    import skimage.data

    reference = scratch / "astronaut.png"
    cv2.imwrite(str(reference), cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR))
    lines = []
    for faces in (1, 4):
        clip = scratch / f"example{faces}.mp4"
        make_example_clip(clip, width=1280, height=720, seconds=seconds, cast=DEFAULT_CAST[:faces])
        frames = round(seconds * 25)
        times = {}
        for name, extra in (("none", {}), ("keep", {"keep": (str(reference),)}), ("only", {"only": (str(reference),)})):
            options = Options(progress=False, **extra)
            options.people()  # references load before the clock starts, as they do before a run's first frame
            start = time.perf_counter()
            run(str(clip), str(scratch / f"speed-{name}-{faces}.mp4"), options, log=lambda line: None)
            times[name] = time.perf_counter() - start
        lines.append(f"| {faces} | {frames / times['none']:.1f} | {frames / times['keep']:.1f} ({times['keep'] / times['none'] - 1:+.0%}) "
                     f"| {frames / times['only']:.1f} ({times['only'] / times['none'] - 1:+.0%}) |")  # fmt: skip
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", choices=("photos", "clips", "speed"), default=["photos", "clips", "speed"])
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.25, 0.3, 0.35, 0.45, 0.55, 0.65])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--speed-seconds", type=float, default=4.0)
    args = parser.parse_args()
    if "photos" in args.parts:
        genuine, impostor = photo_scores(DATA / "identities" / "glint24")
        print(f"glint24: {len(genuine)} genuine and {len(impostor)} impostor pairs\n")
        print("| threshold | genuine accepted | impostor accepted |\n|---:|---:|---:|")
        for threshold in args.thresholds:
            print(f"| {threshold:.2f} | {(genuine >= threshold).mean():.1%} | {(impostor >= threshold).mean():.2%} |")
    with tempfile.TemporaryDirectory() as scratch:
        if "clips" in args.parts:
            print_clip_table(clip_rows(Path(scratch), args.thresholds, args.seconds), args.thresholds)
        if "speed" in args.parts:
            print(f"\n1280x720, 25 fps, {args.speed_seconds:g} s; fps\n\n| faces | no selection | --keep | --only |\n|---:|---:|---:|---:|")
            for line in speed_rows(Path(scratch), args.speed_seconds):
                print(line, flush=True)


def print_clip_table(rows: list[dict], thresholds: list[float]) -> None:
    def share(found, key, seen):
        return f"{sum(r[key] for r in found)}/{sum(r[seen] for r in found)}"

    print("\n| threshold | keep: chosen visible | keep: others visible | keep: crossing leak frames | only: chosen visible | only: others visible |")
    print("|---:|---:|---:|---:|---:|---:|")
    for threshold in thresholds:
        keep = [r for r in rows if r["threshold"] == threshold and r["policy"] == "keep"]
        only = [r for r in rows if r["threshold"] == threshold and r["policy"] == "only"]
        print(f"| {threshold:.2f} | {share(keep, 'chosen_visible', 'chosen_seen')} | {share(keep, 'others_visible', 'others_seen')} "
              f"| {sum(r['crossing_leaks'] for r in keep)} | {share(only, 'chosen_visible', 'chosen_seen')} "
              f"| {share(only, 'others_visible', 'others_seen')} |")  # fmt: skip


if __name__ == "__main__":
    main()
