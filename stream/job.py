"""`veil run`: anonymise a video, a photo, or a folder of both."""

from __future__ import annotations

import itertools
import os
import sys
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import cv2
from tqdm import tqdm

from stream.anonymise import Anonymiser, cover_whole_frame
from stream.audit import AuditStage
from stream.backfill import BackfillStage
from stream.detectors import Detector, make_detector
from stream.errors import InputError, OutputError, VeilError
from stream.graph import Graph, RunReport
from stream.sink import VideoFileSink, partial_path
from stream.source import VideoSource
from stream.stages import AnonymiseStage, DetectStage, TrackStage
from stream.tracker import Tracker

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
VIDEO_SUFFIXES = {
    ".mp4", ".m4v", ".mkv", ".mov", ".avi", ".webm", ".ts", ".mts", ".flv", ".wmv",
    ".mpg", ".mpeg", ".y4m", ".h264", ".264", ".h265", ".265", ".hevc",
}  # fmt: skip


@dataclass
class Options:
    mode: str = "blur"
    detector: str = "yunet"
    detector_options: dict = field(default_factory=dict)
    detect_every: int = 1
    strength: float = 1.0
    margin: float = 0.4
    shape: str = "ellipse"
    coast_s: float = 1.0
    tentative_coast_s: float = 0.25
    backfill_s: float = 0.2
    audit: str | None = None
    stage_timeout: float = 30.0
    progress: bool = True

    def anonymiser(self) -> Anonymiser:
        return Anonymiser(mode=self.mode, shape=self.shape, margin=self.margin, strength=self.strength)


@dataclass
class Summary:
    """What a run did, for the closing lines."""

    faces: int = 0
    track_ids: set = field(default_factory=set)

    def count(self, frame) -> None:
        faces = frame.faces_to_mask
        if faces is not None:
            self.faces += len(faces)
            self.track_ids.update(int(t) for t in faces.track_ids if t >= 0)


def run(input_path: str, output_path: str, options: Options, *, log=print) -> None:
    """Anonymise ``input_path`` into ``output_path``; raise VeilError on failure."""
    _check_paths(input_path, output_path)
    # Fail on a bad mode or shape before any model loads or any file is opened.
    options.anonymiser()
    detector = make_detector(options.detector, **options.detector_options)
    if os.path.isdir(input_path):
        run_folder(Path(input_path), Path(output_path), options, detector, log=log)
    elif Path(input_path).suffix.lower() in IMAGE_SUFFIXES and "%" not in input_path:  # img%04d.png is a sequence
        run_image(input_path, output_path, options, detector, log=log)
    else:
        run_video(input_path, output_path, options, detector, log=log)


def _check_paths(input_path: str, output_path: str) -> None:
    is_url = "://" in input_path
    if not is_url and "%" not in input_path and not os.path.exists(input_path):
        raise InputError(f"input not found: {input_path}")
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


def run_video(input_path, output_path, options: Options, detector: Detector, *, log=print) -> RunReport:
    source = VideoSource(str(input_path))
    with ExitStack() as cleanup:
        cleanup.callback(source.close)
        frames = iter(source)
        first = next(frames)  # a bad input fails here, before any output exists
        sink = VideoFileSink(
            output_path, width=first.width, height=first.height,
            rate=source.rate, time_base=source.time_base, audio=source.audio,
        )  # fmt: skip
        stages = [
            DetectStage(detector, every=options.detect_every),
            TrackStage(Tracker(max_coast_s=options.coast_s, tentative_coast_s=options.tentative_coast_s, fps=float(source.rate))),
            BackfillStage(frames=round(options.backfill_s * float(source.rate))),
        ]
        if options.audit:
            audit = AuditStage(options.audit)
            cleanup.callback(audit.close)
            stages.append(audit)
        stages.append(AnonymiseStage(options.anonymiser()))
        summary = Summary()
        bar = cleanup.enter_context(
            tqdm(total=source.frame_count, unit="frame", disable=not options.progress, desc=Path(str(input_path)).name, file=sys.stderr)
        )

        def on_frame(frame):
            summary.count(frame)
            bar.update()

        graph = Graph(
            itertools.chain([first], frames), stages, sink,
            cover=cover_whole_frame, stage_timeout=options.stage_timeout, on_frame=on_frame,
        )  # fmt: skip
        try:
            report = graph.run()
        except BaseException as error:
            _keep_or_remove_partial(sink, error, log)
            raise
        bar.close()
        sink.commit()
    log(
        f"veil: wrote {output_path}: {report.frames} frames in {report.wall_s:.1f} s ({report.fps:.1f} fps); "
        f"{summary.faces} face boxes in {len(summary.track_ids)} tracks anonymised"
    )
    log(report.latency.table())
    return report


def _keep_or_remove_partial(sink: VideoFileSink, error: BaseException, log) -> None:
    """Every frame written is anonymised, so a long job's work is kept, under a name
    that does not look complete."""
    if sink.frames == 0 or not sink.partial.exists() or isinstance(error, OutputError):
        sink.abort()  # nothing kept, or the file itself is what failed: it cannot be trusted
        return
    reason = str(error) or type(error).__name__
    log(f"veil: run stopped ({reason}); the {sink.frames} frames written, all anonymised, are in {sink.partial}")


def run_image(input_path, output_path, options: Options, detector: Detector, *, log=print) -> None:
    image = cv2.imread(str(input_path), cv2.IMREAD_COLOR)  # applies EXIF orientation
    if image is None:
        raise InputError(f"cannot read image {input_path}")
    faces = detector.detect(image)
    result = options.anonymiser().apply(image, faces)
    output = Path(output_path)
    if output.suffix.lower() not in IMAGE_SUFFIXES:
        raise OutputError(f"cannot write {output}: an image output needs one of {', '.join(sorted(IMAGE_SUFFIXES))}")
    partial = partial_path(output)
    try:
        written = cv2.imwrite(str(partial), result)
    except cv2.error as error:
        raise OutputError(f"cannot write {output}: {error}") from None
    if not written:
        partial.unlink(missing_ok=True)
        raise OutputError(f"cannot write {output}")
    os.replace(partial, output)
    log(f"veil: wrote {output}: {len(faces)} faces anonymised")


def run_folder(input_dir: Path, output_dir: Path, options: Options, detector: Detector, *, log=print) -> None:
    """Mirror a folder: every image and video in, the same names out."""
    if output_dir.resolve().is_relative_to(input_dir.resolve()):
        raise OutputError("the output folder must not be inside the input folder")
    files = sorted(p for p in input_dir.rglob("*") if p.is_file())
    media = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES]
    if not media:
        raise InputError(f"no images or videos in {input_dir}")
    failures: list[tuple[Path, VeilError]] = []
    for path in media:
        target = output_dir / path.relative_to(input_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            if path.suffix.lower() in IMAGE_SUFFIXES:
                run_image(path, target, options, detector, log=log)
            else:
                run_video(path, target, options, detector, log=log)
        except VeilError as error:
            failures.append((path, error))
            log(f"veil: {path}: {error}")
    skipped = len(files) - len(media)
    log(f"veil: folder done: {len(media) - len(failures)} of {len(media)} files anonymised" + (f", {skipped} other files skipped" if skipped else ""))
    if failures:
        path, error = failures[0]
        raise type(error)(f"{len(failures)} of {len(media)} files failed; first: {path}: {error}")
