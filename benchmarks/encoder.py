"""What x264's preset costs and gives: speed, file size and picture quality outside the masks.

    python -m benchmarks.encoder [--out benchmarks/ENCODER.md] [--frames 150] [--clips pillarbox gallery panning]

Each clip (``benchmarks.compare_deface``'s 1280x720 clips; the built-in example where
``../shared/data`` is absent) is anonymised by ``veil run`` with its defaults (blur) at each
preset, in this one process, in turn, twice over; fps is the better of the two runs. Quality
is judged only outside the faces' regions (what a run keeps, from the audit log's boxes
grown as the anonymiser grows them), on every 5th frame, against the input: PSNR of all
three channels and SSIM of the grey picture, averaged over frames. The input itself is an
H.264 file (crf 16), so neither can be perfect.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from skimage.metrics import structural_similarity

from benchmarks.compare_deface import REAL_CLIPS, kept_analysis, machine_info, prepare_clips
from veil.stream.anonymisers.classic import Anonymiser
from veil.stream.detectors import make_detector
from veil.stream.jobs import run_video
from veil.stream.options import Options
from veil.testing.privacy import decoded_frames

REPO = Path(__file__).resolve().parent.parent
PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "medium")
DEFAULT_PRESET = "veryfast"  # what stream/io/sink.py writes when none is chosen
EVERY = 5


def outside_masks(audit: Path, height: int, width: int) -> dict[int, np.ndarray]:
    """Per frame, where no face's region reaches (the regions the default anonymiser hides)."""
    anonymiser = Anonymiser()
    kept = {}
    for line in audit.read_text().splitlines():
        record = json.loads(line)
        if "frame" not in record or record["frame"] % EVERY:
            continue
        outside = np.ones((height, width), bool)
        boxes = [face["box"] for face in record.get("faces", [])]
        for region in anonymiser.regions(np.asarray(boxes, np.float32), height, width):
            outside[region.top : region.bottom, region.left : region.right] = False
        kept[record["frame"]] = outside
    return kept


def quality(original: Path, output: Path, outside: dict[int, np.ndarray]) -> tuple[float, float]:
    """Mean PSNR (dB) and SSIM outside the masks over the judged frames."""
    psnrs, ssims = [], []
    for (index, before), (_, after) in zip(decoded_frames(original, EVERY), decoded_frames(output, EVERY), strict=True):
        keep = outside[index]
        error = ((before.astype(np.float32) - after.astype(np.float32)) ** 2)[keep].mean()
        psnrs.append(99.0 if error == 0 else 10 * np.log10(255**2 / error))
        _, ssim_map = structural_similarity(cv2.cvtColor(before, cv2.COLOR_BGR2GRAY), cv2.cvtColor(after, cv2.COLOR_BGR2GRAY),
                                            full=True, data_range=255)  # fmt: skip
        ssims.append(float(ssim_map[keep].mean()))
    return float(np.mean(psnrs)), float(np.mean(ssims))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "ENCODER.md"))
    parser.add_argument("--frames", type=int, default=150)
    parser.add_argument("--clips", nargs="+", default=["pillarbox", "gallery", "panning"],
                        help="of: example, " + ", ".join(c[0] for c in REAL_CLIPS))
    args = parser.parse_args(argv)
    began = time.perf_counter()
    machine = machine_info()
    detector = make_detector("yunet")
    rows = []
    with tempfile.TemporaryDirectory(prefix="veil-encoder-") as tmp:
        folder = Path(tmp)
        clips = prepare_clips(folder, args.frames, set(args.clips)) or prepare_clips(folder, args.frames, {"example"})
        for clip in clips:
            results = {}
            for repeat in range(2):
                for preset in PRESETS:
                    out, audit = folder / f"{clip.path.stem}_{preset}.mp4", folder / f"{clip.path.stem}_{preset}.jsonl"
                    for stale in (out, audit):
                        stale.unlink(missing_ok=True)
                    options = Options(progress=False, preset=preset, audit=str(audit))
                    start = time.perf_counter()
                    report = run_video(str(clip.path), str(out), options, detector, log=lambda *_: None)
                    fps = report.frames / (time.perf_counter() - start)
                    best = max(fps, results.get(preset, (0,))[0])
                    results[preset] = (best, out.stat().st_size, audit)
                    print(f"{clip.name} {preset} run {repeat + 1}: {fps:.1f} fps", flush=True)
            for preset in PRESETS:
                fps, size, audit = results[preset]
                out = folder / f"{clip.path.stem}_{preset}.mp4"
                psnr, ssim = quality(clip.path, out, outside_masks(audit, clip.height, clip.width))
                rows.append((clip, preset, fps, size, psnr, ssim))
                print(f"{clip.name} {preset}: {fps:.1f} fps, {size / 1024:.0f} KiB, PSNR {psnr:.2f} dB, SSIM {ssim:.4f}", flush=True)
    lines = [
        "# x264 presets: speed, size and quality outside the masks",
        "",
        f"`python -m benchmarks.encoder --frames {args.frames} --clips {' '.join(args.clips)}`, "
        f"{time.strftime('%Y-%m-%d %H:%M')}, {platform.machine()} (whole run {time.perf_counter() - began:.0f} s).",
        "",
        *machine,
        "",
        "`veil run` defaults (blur, crf 18) but for `--preset`; fps the better of two runs in this process; "
        "size and speed relative to the default preset (veryfast) on the same clip. PSNR and SSIM: the output "
        "against the input, outside the faces' regions, every 5th frame.",
        "",
        "| clip | frames | preset | fps | speed vs veryfast | size KiB | size vs veryfast | PSNR dB | SSIM |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    base = {clip.name: (fps, size) for clip, preset, fps, size, _, _ in rows if preset == DEFAULT_PRESET}
    for clip, preset, fps, size, psnr, ssim in rows:
        base_fps, base_size = base[clip.name]
        lines.append(f"| {clip.name} | {clip.frames} | {preset} | {fps:.1f} | {fps / base_fps:.2f}x | {size / 1024:.0f} | "
                     f"{size / base_size:.2f}x | {psnr:.2f} | {ssim:.4f} |")  # fmt: skip
    out = Path(args.out)
    out.write_text("\n".join(lines) + "\n" + kept_analysis(out))
    print(f"encoder: wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
