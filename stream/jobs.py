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
import numpy as np
from tqdm import tqdm

from veil.engines.onnx_models import available_cores
from veil.stream.anonymisers.classic import Anonymiser, cover_whole_frame
from veil.stream.stages.audit import AuditLog, AuditStage, record
from veil.stream.stages.backfill import BackfillStage
from veil.stream.detectors import Detector, make_detector
from veil.stream.detectors.passes import LIVE_EDGE_PAD
from veil.errors import InputError, OutputError, StageError, VeilError, reason
from veil.stream.graph import Graph, RunReport
from veil.stream.limits import LIMITS
from veil.stream.io.live import CLOCK, LiveSource, camera_input, is_camera, is_live_url
from veil.stream.io.partial import PartialFile
from veil.stream.anonymisers.propagate import KEYFRAME_EVERY, PropagatingSynth
from veil.stream.io.publish import LiveEncoderSink, is_network_output
from veil.stream.io.sink import VIDEO_SUFFIXES as VIDEO_OUTPUTS
from veil.stream.io.sink import VideoFileSink
from veil.stream.io.source import VideoSource
from veil.stream.stages import AnonymiseStage, DetectStage, TrackStage
from veil.stream.tracker import Tracker

# Photos: what OpenCV reads and writes (a GIF, WebP or AVIF with more than one frame is a video).
PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".avif", ".gif", ".jp2"}
ALPHA_SUFFIXES = {".png", ".webp", ".tif", ".tiff"}  # photo formats that keep transparency
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

    def __post_init__(self):
        """Every number in range before anything opens (veil.stream.limits)."""
        for name in ("strength", "margin", "coast_s", "tentative_coast_s", "backfill_s", "stage_timeout",
                     "keyframe_every", "detect_every", "reconnect_s"):
            setattr(self, name, LIMITS[name].check(getattr(self, name)))
        if self.target_delay_s is not None:
            self.target_delay_s = LIMITS["target_delay_ms"].check(self.target_delay_s * 1000) / 1000
        if "score_threshold" in self.detector_options:
            LIMITS["threshold"].check(self.detector_options["score_threshold"])
        if self.detector_options.get("input_size") is not None:
            LIMITS["detect_size"].check(self.detector_options["input_size"])

    def anonymiser(self):
        """The run's one anonymiser (stateless, shared by its graphs); a bad mode fails here."""
        if self._anonymiser is None:
            self._anonymiser = self._make_anonymiser()
        return self._anonymiser

    def _make_anonymiser(self):
        """Synth pixelates (at this shape and margin) the faces it cannot replace."""
        if self.mode != "synth":
            return Anonymiser(mode=self.mode, shape=self.shape, margin=self.margin, strength=self.strength)
        from veil.engines.batching import BatchingEngine
        from veil.engines.runtime import open_engine
        from veil.engines import GENERATOR_WEIGHTS
        from veil.stream.anonymisers.synth import SynthAnonymiser

        fallback = Anonymiser(mode="pixelate", shape=self.shape, margin=self.margin, strength=self.strength)
        engine = open_engine(GENERATOR_WEIGHTS, self.backend, self.device, intra_op_threads=max(1, available_cores() // 2) if self.live else None)
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
    detector = file_detector(options)
    if os.path.isdir(input_path):
        run_folder(Path(input_path), Path(output_path), options, detector, log=log)
    elif is_photo(input_path):
        run_image(input_path, output_path, options, detector, log=log)
    else:
        run_video(input_path, output_path, options, detector, log=log)


def is_photo(path) -> bool:
    """A still image OpenCV reads; an animated GIF, WebP or AVIF is a video."""
    path = str(path)
    if Path(path).suffix.lower() not in PHOTO_SUFFIXES or "%" in path:  # img%04d.png is a sequence
        return False
    try:
        return cv2.imcount(path) <= 1
    except cv2.error:
        return True  # unreadable: reading it as a photo says so in one line


def file_detector(options: Options) -> Detector:
    """The detector for file runs. Without backfill it looks past the frame edges as the
    live one does (``edge_pad``): nothing else would mask a face on the frames it enters by."""
    defaults = {"edge_pad": LIVE_EDGE_PAD} if options.backfill_s == 0 else {}
    return make_detector(options.detector, **{**defaults, **options.detector_options})


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
    _check_kind(input_path, Path(output_path), photo=not is_url and is_photo(input_path))


def _check_kind(input_path, output: Path, *, photo: bool) -> None:
    """A photo is written as a photo, a video as a video: refused here, before anything opens."""
    suffix = output.suffix.lower()
    if photo and not (suffix in PHOTO_SUFFIXES and cv2.haveImageWriter(str(output))):
        raise OutputError(f"cannot write {output}: {Path(input_path).name} is a photo; write one of {', '.join(sorted(PHOTO_SUFFIXES))}")
    if not photo and suffix not in VIDEO_OUTPUTS:
        why = f"{Path(input_path).name} is a video" if suffix in PHOTO_SUFFIXES else f"Veil does not write {suffix or 'files without an extension'}"
        raise OutputError(f"cannot write {output}: {why}; write one of {', '.join(VIDEO_OUTPUTS)}")


def build_stages(options: Options, detector: Detector, fps: float, *, live: bool = False, i420: bool = True,
                 audit: AuditLog | None = None, file: str | None = None):
    """Detect, track, (backfill), (audit), anonymise, and the counter of host <-> device
    copies (None off the GPU path). Live runs do not backfill: it would hold frames back
    and add its whole window to the latency. ``i420``: frames on the device come back as
    I420 (False: BGR, for a sink that takes nothing else). ``file`` names the input in the
    audit lines."""
    resident = options.device == "cuda" if options.frames_on_device is None else options.frames_on_device
    transfers = None
    if resident:
        from veil.stream import gpu

        transfers = gpu.Transfers(options.device)
        detector = gpu.DeviceDetector(detector, transfers)
    if options.detect_every > 1:
        _check_detect_every(options, fps, live)
    stages = [
        DetectStage(detector, every=options.detect_every),
        TrackStage(Tracker(max_coast_s=options.coast_s, tentative_coast_s=options.tentative_coast_s, fps=fps)),
    ]
    if resident:
        stages.insert(0, gpu.UploadStage(transfers))
    if not live:
        stages.append(BackfillStage(frames=round(options.backfill_s * fps)))
    if audit is not None:
        stages.append(AuditStage(audit, file))
    stages.append(AnonymiseStage(stream_anonymiser(options, live=live, transfers=transfers)))
    if resident:
        stages.append(gpu.DownloadStage(transfers, i420=i420))
    return stages, transfers


def _check_detect_every(options: Options, fps: float, live: bool) -> None:
    """A face that appears between two detections is masked only once the next one finds it,
    and then backwards by backfill: so the frames between detections must fit in backfill."""
    if live:
        raise InputError(f"detection interval {options.detect_every}: live runs detect on every frame (they do not backfill, "
                         "so a face that appears between detections would be shown until the next one)")
    held = round(options.backfill_s * fps)
    if options.detect_every - 1 > held:
        raise InputError(f"detection interval {options.detect_every} needs a backfill of at least {options.detect_every - 1} frames "
                         f"({(options.detect_every - 1) / fps:.2f} s at {fps:g} fps), got {held}: a face that appears between "
                         "detections is masked on the frames before its first detection only by backfill")


def stream_anonymiser(options: Options, *, live: bool = False, transfers=None):
    """The anonymiser of one stream: synth propagates keyframes, which takes state per
    stream, so each graph gets its own; live ones never wait for the generator. With
    ``transfers`` (the GPU path) the pixels are done on the device."""
    anonymiser = options.anonymiser()
    if transfers is not None:
        from veil.stream import gpu

        if options.mode != "synth":
            return gpu.DeviceObscurer(anonymiser)
        anonymiser = gpu.DeviceSynth(anonymiser.engine, anonymiser.secret, anonymiser.fallback, transfers)
    if options.mode != "synth" or options.keyframe_every == 1:
        return anonymiser
    return PropagatingSynth(anonymiser, every=options.keyframe_every, wait=not live)


def run_video(input_path, output_path, options: Options, detector: Detector, *, log=print,
              audit: AuditLog | None = None, label: str | None = None) -> RunReport:
    """One video file. ``audit``: a log shared with other files (a folder run), its lines
    naming this one as ``label``; without it, ``options.audit`` is this run's own."""
    source = VideoSource(str(input_path))
    with ExitStack() as cleanup:
        cleanup.callback(source.close)
        frames = iter(source)
        first = next(frames)  # a bad input fails here, before any output exists
        sink = VideoFileSink(
            output_path, width=first.width, height=first.height,
            rate=source.rate, time_base=source.time_base, audio=source.audio,
        )  # fmt: skip
        own_audit = None
        try:
            own_audit = AuditLog(options.audit) if audit is None and options.audit else None
            stages, transfers = build_stages(options, detector, float(source.rate), audit=audit or own_audit, file=label)
        except BaseException:
            sink.abort()
            raise
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
            if own_audit is not None:
                own_audit.close()
        except BaseException as error:
            kept = _keep_or_remove_partial(sink, error, log)
            if own_audit is not None:
                own_audit.keep() if kept else own_audit.abort()
            raise
        bar.close()
        sink.commit()
        if own_audit is not None:
            own_audit.commit()
    log(
        f"veil: wrote {output_path}: {report.frames} frames in {report.wall_s:.1f} s ({report.fps:.1f} fps); "
        f"{summary.faces} face boxes in {len(summary.track_ids)} tracks anonymised"
    )
    if source.times.derived:
        log(
            f"veil: {Path(str(input_path)).name}: {source.times.derived} of {report.frames} frames had missing or out-of-order "
            "timestamps (AVI and raw streams store decode order or none); they were timed as FFmpeg does (decode order, then the frame rate)"
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


def run_live(source, sink, options: Options, detector: Detector, *, log=print, audit: AuditLog | None = None) -> RunReport:
    """Run a live source (a ``LiveSource`` or anything with ``dropped`` and frames that
    carry ``captured``) into a live sink until the source ends or Ctrl-C; the sink is
    always closed. Prints capture-to-output latency and drops at the end, and every
    few seconds with ``options.verbose``."""
    stages, transfers = build_stages(options, detector, float(getattr(source, "rate", 30)), live=True,
                                     i420=getattr(sink, "takes_i420", True), audit=audit)
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
        from veil.stream.io.webrtc import WebRtcSink

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
        recording = getattr(sink, "file", None) is not None
        try:
            audit = AuditLog(options.audit) if options.audit else None
        except BaseException:
            sink.abort() if recording else sink.close()
            raise
        log(f"veil: live: {input_path} ({source.width}x{source.height}, {float(source.rate):g} fps) -> {output_path}; Ctrl-C stops")
        try:
            report = run_live(source, sink, options, detector, log=log, audit=audit)
            if audit is not None:
                audit.close()
        except BaseException as error:
            kept = recording and _keep_or_remove_partial(sink, error, log)
            if audit is not None:
                audit.keep() if kept or not recording else audit.abort()
            raise
        if recording:
            log(f"veil: wrote {sink.commit()}")
        if audit is not None:
            audit.commit()
    return report


def _keep_or_remove_partial(sink, error: BaseException, log) -> bool:
    """Every frame written is anonymised, so a long job's work is kept, under a name
    that does not look complete; True if it was kept."""
    if sink.frames == 0 or not sink.partial.exists() or isinstance(error, OutputError):
        sink.abort()  # nothing kept, or the file itself is what failed: it cannot be trusted
        return False
    sink.keep()
    reason = str(error) or type(error).__name__
    log(f"veil: run stopped ({reason}); the {sink.frames} frames written, all anonymised, are in {sink.partial}")
    return True


def read_photo(path) -> tuple[np.ndarray, np.ndarray | None]:
    """The photo upright as BGR (EXIF orientation applied), and its alpha channel if it has one."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise InputError(f"cannot read image {path}")
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None or raw.ndim != 3 or raw.shape[2] != 4 or raw.shape[:2] != image.shape[:2]:
        return image, None
    alpha = raw[:, :, 3]
    return image, alpha if alpha.dtype == np.uint8 else (alpha >> 8).astype(np.uint8)


def run_image(input_path, output_path, options: Options, detector: Detector, *, log=print,
              audit: AuditLog | None = None, label: str | None = None) -> None:
    output = Path(output_path)
    _check_kind(input_path, output, photo=True)
    image, alpha = read_photo(input_path)
    faces = detector.detect(image)
    result = options.anonymiser().apply(image, faces)
    if alpha is not None:
        if output.suffix.lower() in ALPHA_SUFFIXES:
            result = np.dstack([result, alpha])
        else:
            log(f"veil: {Path(input_path).name} has transparency, which {output.suffix} files cannot hold: written opaque")
    file = PartialFile(output)
    own_audit = None
    try:
        own_audit = AuditLog(options.audit) if audit is None and options.audit else None
        try:
            written = cv2.imwrite(str(file.partial), result)
        except cv2.error as error:
            raise OutputError(f"cannot write {output}: {error.err or error}") from None
        if not written:
            raise OutputError(f"cannot write {output}")
        for log_file in (audit, own_audit):
            if log_file is not None:
                log_file.write(record(0, 0, 0.0, faces, label))
        if own_audit is not None:
            own_audit.close()
    except BaseException:
        file.abort()
        if own_audit is not None:
            own_audit.abort()
        raise
    file.commit()
    if own_audit is not None:
        own_audit.commit()
    log(f"veil: wrote {output}: {len(faces)} faces anonymised")


def run_folder(input_dir: Path, output_dir: Path, options: Options, detector: Detector, *, log=print) -> None:
    """Mirror a folder: every image and video in, the same names out. Every file is
    tried; one that fails is reported and the rest go on; the run fails at the end if any
    did. With ``--audit``, one log for the folder, every line naming its file, and after
    each file a line that says whether it was written."""
    if output_dir.resolve().is_relative_to(input_dir.resolve()):
        raise OutputError("the output folder must not be inside the input folder")
    files = sorted(p for p in input_dir.rglob("*") if p.is_file())
    media = [p for p in files if p.suffix.lower() in PHOTO_SUFFIXES | VIDEO_SUFFIXES]
    if not media:
        raise InputError(f"no images or videos in {input_dir}")
    audit = AuditLog(options.audit) if options.audit else None
    failures: list[tuple[str, BaseException]] = []
    try:
        for path in media:
            label = path.relative_to(input_dir).as_posix()
            target = output_dir / label
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                if is_photo(path):
                    run_image(path, target, options, detector, log=log, audit=audit, label=label)
                else:
                    run_video(path, target, options, detector, log=log, audit=audit, label=label)
                outcome = {"file": label, "written": target.as_posix()}
            except Exception as error:  # noqa: BLE001 - one bad file must not stop the others
                failures.append((label, error))
                log(f"veil: {label}: failed: {_said(error)}")
                outcome = {"file": label, "failed": _said(error)}
            if audit is not None:
                audit.write(outcome)
    except BaseException:
        if audit is not None:
            audit.keep()
        raise
    if audit is not None:
        audit.commit()
    skipped = len(files) - len(media)
    log(f"veil: folder done: {len(media) - len(failures)} of {len(media)} files anonymised" + (f", {skipped} other files skipped" if skipped else ""))
    if failures:
        named = "; ".join(f"{label} ({_said(error)})" for label, error in failures)
        # exit 2 when every failure is the input's or output's fault, 1 when a run itself failed
        kind = InputError if all(isinstance(e, (InputError, OutputError)) for _, e in failures) else StageError
        raise kind(f"{len(failures)} of {len(media)} files failed: {named}")


def _said(error: BaseException) -> str:
    """An error in one line: Veil's own message, or the exception's type and words."""
    return str(error) if isinstance(error, VeilError) else f"{type(error).__name__}: {reason(error)}"
