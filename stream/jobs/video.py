"""A video file, end to end."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from veil.stream.detectors import Detector
from veil.stream.graph import RunReport
from veil.stream.io.audit import AuditLog
from veil.stream.io.provenance import marks
from veil.stream.io.sink import VideoFileSink
from veil.stream.io.source import VideoSource
from veil.stream.options import Options
from veil.stream.pipeline import Pipeline
from veil.stream.recovery.sidecar import SidecarWriter


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


def run_video(input_path, output_path, options: Options, detector: Detector, *, log=print,
              audit: AuditLog | None = None, label: str | None = None) -> RunReport:
    """One video file. ``audit``: a log shared with other files (a folder run), its lines
    naming this one as ``label``; without it, ``options.audit`` is this run's own."""
    with VideoSource(str(input_path)) as source:  # a bad input fails here, before any output exists
        seal = None
        if options.recovery_keys:
            seal = SidecarWriter(output_path, options.recipients(), width=source.width, height=source.height, rate=source.rate,
                                 time_base=source.time_base, source=Path(str(input_path)).name, mode=options.mode)  # fmt: skip
        try:
            sink = VideoFileSink(
                output_path, width=source.width, height=source.height, rate=source.rate, time_base=source.time_base,
                audio=source.audio, metadata=marks(options, None if seal is None else seal.id_hex), preset=options.preset,
            )  # fmt: skip
        except BaseException:
            seal.abort() if seal is not None else None
            raise
        summary = Summary()
        with tqdm(total=source.frame_count, unit="frame", disable=not options.progress, desc=Path(str(input_path)).name, file=sys.stderr) as bar:

            def on_frame(frame, report):
                summary.count(frame)
                bar.update()

            report = Pipeline(options, detector=detector).run(source, sink, log=log, audit=audit, file=label, on_frame=on_frame, seal=seal)
    if seal is not None:
        log(f"veil: sealed the originals of the masked regions in {seal.path} (for {', '.join(options.recovery_keys)})")
    log(
        f"veil: wrote {output_path}: {report.frames} frames in {report.wall_s:.1f} s ({report.fps:.1f} fps); "
        f"{summary.faces} face boxes in {len(summary.track_ids)} tracks anonymised"
    )
    if source.times.derived:
        log(
            f"veil: {Path(str(input_path)).name}: {source.times.derived} of {report.frames} frames had missing or out-of-order "
            "timestamps (AVI and raw streams store decode order or none); they were timed as FFmpeg does (decode order, then the frame rate)"
        )
    if report.transfers is not None and report.frames:
        log(copies_line(report.transfers, report.frames))
    log(report.latency.table())
    return report


def copies_line(transfers, frames: int) -> str:
    return (
        f"host -> device: {transfers.uploads / frames:.1f} copies, {transfers.uploaded_bytes / frames / 1024:.0f} KiB a frame; "
        f"device -> host: {transfers.downloads / frames:.1f} copies, {transfers.downloaded_bytes / frames / 1024:.0f} KiB a frame"
    )
