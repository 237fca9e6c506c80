"""`veil run`: anonymise a video, a photo, or a folder of both."""

from __future__ import annotations

import itertools
import os
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import cv2
from tqdm import tqdm

from engines.onnx_models import available_cores
from stream.anonymise import Anonymiser, cover_whole_frame
from stream.audit import AuditStage
from stream.backfill import BackfillStage
from stream.detectors import Detector, make_detector
from stream.detectors.resize import LIVE_EDGE_PAD
from stream.errors import InputError, OutputError, VeilError
from stream.graph import Graph, RunReport
from stream.live import CLOCK, LiveSource, camera_input, is_camera, is_live_url
from stream.propagate import KEYFRAME_EVERY, PropagatingSynth
from stream.publish import LiveEncoderSink, is_network_output
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
    keyframe_every: int = KEYFRAME_EVERY  # synth: frames between generator runs at most (1: every frame)
    secret: str | None = None  # synth: picks each track's identity; None: random per run
    backend: str = "onnxruntime"  # runs the generator (the detector's is in detector_options)
    device: str = "cpu"
    # Keep frames on the engines' device from upload to download (stream/gpu.py). None:
    # yes on cuda. True on cpu runs that path's kernels through the CPU shim (tests).
    frames_on_device: bool | None = None
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
    # live runs
    live: bool = False  # play a file input in real time, as a camera would deliver it
    target_delay_s: float | None = None
    reconnect_s: float = 30.0
    verbose: bool = False

    _anonymiser: object = field(default=None, init=False, repr=False, compare=False)

    def anonymiser(self):
        """The run's one anonymiser (stateless, shared by its graphs); a bad mode fails here."""
        if self._anonymiser is None:
            self._anonymiser = self._make_anonymiser()
        return self._anonymiser

    def _make_anonymiser(self):
        """Synth pixelates (at this shape and margin) the faces it cannot replace."""
        if self.keyframe_every < 1:
            raise InputError(f"--keyframe-every must be at least 1, got {self.keyframe_every}")
        if self.mode != "synth":
            return Anonymiser(mode=self.mode, shape=self.shape, margin=self.margin, strength=self.strength)
        from engines.batching import BatchingEngine
        from engines.runtime import open_engine
        from stream.synth import WEIGHTS, SynthAnonymiser

        fallback = Anonymiser(mode="pixelate", shape=self.shape, margin=self.margin, strength=self.strength)
        engine = open_engine(WEIGHTS, self.backend, self.device, intra_op_threads=max(1, available_cores() // 2) if self.live else None)
        secret = None if self.secret is None else self.secret.encode()
        return SynthAnonymiser(BatchingEngine(engine), secret=secret, fallback=fallback)


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
    if options.live or is_live_url(input_path) or is_live_output(output_path):
        run_live_job(input_path, output_path, options, live_detector(options), log=log)
        return
    detector = make_detector(options.detector, **options.detector_options)
    if os.path.isdir(input_path):
        run_folder(Path(input_path), Path(output_path), options, detector, log=log)
    elif Path(input_path).suffix.lower() in IMAGE_SUFFIXES and "%" not in input_path:  # img%04d.png is a sequence
        run_image(input_path, output_path, options, detector, log=log)
    else:
        run_video(input_path, output_path, options, detector, log=log)


def live_detector(options: Options) -> Detector:
    """The detector for live runs. It looks past the frame edges (see ``edge_pad``), and
    ONNX Runtime gets half the cores: its spinning thread pool can starve the decoders
    and encoders beside it (see benchmarks/LIVE.md for what was and was not measured).
    Threads change the speed only, never what is found."""
    defaults = {"edge_pad": LIVE_EDGE_PAD, "intra_op_threads": max(1, available_cores() // 2)}
    return make_detector(options.detector, **{**defaults, **options.detector_options})


def is_live_output(output_path: str) -> bool:
    return is_network_output(output_path) or output_path.startswith("webrtc://")


def _check_paths(input_path: str, output_path: str) -> None:
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


def build_stages(options: Options, detector: Detector, fps: float, cleanup: ExitStack, *, live: bool = False, i420: bool = True):
    """Detect, track, (backfill), (audit), anonymise, and the counter of host <-> device
    copies (None off the GPU path). Live runs do not backfill: it would hold frames back
    and add its whole window to the latency. ``i420``: frames on the device come back as
    I420 (False: BGR, for a sink that takes nothing else)."""
    resident = options.device == "cuda" if options.frames_on_device is None else options.frames_on_device
    transfers = None
    if resident:
        from stream import gpu

        transfers = gpu.Transfers(options.device)
        detector = gpu.DeviceDetector(detector, transfers)
    stages = [
        DetectStage(detector, every=options.detect_every),
        TrackStage(Tracker(max_coast_s=options.coast_s, tentative_coast_s=options.tentative_coast_s, fps=fps)),
    ]
    if resident:
        stages.insert(0, gpu.UploadStage(transfers))
    if not live:
        stages.append(BackfillStage(frames=round(options.backfill_s * fps)))
    if options.audit:
        audit = AuditStage(options.audit)
        cleanup.callback(audit.close)
        stages.append(audit)
    stages.append(AnonymiseStage(stream_anonymiser(options, live=live, transfers=transfers)))
    if resident:
        stages.append(gpu.DownloadStage(transfers, i420=i420))
    return stages, transfers


def stream_anonymiser(options: Options, *, live: bool = False, transfers=None):
    """The anonymiser of one stream: synth propagates keyframes, which takes state per
    stream, so each graph gets its own; live ones never wait for the generator. With
    ``transfers`` (the GPU path) the pixels are done on the device."""
    anonymiser = options.anonymiser()
    if transfers is not None:
        from stream import gpu

        if options.mode != "synth":
            return gpu.DeviceObscurer(anonymiser)
        anonymiser = gpu.DeviceSynth(anonymiser.engine, anonymiser.secret, anonymiser.fallback, transfers)
    if options.mode != "synth" or options.keyframe_every == 1:
        return anonymiser
    return PropagatingSynth(anonymiser, every=options.keyframe_every, wait=not live)


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
        stages, transfers = build_stages(options, detector, float(source.rate), cleanup)
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
        graph.report.transfers = transfers
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
    if transfers is not None and report.frames:
        log(_copies_line(transfers, report.frames))
    log(report.latency.table())
    return report


def _copies_line(transfers, frames: int) -> str:
    return (
        f"host -> device: {transfers.uploads / frames:.1f} copies, {transfers.uploaded_bytes / frames / 1024:.0f} KiB a frame; "
        f"device -> host: {transfers.downloads / frames:.1f} copies, {transfers.downloaded_bytes / frames / 1024:.0f} KiB a frame"
    )


LIVE_REPORT_EVERY_S = 5.0
LIVE_IN_FLIGHT = 2  # frames inside a live graph at once: one detecting, one finishing


def run_live(source, sink, options: Options, detector: Detector, *, log=print) -> RunReport:
    """Run a live source (a ``LiveSource`` or anything with ``dropped`` and frames that
    carry ``captured``) into a live sink until the source ends or Ctrl-C; the sink is
    always closed. Prints capture-to-output latency and drops at the end, and every
    few seconds with ``options.verbose``."""
    with ExitStack() as cleanup:
        stages, transfers = build_stages(options, detector, float(getattr(source, "rate", 30)), cleanup, live=True, i420=getattr(sink, "takes_i420", True))
        last_report = [time.monotonic()]
        graph = None

        def on_frame(frame):
            now = time.monotonic()
            if options.verbose and now - last_report[0] >= LIVE_REPORT_EVERY_S:
                last_report[0] = now
                log(_live_line(graph.report, source))

        graph = Graph(
            source, stages, sink, cover=cover_whole_frame, queue_size=1,
            stage_timeout=options.stage_timeout, target_delay=options.target_delay_s,
            max_in_flight=LIVE_IN_FLIGHT, on_frame=on_frame,
        )  # fmt: skip
        graph.report.transfers = transfers
        try:
            graph.run()
        except KeyboardInterrupt:
            log("veil: stopping")
        finally:
            log(_live_line(graph.report, source))
            if transfers is not None and graph.report.frames:
                log(_copies_line(transfers, graph.report.frames))
            log(graph.report.latency.table())
    return graph.report


def _live_line(report: RunReport, source) -> str:
    latency = report.latency.percentiles_ms().get("capture→out")
    timing = f"capture-to-output p50 {latency[1]:.0f} ms, p99 {latency[2]:.0f} ms; " if latency else ""
    return (
        f"veil: live: {report.frames} frames out ({report.fps:.1f} fps), {timing}"
        f"{getattr(source, 'dropped', 0)} dropped at the source, {report.failed_frames} covered whole, {report.late_frames} late"
    )


def open_live_source(input_path: str, options: Options, *, size: str | None = None, fps: float | None = None, log=print) -> LiveSource:
    """A camera (asked for ``size`` "WxH" and ``fps`` when given), a stream, or a file
    played in real time."""
    if is_camera(input_path):
        url, format, camera_options = camera_input(input_path, size, fps)
        return LiveSource(url, format=format, options=camera_options, give_up_s=options.reconnect_s, log=log)
    return LiveSource(input_path, realtime=not is_live_url(input_path), give_up_s=options.reconnect_s, log=log)


def open_live_sink(output_path: str, source: LiveSource, options: Options, *, log=print):
    if output_path.startswith("webrtc://"):
        from stream.webrtc import WebRtcSink

        return WebRtcSink(output_path, log=log)
    return LiveEncoderSink(
        output_path, width=source.width, height=source.height, rate=source.rate, time_base=CLOCK,
        audio=source.has_audio, give_up_s=options.reconnect_s, log=log,
    )  # fmt: skip


def run_live_job(input_path: str, output_path: str, options: Options, detector: Detector, *, log=print) -> RunReport:
    """A camera, a stream, or a file played in real time, to RTMP, WebRTC or a
    recording, until the source ends or Ctrl-C (which finishes the recording)."""
    source = open_live_source(input_path, options, log=log)
    with ExitStack() as cleanup:
        cleanup.callback(source.close)
        sink = open_live_sink(output_path, source, options, log=log)
        log(f"veil: live: {input_path} ({source.width}x{source.height}, {float(source.rate):g} fps) -> {output_path}; Ctrl-C stops")
        try:
            report = run_live(source, sink, options, detector, log=log)
        except BaseException as error:
            if hasattr(sink, "partial"):
                _keep_or_remove_partial(sink, error, log)
            raise
        if getattr(sink, "partial", None) is not None:
            log(f"veil: wrote {sink.commit()}")
    return report


def _keep_or_remove_partial(sink: VideoFileSink, error: BaseException, log) -> None:
    """Every frame written is anonymised, so a long job's work is kept, under a name
    that does not look complete."""
    if sink.partial is None:
        return
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
