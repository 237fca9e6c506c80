"""A pipeline: the stages a description (or a run's settings) makes, run from a source to a
sink with the fail-closed cover, its output named only when the run succeeds.

    pipeline = Pipeline("yunet threshold=0.3 ! track ! backfill 0.2 ! pixelate strength=2")
    with open_source("in.mp4") as source:
        report = pipeline.run(source, open_sink("out.mp4", like=source))

The elements may also be given as a list in which Stage objects of one's own stand between
them: ``Pipeline(["yunet", "track", MyStage(), "blur"])`` runs MyStage after the tracker.
"""

from __future__ import annotations

from collections.abc import Callable

from veil.engines.onnx_models import available_cores
from veil.errors import InputError, OutputError
from veil.stream.anonymisers import stream_anonymiser
from veil.stream.anonymisers.classic import cover_whole_frame
from veil.stream.description import Description, _role
from veil.stream.detectors import Detector, make_detector
from veil.stream.detectors.passes import LIVE_EDGE_PAD
from veil.stream.elements import OutputSink, Sink, Source, Stage
from veil.stream.graph import Graph, RunReport
from veil.stream.io.audit import AuditLog
from veil.stream.options import Options
from veil.stream.recovery.sidecar import SidecarWriter
from veil.stream.stages import AnonymiseStage, AuditStage, BackfillStage, DetectStage, MeshStage, SealStage, SelectStage, TrackStage
from veil.stream.stages.mesh import open_face_mesh
from veil.stream.tracker import Tracker

ONLY_HOLD_S = 2.0  # --only in files: a track that matches is masked this far back before its match too
LIVE_IN_FLIGHT = 2  # frames inside a live graph at once: one detecting, one finishing
STAGE_OF = {"detector": "detect", "track": "track", "backfill": "backfill", "audit": "audit", "anonymiser": "anonymise"}


def file_detector(options: Options) -> Detector:
    """The detector for file runs. Without backfill it looks past the frame edges as the
    live one does (``edge_pad``): nothing else would mask a face on the frames it enters by."""
    defaults = {"edge_pad": LIVE_EDGE_PAD} if options.backfill_s == 0 else {}
    return make_detector(options.detector, **{**defaults, **options.detector_options})


def live_detector(options: Options, **extra) -> Detector:
    """The detector for live runs. It looks past the frame edges (see ``edge_pad``), and
    ONNX Runtime gets half the cores: its spinning thread pool can starve the decoders
    and encoders beside it (see benchmarks/LIVE.md for what was and was not measured).
    Threads change the speed only, never what is found. ``extra``: the detector's settings
    that a description does not hold (``batch_wait_s`` for the cameras of one process)."""
    defaults = {"edge_pad": LIVE_EDGE_PAD, "intra_op_threads": max(1, available_cores() // 2)}
    return make_detector(options.detector, **{**defaults, **options.detector_options, **extra})


def build_stages(options: Options, detector: Detector, fps: float, *, live: bool = False, i420: bool = True,
                 audit: AuditLog | None = None, file: str | None = None, seal: SidecarWriter | None = None,
                 controls=None) -> tuple[list[Stage], object]:  # fmt: skip
    """Detect, track, (select), (backfill), (mesh), (audit), (seal), anonymise, and the counter of host <-> device
    copies (None off the GPU path). Live runs do not backfill: it would hold frames back
    and add its whole window to the latency. ``i420``: frames on the device come back as
    I420 (False: BGR, for a sink that takes nothing else). ``file`` names the input in the
    audit lines. ``seal``: the recovery sidecar the originals of the masked regions go to.
    ``controls``: a live graph's veil.stream.controls.LiveControls, its anonymiser and selection."""
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
    if options.selection or controls is not None:
        if resident:
            raise InputError("--keep and --only run on the host frame path; leave --device cuda's frames off the device")
        hold = 0 if live else round(ONLY_HOLD_S * fps)
        stages.append(controls.select if controls is not None else
                      SelectStage(options.selection, options.people(), threshold=options.match_threshold, hold=hold))  # fmt: skip
    if resident:
        stages.insert(0, gpu.UploadStage(transfers))
    if not live:
        stages.append(BackfillStage(frames=round(options.backfill_s * fps)))
    if options.anonymiser().wants_mesh:
        if resident:
            raise InputError("the face mesh (--shape contour, a generator trained with it) runs on the host frame path; "
                             "leave --device cuda's frames off the device")
        threads = max(1, available_cores() // 2) if live else None  # as the live detector's
        stages.append(MeshStage(open_face_mesh(options.backend, options.device, threads)))
    if audit is not None:
        stages.append(AuditStage(audit, file))
    if seal is not None:
        stages.append(SealStage(seal, options.anonymiser()))
    stages.append(AnonymiseStage(controls if controls is not None else stream_anonymiser(options, live=live, transfers=transfers)))
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


class Pipeline:
    """``spec``: a launch line or a Description (the elements between source and sink), a
    run's Options, or a list of element texts and Stage objects. ``detector``: one already
    built, to share between pipelines (the WebRTC server's cameras do); by default each
    pipeline builds its own, as a file or a live run needs it."""

    def __init__(self, spec: str | Description | Options | list, *, detector: Detector | None = None, controls=None, **settings):
        self.custom: list[tuple[str | None, Stage]] = []  # (after the stage of this element, stage)
        if isinstance(spec, list):
            texts, after = [], None
            for item in spec:
                if isinstance(item, Stage):
                    self.custom.append((after, item))
                elif isinstance(item, str):
                    texts.append(item)
                    after = STAGE_OF[_role(item.split()[0])] if item.split() else None
                else:
                    raise InputError(f"a pipeline's list holds element texts and Stage objects, got {type(item).__name__}")
            spec = " ! ".join(texts)
        if isinstance(spec, str):
            spec = Description.parse(spec)
        self.options = spec.options(**settings) if isinstance(spec, Description) else spec
        self.options.anonymiser()  # a bad mode fails now, before any source opens
        self.options.people()  # and a reference without a clear face
        self.detector, self.controls = detector, controls

    def stages(self, fps: float, *, live: bool, i420: bool = True, audit: AuditLog | None = None,
               file: str | None = None, seal: SidecarWriter | None = None) -> tuple[list[Stage], object]:
        if self.detector is None:
            self.detector = (live_detector if live else file_detector)(self.options)
        built, transfers = build_stages(self.options, self.detector, fps, live=live, i420=i420, audit=audit, file=file, seal=seal,
                                        controls=self.controls)  # fmt: skip
        stages = [stage for after, stage in self.custom if after is None]
        for stage in built:
            stages.append(stage)
            stages += [custom for after, custom in self.custom if after == stage.name]
        return stages, transfers

    def run(self, source: Source, sink: Sink, *, log: Callable[[str], None] = print, audit: AuditLog | None = None,
            file: str | None = None, on_frame: Callable | None = None, seal: SidecarWriter | None = None) -> RunReport:
        """Run ``source`` to its end (a live one: to Ctrl-C too) into ``sink``. The sink is
        always closed; a file it wrote is given its name on success, and after a failure
        kept under its partial name if frames were written (all anonymised), else removed.
        ``audit``: a log shared with other runs (a folder's), ``file`` naming this one in it;
        without one, the options' own audit log goes with this run's output. ``on_frame(frame,
        report)`` sees each frame as it is written, and the report so far. ``seal``: the
        output's recovery sidecar, named, kept or removed with it."""
        own_audit = None
        try:
            own_audit = AuditLog(self.options.audit) if audit is None and self.options.audit else None
            stages, transfers = self.stages(float(source.rate), live=source.live, i420=sink.takes_i420,
                                            audit=audit or own_audit, file=file, seal=seal)
        except BaseException:
            _abandon(sink, own_audit, seal)
            raise
        graph = Graph(
            source, stages, sink, cover=cover_whole_frame, stage_timeout=self.options.stage_timeout,
            queue_size=1 if source.live else 4, target_delay=self.options.target_delay_s if source.live else None,
            max_in_flight=LIVE_IN_FLIGHT if source.live else None,
            on_frame=None if on_frame is None else lambda frame: on_frame(frame, graph.report),
        )  # fmt: skip
        graph.report.transfers = transfers
        try:
            try:
                graph.run()
            except KeyboardInterrupt:
                if not source.live:
                    raise
                log("veil: stopping")  # how a live run is meant to end: its output is finished
            if own_audit is not None:
                own_audit.close()
        except BaseException as error:
            kept = finish_failed(sink, error, log)
            if own_audit is not None:
                own_audit.keep() if kept else own_audit.abort()
            if seal is not None:
                seal.keep(_written(sink, partial=True)) if kept else seal.abort()
            raise
        if isinstance(sink, OutputSink):
            sink.commit()
        if own_audit is not None:
            own_audit.commit()
        if seal is not None:
            seal.commit(_written(sink))
        return graph.report


def finish_failed(sink: Sink, error: BaseException, log) -> bool:
    """After a failed run: every frame written is anonymised, so a long job's work is kept,
    under a name that does not look complete; True if it was (or there is no file)."""
    if not isinstance(sink, OutputSink) or sink.partial is None:
        return True
    if sink.frames == 0 or not sink.partial.exists() or isinstance(error, OutputError):
        sink.abort()  # nothing kept, or the file itself is what failed: it cannot be trusted
        return False
    sink.keep()
    reason = str(error) or type(error).__name__
    log(f"veil: run stopped ({reason}); the {sink.frames} frames written, all anonymised, are in {sink.partial}")
    return True


def _written(sink: Sink, *, partial: bool = False):
    """The file a sink wrote (its partial name after a failure), or None for a stream."""
    if not isinstance(sink, OutputSink) or sink.partial is None:
        return None
    path = sink.partial if partial else sink.path
    return path if path.exists() else None


def _abandon(sink: Sink, audit: AuditLog | None, seal: SidecarWriter | None) -> None:
    """Before any frame: the output, the audit and the sidecar go, the sink is closed."""
    if isinstance(sink, OutputSink):
        sink.abort()
    else:
        sink.close()
    for beside in (audit, seal):
        if beside is not None:
            beside.abort()
