"""Keyframe propagation for synth: speed, re-identification, temporal consistency, and the defaults.

    .venv/bin/python -m benchmarks.propagation --out benchmarks/PROPAGATION.md
    [--speed-frames 150] [--quality-frames 96] [--judge-every 2] [--every 4,8,16] [--rounds 2] [--e2e-rounds 2]
    [--min-face 40] [--quality-clips a,b] [--skip-speed] [--skip-quality]

About 15 minutes on 2 CPU cores with the defaults. The report's hand-written summary is not regenerated.

``--mode synth`` runs the generator on every face of every frame (``SynthAnonymiser``);
``PropagatingSynth`` runs it on keyframes only and warps each track's generated crop along
the original face's motion in between. This script measures both, on CPU, in one process:

1. Speed, on two 1280x720-class clips (talking_head_d13 as is, 720x1280; crowd_arcade_1080p
   scaled to 1280x720), each cut to ``--speed-frames`` frames and re-encoded to a temporary
   folder: ``veil.stream.jobs.run_video`` end to end for blur, synth with keyframe_every=1 (the
   baseline) and each of ``--every``; then the anonymise stage alone, ``apply`` timed on
   pre-decoded frames with precomputed tracks (YuNet + ``veil.stream.tracker.Tracker``) for each
   interval and the ``ALTERNATIVES``; every run once per round, the best round reported (the
   machine may be shared). Then a cProfile of a propagated run, and DIS alone per preset.
2. Re-identification of the output faces by the independent judges of
   ``benchmarks/deid_quality.py`` (dlib ResNet and SFace, given the input's geometry): the
   output face against the same frame's input face, split into faces generated on that
   frame (keyframes) and faces drawn from a warped keyframe.
3. Temporal consistency: the output of frame t-1 warped onto frame t along the INPUT's
   optical flow (Farneback, independent of the DIS flow that propagation uses, computed on
   a crop around each face), mean absolute error inside the tracked face boxes, leaving out
   pixels that fail the input's forward-backward flow check (occlusions). The input's own
   error is the floor. Lower: less flicker.
4. The defaults: keyframe interval, DIS preset (FAST vs MEDIUM), residual threshold and
   flow limit: how often each keyframe trigger fires, and what each choice costs and gives
   (parts 2 and 3 run every interval of ``--every`` and the ``ALTERNATIVES``, on every frame).

Needs the eval extra (dlib, face-recognition-models) for part 2, and ``../shared/data``.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime
import os
import platform
import pstats
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent

from benchmarks.compare_deface import resized, transcode
from benchmarks.deid_quality import MIN_SCORE, SECRET, Judges, context_crop, cpu_model, dlib_match, geometry, sface_match, synth_replaces
from veil.stream.anonymisers import propagate
from veil.stream.anonymisers.propagate import PropagatingSynth, residual_error

VIDEOS = REPO.parent / "shared" / "data" / "video"
SPEED_CLIPS = (
    ("talking_head_d13", "talking_head_d13.mp4", None, "720x1280 portrait, one face, as is"),
    ("crowd_arcade_720p", "crowd_arcade_1080p.mp4", (1280, 720), "1920x1080 scaled to 1280x720 (INTER_AREA), about 10 faces"),
)
QUALITY_CLIPS = (
    "talking_head_d0", "talking_head_d3", "talking_head_d10", "talking_head_d13", "selfie_portrait_1080x608", "crowd_arcade_1080p",
    "stage_audience_360p",
)  # fmt: skip
SINGLE_FACE = ("talking_head_", "selfie_portrait_")  # large single faces; each multi-face clip is reported apart
FLOW_GROW = 0.5  # the temporal check's flow runs on the face box grown by this many face sizes per side
FB_ALPHA, FB_BETA = 0.01, 0.5  # forward-backward check (Sundaram et al. 2010): |f + b|^2 < a (|f|^2 + |b|^2) + b
PRESETS = {"MEDIUM": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM, "FAST": cv2.DISOPTICAL_FLOW_PRESET_FAST}
DEFAULT_PRESET = next(name for name, preset in PRESETS.items() if preset == propagate.DIS_PRESET)
# Other settings measured beside the defaults at the default interval: (preset, residual, flow limit).
# The first is the previous default (k=8 then), the second the defaults without the flow limit.
ALTERNATIVES = (("MEDIUM", 12.0, np.inf), (DEFAULT_PRESET, propagate.RESIDUAL, np.inf), ("MEDIUM", 12.0, propagate.FLOW_LIMIT))
AGES = ((1, 3), (4, 7), (8, 15))
OTHER_FRAMES_GAP = 10  # frames between a face and the input faces it is compared with across the clip  # buckets of frames since the keyframe, for warped faces
REASONS = ("new track", "scene cut", "interval", "nose shift", "scale", "flow", "residual")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# ---------------------------------------------------------------------------------------------
# Anonymisers


def make_synth():
    """The synth anonymiser exactly as ``veil run --mode synth`` builds it (BatchingEngine
    over ONNX Runtime CPU, pixelate fallback), with the benchmarks' fixed secret."""
    from veil.stream.options import Options

    return Options(mode="synth", secret=SECRET.decode(), progress=False).anonymiser()


def propagating(synth, every: int, preset: str = DEFAULT_PRESET, residual: float = propagate.RESIDUAL,
                flow_limit: float = propagate.FLOW_LIMIT, counting: bool = False):
    """A PropagatingSynth (files: wait=True), with the DIS preset, residual and flow limit given."""
    cls = CountingPropagation if counting else PropagatingSynth
    anonymiser = cls(synth, every=every, wait=True, residual=residual, flow_limit=flow_limit)
    anonymiser.flow = cv2.DISOpticalFlow_create(PRESETS[preset])
    return anonymiser


def variant(every: int, preset: str = DEFAULT_PRESET, residual: float = propagate.RESIDUAL, flow_limit: float = propagate.FLOW_LIMIT) -> str:
    """A propagated variant's label: its interval, and whatever differs from the defaults."""
    parts = [f"propagated k={every}"]
    if preset != DEFAULT_PRESET:
        parts.append(f"DIS {preset}")
    if residual != propagate.RESIDUAL:
        parts.append(f"residual {residual:g}")
    if flow_limit != propagate.FLOW_LIMIT:
        parts.append("no flow limit" if flow_limit == np.inf else f"flow limit {flow_limit:g}")
    return ", ".join(parts)


class CountingPropagation(PropagatingSynth):
    """Counts why keyframes are taken, records the residual of every face it considers
    warping, and says per face whether it was generated on this frame or warped.

    The decision is always the parent's; the reason is the first of its tests (in its own
    order) that holds, recomputed here from the module's thresholds."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.triggers: Counter = Counter()
        self.residuals: list[float] = []  # for every face that had a keyframe to warp from
        self.displacements: list[float] = []  # the same faces' mean flow length
        self.tracks: set[int] = set()  # every track id it drew a face for

    def _needs_keyframe(self, key, face, flow_to, cut) -> bool:
        """Wraps the parent's test and records why it fired, and every residual."""
        needed = super()._needs_keyframe(key, face, flow_to, cut)
        self.tracks.add(face.track)
        if key is not None:
            self.residuals.append(residual_error(key.grey, face.grey, flow_to(face, key)))
            self.displacements.append(propagate.displacement(flow_to(face, key)))
        if needed:
            self.triggers[self._reason(key, face, flow_to, cut)] += 1
        return needed

    def _reason(self, key, face, flow_to, cut) -> str:
        if key is None:
            return "new track"
        if cut:
            return "scene cut"
        if self.frame - key.frame >= self.every:
            return "interval"
        if np.linalg.norm(face.points[2] - key.points[2]) > propagate.NOSE_SHIFT:
            return "nose shift"
        growth = propagate._scale(face.matrix) / key.scale
        if not 1 / propagate.SCALE_CHANGE < growth < propagate.SCALE_CHANGE:
            return "scale"
        if propagate.displacement(flow_to(face, key)) > self.flow_limit:
            return "flow"
        return "residual"

    def status(self, faces, index: int) -> tuple[str, int]:
        """After ``apply``: ("keyframe", 0) when generated on this frame, ("warped", frames
        since its keyframe), or ("pixelated", 0)."""
        track = self._tracks.get(int(faces.track_ids[index]))
        if track is None or track.current is None or not synth_replaces(faces, index):
            return "pixelated", 0
        age = self.frame - track.current.frame
        return ("warped" if age else "keyframe"), age


# ---------------------------------------------------------------------------------------------
# Clips


def tracked_frames(path: Path, limit: int, detector):
    """(index, BGR image, tracked Faces) of the first ``limit`` frames, decoded as the
    pipeline decodes them, tracked with the pipeline's tracker defaults (no backfill)."""
    from veil.stream.io.source import VideoSource
    from veil.stream.tracker import Tracker

    source = VideoSource(str(path))
    try:
        tracker = Tracker(max_coast_s=1.0, tentative_coast_s=0.25, fps=float(source.rate))
        for frame in source:
            if frame.index >= limit:
                break
            yield frame.index, frame.image, tracker.update(detector.detect(frame.image), frame.width, frame.height)
    finally:
        source.close()


def prepare_speed_clip(name: str, file: str, size, limit: int, folder: Path) -> Path:
    target = folder / f"{name}.mp4"
    transcode([VIDEOS / file], target, limit, lambda images, i: resized(images[0], *size) if size else images[0])
    return target


# ---------------------------------------------------------------------------------------------
# 1. Speed


@dataclass
class EndToEnd:
    clip: str
    label: str
    round: int
    frames: int
    wall_s: float
    fps: float
    latency: dict  # stage -> (calls, p50 ms, p99 ms)
    load: float  # 1-minute load average when the run ended
    cpu_ms: float  # CPU time of this process (all its threads) per frame


@dataclass
class Isolated:
    clip: str
    label: str
    round: int
    ms: list[float] = field(default_factory=list)  # per frame
    generated: list[int] = field(default_factory=list)  # faces sent to the generator, per frame
    warped: int = 0
    load: float = 0.0
    cpu_ms: float = 0.0  # CPU time of this process (all its threads) per frame

    @property
    def mean(self) -> float:
        return float(np.mean(self.ms))


def end_to_end(clip: str, path: Path, detector, runs: list[tuple[str, dict]], folder: Path, rounds: int) -> list[EndToEnd]:
    """Every run once per round, the rounds one after the other (so a burst of load
    elsewhere on the machine hits one round of each run rather than all rounds of one)."""
    from veil.stream.jobs import run_video
    from veil.stream.options import Options

    first = next(tracked_frames(path, 1, detector))
    rows = []
    for number in range(rounds):
        for label, settings in runs:
            options = Options(progress=False, secret=SECRET.decode(), **settings)
            options.anonymiser().apply(first[1], first[2])  # loads and warms the engine, outside the clock
            cpu = time.process_time()
            report = run_video(str(path), str(folder / "out.mp4"), options, detector, log=lambda *_: None)
            cpu_ms = 1000 * (time.process_time() - cpu) / max(report.frames, 1)
            rows.append(
                EndToEnd(clip, label, number, report.frames, report.wall_s, report.fps, report.latency.percentiles_ms(), os.getloadavg()[0], cpu_ms)
            )
            log(f"speed {clip} end to end, round {number + 1}, {label}: {report.fps:.1f} fps ({report.frames} frames, {report.wall_s:.1f} s)")
    return rows


def isolated(clip: str, frames: list, synth, variants: list[tuple[str, object]], rounds: int) -> list[Isolated]:
    rows = []
    synth.apply(frames[0][0], frames[0][1])  # warm-up
    for number in range(rounds):
        for label, make in variants:
            anonymiser = make()
            row = Isolated(clip, label, number)
            cpu = time.process_time()
            for image, faces in frames:
                before = getattr(anonymiser, "keyframes", None)
                start = time.perf_counter()
                anonymiser.apply(image, faces)
                row.ms.append(1000 * (time.perf_counter() - start))
                if before is None:
                    row.generated.append(sum(synth_replaces(faces, i) for i in range(len(faces))))
                else:
                    row.generated.append(anonymiser.keyframes - before)
            row.cpu_ms = 1000 * (time.process_time() - cpu) / len(frames)
            row.warped, row.load = getattr(anonymiser, "warped", 0), os.getloadavg()[0]
            rows.append(row)
            log(f"speed {clip} anonymise alone, round {number + 1}, {label}: {row.mean:.1f} ms/frame")
    return rows


PROFILED = (  # (file, function, label); a function the code no longer has is left out of the table
    ("propagate.py", "apply", "PropagatingSynth.apply (all of it)"),
    ("propagate.py", "_scene_cut", "PropagatingSynth._scene_cut"),
    ("synth.py", "align", "SynthAnonymiser.align (landmark similarity, 128x128 crop, grey)"),
    ("synth.py", "crops", "SynthAnonymiser.crops"),
    ("synth.py", "greys", "SynthAnonymiser.greys"),
    ("propagate.py", "_flow", "PropagatingSynth._flow (DIS on 128x128 crops)"),
    ("propagate.py", "_needs_keyframe", "PropagatingSynth._needs_keyframe (incl. residual_error)"),
    ("propagate.py", "residual_error", "residual_error"),
    ("synth.py", "generate", "SynthAnonymiser.generate (network input, submit)"),
    ("propagate.py", "collect", "Keyframe.collect (waits for the generator's thread)"),
    ("synth.py", "composite", "SynthAnonymiser.composite (warp, colour, paste; frame copy)"),
    ("synth.py", "warp_crop", "warp_crop (generated crops; residual's too)"),
    ("propagate.py", "warp_crop", "warp_crop (generated crops; residual's too)"),
    ("synth.py", "match_colour", "match_colour"),
    ("synth.py", "paste", "paste (warp back + blend)"),
    ("synth.py", "cover", "SynthAnonymiser.cover (pixelate fallback)"),
)


def profile(clip: str, frames: list, synth, every: int) -> tuple[list, list, float]:
    """cProfile of a fresh PropagatingSynth over ``frames``: (named functions with
    cumulative ms per frame, top built-ins by own time in ms per frame, wall ms per frame)."""
    anonymiser = propagating(synth, every)
    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.enable()
    for image, faces in frames:
        anonymiser.apply(image, faces)
    profiler.disable()
    wall = 1000 * (time.perf_counter() - start) / len(frames)
    stats = pstats.Stats(profiler).stats
    named = []
    for suffix, function, label in PROFILED:
        for (file, _, name), (_, calls, _, cumulative, _) in stats.items():
            if name == function and file.replace(os.sep, "/").endswith("stream/" + suffix):
                named.append((label, calls / len(frames), 1000 * cumulative / len(frames)))
    builtins = sorted(((key[2], value[1], value[2]) for key, value in stats.items() if key[0] == "~"), key=lambda r: -r[2])[:10]
    top = [(name, calls / len(frames), 1000 * own / len(frames)) for name, calls, own in builtins]
    log(f"speed {clip} profiled k={every}: {wall:.1f} ms/frame under cProfile")
    return named, top, wall


def dis_cost(clip: str, frames: list, synth, pairs: int = 300) -> dict:
    """Median ms per DIS call, per preset, on (this frame's, previous frame's) aligned grey
    crops of the same track, as ``PropagatingSynth._flow`` sees them between keyframes."""
    previous, crops = {}, []
    for image, faces in frames:
        aligned, _ = synth.align(image, faces)
        current = {face.track: face.grey for face in aligned}
        crops += [(grey, previous[track]) for track, grey in current.items() if track in previous]
        previous = current
        if len(crops) >= pairs:
            break
    costs = {}
    for name, preset in {"ULTRAFAST": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST, **PRESETS}.items():
        flow = cv2.DISOpticalFlow_create(preset)
        flow.calc(crops[0][0], crops[0][1], None)
        times = []
        for _ in range(3):
            for grey, reference in crops:
                start = time.perf_counter()
                flow.calc(grey, reference, None)
                times.append(time.perf_counter() - start)
        costs[name] = (len(crops), 1000 * float(np.median(times)))
    log(f"speed {clip} DIS per call: " + ", ".join(f"{k} {v[1]:.2f} ms" for k, v in costs.items()))
    return costs


def speed(args, folder: Path, detector, lines: list[str]) -> None:
    synth = make_synth()
    e2e_rows, iso_rows, profiles, dis = [], [], [], {}
    for name, file, size, note in SPEED_CLIPS:
        if not (VIDEOS / file).exists():
            lines.append(f"- {name}: skipped, {VIDEOS / file} not found")
            continue
        path = prepare_speed_clip(name, file, size, args.speed_frames, folder)
        runs = [("blur", {"mode": "blur"}), ("synth k=1 (per frame)", {"mode": "synth", "keyframe_every": 1})]
        runs += [(f"synth k={k}", {"mode": "synth", "keyframe_every": k}) for k in args.every]
        e2e_rows += end_to_end(name, path, detector, runs, folder, args.e2e_rounds)

        frames = [(image, faces) for _, image, faces in tracked_frames(path, args.speed_frames, detector)]
        variants = [("synth k=1 (per frame)", lambda: synth)]
        variants += [(variant(k), lambda k=k: propagating(synth, k)) for k in args.every]
        variants += [(variant(8, *a), lambda a=a: propagating(synth, 8, *a)) for a in ALTERNATIVES[:1]]
        variants += [(variant(propagate.KEYFRAME_EVERY, *a), lambda a=a: propagating(synth, propagate.KEYFRAME_EVERY, *a)) for a in ALTERNATIVES]
        iso_rows += isolated(name, frames, synth, variants, args.rounds)
        profiles.append((name, len(frames), *profile(name, frames, synth, propagate.KEYFRAME_EVERY)))
        dis[name] = dis_cost(name, frames, synth)
        del frames
    clips = ", ".join(f"{name} ({note})" for name, file, _, note in SPEED_CLIPS if (VIDEOS / file).exists())
    lines += [
        (
            f"Clips: {clips}; the first {args.speed_frames} frames of each (fewer where the clip is shorter), re-encoded "
            "(H.264 crf 16, veryfast, no audio) into a temporary folder by `benchmarks/compare_deface.transcode`."
        ),
        "",
    ]
    lines += speed_markdown(e2e_rows, iso_rows, profiles)
    if dis:
        presets = list(next(iter(dis.values())))
        lines += [
            "### DIS alone, per preset",
            "",
            (
                "Median ms per `DISOpticalFlow.calc` on 128x128 aligned grey crops of one track in consecutive frames (each pair "
                "timed 3 times), the call `PropagatingSynth._flow` makes once per face per frame. OpenCV's default settings per preset."
            ),
            "",
            "| clip | crop pairs | " + " | ".join(presets) + " |",
            "|---|---:|" + "---:|" * len(presets),
        ]
        lines += [f"| {clip} | {c[presets[0]][0]} | " + " | ".join(f"{c[p][1]:.2f}" for p in presets) + " |" for clip, c in dis.items()]
        lines.append("")


def best_of(rows: list, key) -> dict:
    """(clip, label) -> (the best row by ``key``, every row), in first-seen order."""
    grouped: dict = {}
    for r in rows:
        grouped.setdefault((r.clip, r.label), []).append(r)
    return {k: (max(v, key=key), v) for k, v in grouped.items()}


def speed_markdown(e2e_rows: list[EndToEnd], iso_rows: list[Isolated], profiles: list) -> list[str]:
    stages = ("decode", "detect", "track", "backfill", "anonymise", "encode")
    e2e = best_of(e2e_rows, lambda r: r.fps)
    lines = [
        "### End to end: `veil.stream.jobs.run_video`",
        "",
        (
            'Each run is a fresh `Options(mode=..., keyframe_every=k, secret="bench")` whose engine was loaded and warmed on the '
            "clip's first frame before the clock; fps is `RunReport.fps` (frames out / graph wall time). All runs of a clip once "
            "per round, rounds one after another; the table shows each run's best round (other processes shared this machine "
            "during the benchmark: the load column is the 1-minute load average after each round's run; 2 means both cores busy). "
            "Stage columns: p50 / p99 ms per call from `RunReport.latency` of that best round; stages run in overlapping threads "
            'on 2 cores, so they do not add up. "vs k=1": best fps over the best fps of per-frame synth on the same clip. '
            "CPU ms/frame: `time.process_time()` (every thread of this process: decode, detect, anonymise, the generator, encode) "
            "over the run, per frame; other processes do not add to it, but ONNX Runtime's worker threads spinning after each "
            'call (its default) do, so it overstates the rows that call the generator most. "CPU vs k=1": per-frame synth\'s '
            "CPU ms/frame over this row's."
        ),
        "",
        "| clip | run | frames | fps, best | fps, every round | load after each | vs k=1 | CPU ms/frame, best round | CPU vs k=1 | "
        + " | ".join(stages)
        + " |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|" + "---:|" * len(stages),
    ]
    for clip in dict.fromkeys(r.clip for r in e2e_rows):
        base = e2e[(clip, "synth k=1 (per frame)")][0].fps
        base_cpu = e2e[(clip, "synth k=1 (per frame)")][0].cpu_ms
        for (c, label), (r, every) in e2e.items():
            if c != clip:
                continue
            cells = [f"{r.latency[s][1]:.1f} / {r.latency[s][2]:.1f}" if s in r.latency else "–" for s in stages]
            lines.append(
                f"| {clip} | {label} | {r.frames} | {r.fps:.1f} | {', '.join(f'{x.fps:.1f}' for x in every)} | "
                f"{', '.join(f'{x.load:.1f}' for x in every)} | {r.fps / base:.2f}x | {r.cpu_ms:.1f} | {base_cpu / r.cpu_ms:.2f}x | "
                + " | ".join(cells)
                + " |"
            )
    iso = best_of(iso_rows, lambda r: -r.mean)
    lines += [
        "",
        "### The anonymise stage alone",
        "",
        (
            "`apply` timed with `time.perf_counter` per frame, on frames decoded beforehand, with tracks computed beforehand "
            "(YuNet + `Tracker`, the pipeline's defaults; no backfill): no decoder, detector or encoder competes for the 2 cores, "
            "only the generator's own thread. One `SynthAnonymiser` (the pipeline's: `BatchingEngine` over ONNX Runtime) is "
            "shared by every row; each propagated row is a fresh `PropagatingSynth(synth, every=k, wait=True)` per round. All "
            'variants once per round, rounds one after another; the columns after "every round" are from the best round. '
            '"no keyframe" frames are those on which no face went to the generator (pure propagation); "keyframe" frames '
            "sent at least one. Speed-up = best mean ms/frame of per-frame synth / this row's best. CPU columns as in the table "
            "above (the generator's thread and ONNX Runtime's pool included)."
        ),
        "",
        (
            "| clip | anonymiser | frames | mean ms/frame, best | every round | p50 | p99 | no-keyframe frames: mean ms (count) | "
            "keyframe frames: mean ms (count) | faces generated / faces drawn | speed-up vs k=1 | CPU ms/frame, best round | CPU vs k=1 |"
        ),
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for clip in dict.fromkeys(r.clip for r in iso_rows):
        base = iso[(clip, "synth k=1 (per frame)")][0].mean
        base_cpu = iso[(clip, "synth k=1 (per frame)")][0].cpu_ms
        for (c, label), (r, every) in iso.items():
            if c != clip:
                continue
            ms, gen = np.array(r.ms), np.array(r.generated)
            quiet, busy = ms[gen == 0], ms[gen > 0]
            quiet_s = f"{quiet.mean():.1f} ({len(quiet)})" if len(quiet) else "– (0)"
            busy_s = f"{busy.mean():.1f} ({len(busy)})" if len(busy) else "– (0)"
            generated = int(gen.sum())
            drawn = generated + r.warped if label.startswith("propagated") else generated
            lines.append(
                f"| {clip} | {label} | {len(ms)} | {r.mean:.1f} | {', '.join(f'{x.mean:.1f}' for x in every)} | "
                f"{np.percentile(ms, 50):.1f} | {np.percentile(ms, 99):.1f} | {quiet_s} | {busy_s} | {generated} / {drawn} | "
                f"{base / r.mean:.2f}x | {r.cpu_ms:.1f} | {base_cpu / r.cpu_ms:.2f}x |"
            )
    for clip, count, named, top, wall in profiles:
        lines += [
            "",
            f"### Where a propagated frame's time goes: {clip}, k={propagate.KEYFRAME_EVERY}, {count} frames under cProfile",
            "",
            (
                f"{wall:.1f} ms/frame under the profiler (its overhead included). Cumulative time of the main steps, ms per frame, "
                "nested (`apply` contains the rest; `_needs_keyframe` contains `residual_error`, which contains a `warp_crop`; "
                "`composite` contains `warp_crop`, `match_colour` and `paste`). The generator runs in `BatchingEngine`'s thread, "
                "which cProfile does not see: its cost shows as the wait in `Keyframe.collect`."
            ),
            "",
            "| function | calls per frame | cumulative ms per frame |",
            "|---|---:|---:|",
        ]
        lines += [f"| {label} | {calls:.1f} | {ms:.2f} |" for label, calls, ms in named]
        lines += ["", "Top built-ins (C calls) by own time:", "", "| call | calls per frame | own ms per frame |", "|---|---:|---:|"]
        lines += [f"| `{name}` | {calls:.1f} | {ms:.2f} |" for name, calls, ms in top]
    return lines + [""]


# ---------------------------------------------------------------------------------------------
# 2 and 3. Re-identification and temporal consistency, in one pass per clip


@dataclass
class FaceFlow:
    """The input's flow from frame t back to t-1 on a crop around one face."""

    region: tuple[slice, slice]
    map_x: np.ndarray  # per crop pixel of frame t: where it was in frame t-1 (crop coordinates)
    map_y: np.ndarray
    valid: np.ndarray  # inside the face box, the flow's source inside the crop, forward-backward consistent
    box_pixels: int


def farneback(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per pixel of ``a``, where it is in ``b``: a(p) ~ b(p + flow(p))."""
    return cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 4, 15, 3, 5, 1.2, 0)


def face_flows(previous: np.ndarray, grey: np.ndarray, faces, min_face: float) -> list[FaceFlow]:
    height, width = grey.shape
    flows = []
    for x1, y1, x2, y2 in faces.boxes:
        if y2 - y1 < min_face:
            continue
        grow = FLOW_GROW * max(x2 - x1, y2 - y1)
        left, top = max(int(x1 - grow), 0), max(int(y1 - grow), 0)
        right, bottom = min(int(np.ceil(x2 + grow)), width), min(int(np.ceil(y2 + grow)), height)
        a, b = grey[top:bottom, left:right], previous[top:bottom, left:right]
        forward, backward = farneback(a, b), farneback(b, a)
        gy, gx = np.mgrid[0 : bottom - top, 0 : right - left].astype(np.float32)
        map_x, map_y = gx + forward[..., 0], gy + forward[..., 1]
        back = cv2.remap(backward, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        loop = ((forward + back) ** 2).sum(-1)
        consistent = loop < FB_ALPHA * ((forward**2).sum(-1) + (back**2).sum(-1)) + FB_BETA
        inside = (map_x >= 0) & (map_x <= right - left - 1) & (map_y >= 0) & (map_y <= bottom - top - 1)
        box = np.zeros_like(inside)
        box[max(int(y1), top) - top : min(int(np.ceil(y2)), bottom) - top, max(int(x1), left) - left : min(int(np.ceil(x2)), right) - left] = True
        flows.append(FaceFlow((slice(top, bottom), slice(left, right)), map_x, map_y, box & inside & consistent, int(box.sum())))
    return flows


def warping_error(previous: np.ndarray, current: np.ndarray, flows: list[FaceFlow]) -> tuple[float, int]:
    """(sum of absolute errors, pixels) of ``previous`` warped onto ``current`` in the face regions."""
    total, count = 0.0, 0
    for f in flows:
        warped = cv2.remap(previous[f.region].astype(np.float32), f.map_x, f.map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        error = np.abs(warped - current[f.region].astype(np.float32)).mean(-1)[f.valid]
        total, count = total + float(error.sum()), count + int(error.size)
    return total, count


@dataclass
class Mode:
    label: str
    anonymiser: object
    judged: bool
    previous: np.ndarray | None = None
    error_sum: float = 0.0
    error_pixels: int = 0
    frame_errors: list[float] = field(default_factory=list)
    faces: dict = field(default_factory=dict)  # (clip, frame, face) -> (group, dlib vector, SFace crop)
    sface: dict = field(default_factory=dict)  # (clip, frame, face) -> SFace embedding
    ages: dict = field(default_factory=dict)  # (clip, frame, face) -> frames since its keyframe (0: generated now)


@dataclass
class ClipResult:
    clip: str
    frames: int = 0
    judged_faces: int = 0
    face_pixels: int = 0
    valid_pixels: int = 0
    modes: dict = field(default_factory=dict)  # label -> Mode
    originals: dict = field(default_factory=dict)  # key -> (dlib vector, SFace crop)
    original_sface: dict = field(default_factory=dict)  # key -> SFace embedding
    tracks: dict = field(default_factory=dict)  # key -> track id


def identity(judges: Judges, image: np.ndarray, where) -> tuple[np.ndarray, np.ndarray]:
    """What the two recognisers see of one face (``deid_quality.look``'s recogniser half)."""
    crop, _ = context_crop(image, where.box)
    return judges.recogniser.descriptor(crop, where.dlib_box), judges.sface_crop(image, where.landmarks)


def quality_modes(synth, every: list[int], default: int) -> list[tuple[str, object, bool]]:
    from veil.stream.anonymisers.classic import Anonymiser

    modes = [
        ("input (the floor)", None, False),
        ("blur", Anonymiser(mode="blur"), False),
        ("synth k=1 (per frame)", synth, True),
    ]
    modes += [(variant(k), propagating(synth, k, counting=True), True) for k in every]
    modes += [(variant(8, *a), propagating(synth, 8, *a, counting=True), True) for a in ALTERNATIVES[:1]]
    modes += [(variant(default, *a), propagating(synth, default, *a, counting=True), True) for a in ALTERNATIVES]
    return modes


def quality_clip(clip: str, args, detector, synth, judges: Judges) -> ClipResult:
    result = ClipResult(clip)
    modes = [Mode(label, anonymiser, judged) for label, anonymiser, judged in quality_modes(synth, args.every, propagate.KEYFRAME_EVERY)]
    result.modes = {m.label: m for m in modes}
    previous_grey = None
    started = time.perf_counter()
    for index, image, faces in tracked_frames(VIDEOS / f"{clip}.mp4", args.quality_frames, detector):
        grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        flows = face_flows(previous_grey, grey, faces, args.min_face) if previous_grey is not None else []
        result.face_pixels += sum(f.box_pixels for f in flows)
        result.valid_pixels += sum(int(f.valid.sum()) for f in flows)
        heights = faces.boxes[:, 3] - faces.boxes[:, 1]
        judged = (
            []
            if index % args.judge_every
            else [i for i in range(len(faces)) if faces.detected[i] and heights[i] >= args.min_face and faces.scores[i] >= MIN_SCORE]
        )
        places = {i: geometry(judges, image, faces, i) for i in judged}
        for i, where in places.items():
            result.originals[(clip, index, i)] = identity(judges, image, where)
            result.tracks[(clip, index, i)] = int(faces.track_ids[i])
        result.judged_faces += len(judged)
        for mode in modes:
            output = image if mode.anonymiser is None else mode.anonymiser.apply(image, faces)
            if mode.previous is not None and flows:
                total, count = warping_error(mode.previous, output, flows)
                mode.error_sum, mode.error_pixels = mode.error_sum + total, mode.error_pixels + count
                if count:
                    mode.frame_errors.append(total / count)
            mode.previous = output
            if mode.judged:
                for i, where in places.items():
                    if isinstance(mode.anonymiser, CountingPropagation):
                        group, age = mode.anonymiser.status(faces, i)
                    else:
                        group, age = ("keyframe" if synth_replaces(faces, i) else "pixelated"), 0
                    mode.faces[(clip, index, i)] = (group, *identity(judges, output, where))
                    mode.ages[(clip, index, i)] = age
        previous_grey = grey
        result.frames = index + 1
        if result.frames % 24 == 0:
            log(f"quality {clip}: {result.frames} frames, {result.judged_faces} judged faces, {time.perf_counter() - started:.0f} s")
    log(f"quality {clip}: done, {result.frames} frames, {result.judged_faces} judged faces, {time.perf_counter() - started:.0f} s")
    return result


def sface_vectors(judges: Judges, crops: dict) -> dict:
    keys = list(crops)
    vectors = judges.sface_embed([crops[k] for k in keys]) if keys else []
    return dict(zip(keys, vectors))


def reid_rates(judges: Judges, results: list[ClipResult], label: str | None, keys, select=None, others: bool = False) -> tuple[str, str, int]:
    """Same-frame re-identification (dlib, SFace) of ``label``'s faces in ``keys`` for which
    ``select(mode, key)`` holds (None: all); ``label`` None: the input's own faces.

    ``others``: the chance level instead: each face against every *other* judged person's
    input face in the same frame. Where the judges cannot tell people apart (small faces),
    this is as high as the same-person rate, and a same-person rate is only a leak above it."""
    dlib_hits = sface_hits = total = 0
    for r in results:
        mode = r.modes[label] if label is not None else None
        for key in keys:
            if key not in r.originals:
                continue
            if mode is None:
                vector, sface = r.originals[key][0], r.original_sface[key]
            elif key not in mode.faces or (select is not None and not select(mode, key)):
                continue
            else:
                vector, sface = mode.faces[key][1], mode.sface[key]
            against = [k for k in r.originals if k[:2] == key[:2] and k != key] if others else [key]
            for other in against:
                total += 1
                dlib_hits += dlib_match(judges, vector, r.originals[other][0])
                sface_hits += sface_match(judges, sface, r.original_sface[other])
    return percent(dlib_hits, total), percent(sface_hits, total), total


def percent(hits: int, total: int) -> str:
    return "–" if total == 0 else f"{100 * hits / total:.1f}% ({hits}/{total})"


def quality(args, detector, lines: list[str]) -> None:
    synth = make_synth()
    judges = Judges()
    results = []
    for clip in args.quality_clips:
        if not (VIDEOS / f"{clip}.mp4").exists():
            lines.append(f"- {clip}: skipped, {VIDEOS / f'{clip}.mp4'} not found")
            continue
        results.append(quality_clip(clip, args, detector, synth, judges))
    for r in results:
        r.original_sface = sface_vectors(judges, {k: v[1] for k, v in r.originals.items()})
        for mode in r.modes.values():
            mode.sface = sface_vectors(judges, {k: v[2] for k, v in mode.faces.items()})
    lines += reid_markdown(judges, results, args)
    lines += other_frames_markdown(judges, results)
    lines += temporal_markdown(results)
    lines += trigger_markdown(results)


def clip_sets(results: list[ClipResult], named: bool = True) -> list[tuple[str, list[ClipResult]]]:
    """The single-face clips together, each multi-face clip apart (the judges' power differs
    by resolution); ``named``: the single-face clips' names in their set's name."""
    single = [r for r in results if r.clip.startswith(SINGLE_FACE)]
    name = f"single-face clips ({', '.join(r.clip for r in single)})" if named else "single-face clips"
    sets = [(name, single), *((r.clip, [r]) for r in results if not r.clip.startswith(SINGLE_FACE))]
    return [(name, rs) for name, rs in sets if rs]


def judged_labels(results: list[ClipResult]) -> list[str]:
    return [m.label for m in results[0].modes.values() if m.judged] if results else []


def reid_markdown(judges: Judges, results: list[ClipResult], args) -> list[str]:
    sets = [*clip_sets(results), ("all", results)]
    judged_modes = judged_labels(results)
    lines = [
        "## Re-identification: keyframes vs warped faces",
        "",
        (
            f"Frames whose index is a multiple of {args.judge_every}, among the first {args.quality_frames} of each clip (as is: no rescaling), faces that the "
            f"tracker has a detection for on that frame, at least {args.min_face:g} px high and scoring at least {MIN_SCORE} "
            "(DEID.md's criteria). Judges: `benchmarks/deid_quality.py`'s `Judges`, dlib ResNet (same person below euclidean "
            f"{judges.dlib_threshold}) and SFace (above cosine {judges.sface_threshold}), given the input's geometry (dlib: HOG's box on the input, "
            "else YuNet's; SFace: aligned by the input's YuNet landmarks). Rate: share of output faces that the judge matches to the "
            "same frame's input face (DEID.md's \"same image\"). Every mode ran on every frame in order (propagation needs the "
            "frames in between); groups: *keyframe* = the face was generated on this frame, *warped* = drawn from an earlier "
            'keyframe (split by frames since that keyframe), *pixelated* = synth\'s fallback. "paired" rows: per-frame synth on '
            "exactly the faces a propagated variant warped (same frames, same track ids, so the same synthetic identity). "
            "Target (DEID.md): under 5%. *another person* rows: the chance level, the same faces matched against every other "
            "judged person's input face in the same frame (pairs counted); the first row is the judges' own false matches "
            "between input faces. A same-person rate at or under its chance level says the judge cannot tell who it is."
        ),
        "",
        "| output | group | " + " | ".join(f"{name}: dlib | SFace" for name, _ in sets) + " |",
        "|---|---|" + "---:|---:|" * len(sets),
    ]
    cells = [reid_rates(judges, rs, None, [k for r in rs for k in r.originals], others=True) for _, rs in sets]
    lines.append("| input | another person | " + " | ".join(f"{d} | {s}" for d, s, _ in cells) + " |")
    groups = [
        ("all", None),
        ("keyframe", lambda m, k: m.faces[k][0] == "keyframe"),
        ("warped", lambda m, k: m.faces[k][0] == "warped"),
        *(
            (
                f"warped, {low}-{high} frames after its keyframe",
                lambda m, k, low=low, high=high: m.faces[k][0] == "warped" and low <= m.ages[k] <= high,
            )
            for low, high in AGES
        ),
        ("pixelated", lambda m, k: m.faces[k][0] == "pixelated"),
    ]
    for label in judged_modes:
        for group, select in groups:
            cells = []
            for _, rs in sets:
                keys = [k for r in rs for k in r.originals]
                cells.append(reid_rates(judges, rs, label, keys, select))
            if select is not None and all(n == 0 for *_, n in cells):
                continue
            lines.append(f"| {label} | {group} | " + " | ".join(f"{d} | {s}" for d, s, _ in cells) + " |")
            if group in ("all", "warped"):
                cells = [reid_rates(judges, rs, label, [k for r in rs for k in r.originals], select, others=True) for _, rs in sets]
                lines.append(f"| {label} | {group}, another person | " + " | ".join(f"{d} | {s}" for d, s, _ in cells) + " |")
    for label in judged_modes:
        if not label.startswith("propagated"):
            continue
        cells = []
        for _, rs in sets:
            keys = [k for r in rs for k in r.originals if r.modes[label].faces.get(k, ("",))[0] == "warped"]
            d, s, _ = reid_rates(judges, rs, "synth k=1 (per frame)", keys)
            cells.append(f"{d} | {s}")
        lines.append(f"| synth k=1, on the faces {label} warped | paired | " + " | ".join(cells) + " |")
    return lines + [""]


def other_frame_matches(judges: Judges, r: ClipResult, label: str | None, select=None) -> np.ndarray:
    """Match counts [pairs, dlib, SFace] of ``label``'s faces (None: the input's) against
    the input faces at least OTHER_FRAMES_GAP frames away: [same track, other tracks]."""
    keys = list(r.originals)
    mode = r.modes[label] if label is not None else None
    probes = [k for k in keys if mode is None or (k in mode.faces and (select is None or select(mode, k)))]
    counts = np.zeros((2, 3), int)
    if not probes:
        return counts
    gallery_dlib = np.stack([r.originals[k][0] for k in keys])
    gallery_sface = np.stack([r.original_sface[k] for k in keys])
    frames, tracks = np.array([k[1] for k in keys]), np.array([r.tracks[k] for k in keys])
    for key in probes:
        vector, sface = (r.originals[key][0], r.original_sface[key]) if mode is None else (mode.faces[key][1], mode.sface[key])
        far = np.abs(frames - key[1]) >= OTHER_FRAMES_GAP
        dlib_hits = np.linalg.norm(gallery_dlib - vector, axis=1) < judges.dlib_threshold
        sface_hits = gallery_sface @ sface > judges.sface_threshold
        for row, pick in enumerate((far & (tracks == r.tracks[key]), far & (tracks != r.tracks[key]))):
            counts[row] += (int(pick.sum()), int((dlib_hits & pick).sum()), int((sface_hits & pick).sum()))
    return counts


def other_frames_markdown(judges: Judges, results: list[ClipResult]) -> list[str]:
    """Re-identification across frames: whether a face is recognised as its person, not
    only matched to the exact frame it replaced."""
    sets = clip_sets(results, named=False)
    judged_modes = judged_labels(results)
    lines = [
        "### Across frames: the same person elsewhere in the clip",
        "",
        (
            f"The same judged faces, each against every judged input face at least {OTHER_FRAMES_GAP} frames away in its clip: "
            "*same person* = that face's own track (the recogniser would link the output to this person), *chance* = other "
            "tracks. Pairs counted. The input row is the judges' own power: how often they link a person's faces across the "
            "clip. The same-frame rates above also carry what one frame shares with its replacement (pose, expression, "
            "light, the judge's alignment); these do not."
        ),
        "",
        "| output | group | " + " | ".join(f"{name}: same person, dlib | SFace | chance, dlib | SFace" for name, _ in sets) + " |",
        "|---|---|" + "---:|---:|---:|---:|" * len(sets),
    ]
    rows = [("input", None, "all", None)]
    for label in judged_modes:
        rows.append((label, label, "all", None))
        if label.startswith("propagated"):
            rows.append((label, label, "warped", lambda m, k: m.faces[k][0] == "warped"))
    for name, label, group, select in rows:
        cells = []
        for _, rs in sets:
            counts = sum(other_frame_matches(judges, r, label, select) for r in rs)
            cells += [percent(counts[row][column], counts[row][0]) for row in (0, 1) for column in (1, 2)]
        lines.append(f"| {name} | {group} | " + " | ".join(cells) + " |")
    return lines + [""]


def temporal_markdown(results: list[ClipResult]) -> list[str]:
    labels = list(results[0].modes) if results else []
    lines = [
        "## Temporal consistency: warping error along the input's motion",
        "",
        (
            "For each frame t > 0 and each tracked face at least as high as the judged faces: Farneback flow (OpenCV, pyramid 0.5 x 4, "
            f"window 15) from input t to input t-1 and back, on grey crops of the face box grown by {FLOW_GROW:g} face sizes per side. "
            "Output t-1 is warped onto t along the forward flow; the error is the mean absolute difference (0-255, mean of B, G, R) "
            "inside the face box, over pixels whose forward-backward loop closes (|f + b|^2 < 0.01 (|f|^2 + |b|^2) + 0.5) and whose "
            'source lies inside the crop. The same flow and pixels serve every row. "mean" = over all those pixels of the clip; '
            '"p95" = 95th percentile of the per-frame means (the flicker spikes). Farneback, not DIS, so propagation (which warps '
            "by DIS) is not measured with its own tool."
        ),
        "",
        "Face pixels kept by the occlusion check: "
        + ", ".join(f"{r.clip} {100 * r.valid_pixels / max(r.face_pixels, 1):.0f}%" for r in results)
        + ".",
        "",
        "| output | " + " | ".join(f"{r.clip} mean / p95" for r in results) + " | mean of the clips' means |",
        "|---|" + "---:|" * (len(results) + 1),
    ]
    for label in labels:
        cells, means = [], []
        for r in results:
            m = r.modes[label]
            if m.error_pixels:
                mean = m.error_sum / m.error_pixels
                means.append(mean)
                cells.append(f"{mean:.2f} / {np.percentile(m.frame_errors, 95):.2f}")
            else:
                cells.append("–")
        overall = f"{np.mean(means):.2f}" if means else "–"
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {overall} |")
    return lines + [""]


def trigger_markdown(results: list[ClipResult]) -> list[str]:
    labels = [label for label, m in results[0].modes.items() if isinstance(m.anonymiser, CountingPropagation)] if results else []
    lines = [
        "## Keyframe triggers",
        "",
        (
            "Per propagated variant, over all frames of every quality clip: faces sent to the generator as a share of the faces "
            "drawn (keyframes + warped), and how many keyframes each trigger took (the first of `_needs_keyframe`'s tests that "
            'holds, in its order: new track, scene cut, interval, nose shift, scale, flow, residual). "tracks": distinct track ids '
            "given a face (summed over clips). A face that falls back to pixelation for a frame keeps its track's keyframe."
        ),
        "",
        "| variant | clips | tracks | keyframes / faces drawn | " + " | ".join(REASONS) + " |",
        "|---|---|---:|---:|" + "---:|" * len(REASONS),
    ]
    groups = [
        ("single-face", [r for r in results if r.clip.startswith(SINGLE_FACE)]),
        *((r.clip, [r]) for r in results if not r.clip.startswith(SINGLE_FACE)),
    ]
    for label in labels:
        for name, rs in groups:
            if not rs:
                continue
            keyframes = sum(r.modes[label].anonymiser.keyframes for r in rs)
            drawn = keyframes + sum(r.modes[label].anonymiser.warped for r in rs)
            triggers = sum((r.modes[label].anonymiser.triggers for r in rs), Counter())
            tracks = sum(len(r.modes[label].anonymiser.tracks) for r in rs)
            lines.append(
                f"| {label} | {name} | {tracks} | {percent(keyframes, drawn)} | " + " | ".join(str(triggers[reason]) for reason in REASONS) + " |"
            )
    lines += [
        "",
        (
            "Residual (mean absolute grey error inside the face mask after warping the keyframe's original crop onto the current "
            "one by the DIS flow), over every face that had a keyframe to warp from, including those then given a new keyframe "
            "for another reason; the share above each threshold is how often that threshold alone would call a keyframe:"
        ),
        "",
    ]
    lines += distribution_table(labels, groups, "residuals", (8, 12, 16, 20))
    lines += [
        "",
        "Flow length (`propagate.displacement`: mean crop pixels the DIS flow moves the face by, in the 128 px crop), same faces:",
        "",
    ]
    lines += distribution_table(labels, groups, "displacements", (4, 6, 8))
    return lines + [""]


def distribution_table(labels: list[str], groups: list, attribute: str, thresholds: tuple) -> list[str]:
    """Percentiles of one per-face figure a ``CountingPropagation`` records, and the share
    of faces above each threshold, per variant and clip group."""
    lines = [
        "| variant | clips | faces | p50 | p90 | p99 | max | " + " | ".join(f"> {t}" for t in thresholds) + " |",
        "|---|---|---:|---:|---:|---:|---:|" + "---:|" * len(thresholds),
    ]
    for label in labels:
        for name, rs in groups:
            values = np.array([v for r in rs for v in getattr(r.modes[label].anonymiser, attribute)])
            if not len(values):
                continue
            shares = " | ".join(f"{100 * (values > t).mean():.1f}%" for t in thresholds)
            p50, p90, p99 = np.percentile(values, [50, 90, 99])
            lines.append(f"| {label} | {name} | {len(values)} | {p50:.1f} | {p90:.1f} | {p99:.1f} | {values.max():.1f} | {shares} |")
    return lines


# ---------------------------------------------------------------------------------------------


def machine() -> list[str]:
    import av
    import onnxruntime

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    try:
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, check=True
        ).stdout
        version = f"commit {head}" + (" plus uncommitted changes" if dirty.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        version = "not a git checkout"
    return [
        f"- CPU only: {cpu_model()}, {cores} usable cores, load average {load} (1, 5, 15 min) at the start; no GPU",
        (
            f"- Python {platform.python_version()}, onnxruntime {onnxruntime.__version__} (CPUExecutionProvider), OpenCV {cv2.__version__}, "
            f"PyAV {av.__version__}, NumPy {np.__version__}"
        ),
        f'- Veil {version}; generator `engines/weights/generator.onnx`; detector YuNet (`make_detector("yunet")` defaults)',
    ]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=None, help="markdown report to write (default: print it)")
    parser.add_argument("--speed-frames", type=int, default=150, help="frames of each speed clip")
    parser.add_argument("--quality-frames", type=int, default=96, help="frames of each re-identification / temporal clip")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of the anonymise-stage timing (best reported)")
    parser.add_argument("--e2e-rounds", type=int, default=2, help="rounds of the end-to-end runs (best reported)")
    parser.add_argument("--judge-every", type=int, default=2, help="judge the faces of every n-th frame")
    parser.add_argument("--min-face", type=float, default=40.0, help="least face box height judged and checked for flicker")
    parser.add_argument("--every", default="4,8,16", help="keyframe intervals to compare with per-frame synth")
    parser.add_argument("--quality-clips", default=",".join(QUALITY_CLIPS))
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-quality", action="store_true")
    args = parser.parse_args(argv)
    args.every = [int(k) for k in args.every.split(",") if k]
    args.quality_clips = [c for c in args.quality_clips.split(",") if c]
    if not VIDEOS.is_dir():
        raise SystemExit(f"propagation: {VIDEOS} not found; this benchmark needs the shared real clips")
    if any(k < 2 for k in args.every) or propagate.KEYFRAME_EVERY not in args.every:
        raise SystemExit(f"propagation: --every needs intervals of 2 or more, including the default {propagate.KEYFRAME_EVERY}")

    from veil.stream.detectors import make_detector

    started = time.perf_counter()
    when = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    lines = ["# Keyframe propagation: speed, re-identification, temporal consistency", "", *machine(), ""]
    detector = make_detector("yunet")
    body: list[str] = []
    if not args.skip_speed:
        body += ["## Speed", ""]
        with tempfile.TemporaryDirectory() as folder:
            speed(args, Path(folder), detector, body)
    if not args.skip_quality:
        quality(args, detector, body)
    wall = time.perf_counter() - started
    command = "python -m benchmarks.propagation " + " ".join(argv if argv is not None else sys.argv[1:])
    lines += [f"Generated by `.venv/bin/python {command.strip()}` on {when}, {wall / 60:.1f} min in all.", "", *body]
    text = "\n".join(lines) + "\n"
    if args.out:
        Path(args.out).write_text(text)
        log(f"wrote {args.out} ({wall / 60:.1f} min)")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
