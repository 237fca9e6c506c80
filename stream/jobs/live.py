"""Live runs: a camera, a stream or a file played in real time, to a stream, a recording,
WebRTC viewers or a virtual camera, until the source ends or Ctrl-C."""

from __future__ import annotations

import time

from veil.errors import InputError
from veil.stream.detectors import Detector
from veil.stream.elements import OutputSink, Sink, Source
from veil.stream.graph import RunReport
from veil.stream.io.live import CLOCK, LiveSource, camera_input, is_camera, is_live_url, without_password
from veil.stream.io.provenance import marks
from veil.stream.io.publish import LiveEncoderSink, is_network_output
from veil.stream.jobs.video import copies_line
from veil.stream.options import Options
from veil.stream.pipeline import Pipeline
from veil.stream.recovery.sidecar import SidecarWriter

LIVE_REPORT_EVERY_S = 5.0


def run_live(source: Source, sink: Sink, options: Options, detector: Detector, *, log=print, seal=None, controls=None) -> RunReport:
    """Run a live source into a sink until the source ends or Ctrl-C; the sink is always
    closed, a recording finished and named. Prints capture-to-output latency and drops at
    the end, and every few seconds with ``options.verbose``. ``controls``: what the user
    may change as it runs (veil.stream.controls.LiveControls)."""
    pipeline = Pipeline(options, detector=detector, controls=controls)
    last_report = [time.monotonic()]
    progress: list[RunReport] = []

    def on_frame(frame, report):
        now = time.monotonic()
        progress[:] = [report]
        if controls is not None:
            controls.on_frame(frame)
        if options.verbose and now - last_report[0] >= LIVE_REPORT_EVERY_S:
            last_report[0] = now
            log(live_line(report, source))

    try:
        report = pipeline.run(source, sink, log=log, on_frame=on_frame, seal=seal)
    finally:
        for report in progress[-1:]:
            log(live_line(report, source))
            if report.transfers is not None and report.frames:
                log(copies_line(report.transfers, report.frames))
            log(report.latency.table())
    return report


def live_line(report: RunReport, source: Source) -> str:
    latency = report.latency.percentiles_ms().get("capture→out")
    timing = f"capture-to-output p50 {latency[1]:.0f} ms, p99 {latency[2]:.0f} ms; " if latency else ""
    return (
        f"veil: live: {report.frames} frames out ({report.fps:.1f} fps), {timing}"
        f"{source.dropped} dropped at the source, {report.failed_frames} covered whole, {report.late_frames} late"
    )


def open_live_source(input_path: str, options: Options, *, size: str | None = None, fps: float | None = None, log=print) -> LiveSource:
    """A camera (asked for ``size`` "WxH" and ``fps`` when given), a stream, or a file
    played in real time."""
    if is_camera(input_path):
        url, format, camera_options = camera_input(input_path, size, fps)
        return LiveSource(url, format=format, options=camera_options, give_up_s=options.reconnect_s, log=log)
    return LiveSource(input_path, realtime=not is_live_url(input_path), give_up_s=options.reconnect_s, log=log)


def open_live_sink(output_path: str, source: LiveSource, options: Options, *, log=print, sidecar: str | None = None) -> Sink:
    if output_path.startswith("webrtc://"):
        from veil.stream.io.webrtc import WebRtcSink

        if options.preset is not None:
            raise InputError("--preset is x264's; a webrtc:// output is encoded by the browser's codecs in aiortc")
        return WebRtcSink(output_path, log=log)
    return LiveEncoderSink(
        output_path, width=source.width, height=source.height, rate=source.rate, time_base=CLOCK,
        audio=source.has_audio, give_up_s=options.reconnect_s, log=log, metadata=marks(options, sidecar), preset=options.preset,
    )  # fmt: skip


def open_live_seal(output_path: str, source: LiveSource, options: Options) -> SidecarWriter | None:
    """A recording's recovery sidecar, when recovery keys are given; a stream has no file
    for one to go beside."""
    if not options.recovery_keys:
        return None
    if output_path.startswith("webrtc://") or is_network_output(output_path):
        raise InputError(f"--recovery-key seals originals beside a file; {output_path} is a stream (record to a file as well, "
                         "e.g. with veil cameras)")  # fmt: skip
    return SidecarWriter(output_path, options.recipients(), width=source.width, height=source.height, rate=source.rate,
                         time_base=CLOCK, source=without_password(source.url), mode=options.mode)  # fmt: skip


def run_live_job(input_path: str, output_path: str, options: Options, detector: Detector, *, log=print) -> RunReport:
    """A camera, a stream, or a file played in real time, to RTMP, WebRTC or a
    recording, until the source ends or Ctrl-C (which finishes the recording)."""
    with open_live_source(input_path, options, log=log) as source:
        seal = open_live_seal(output_path, source, options)
        try:
            sink = open_live_sink(output_path, source, options, log=log, sidecar=None if seal is None else seal.id_hex)
        except BaseException:
            seal.abort() if seal is not None else None
            raise
        log(f"veil: live: {input_path} ({source.width}x{source.height}, {float(source.rate):g} fps) -> {output_path}; Ctrl-C stops")
        report = run_live(source, sink, options, detector, log=log, seal=seal)
        if isinstance(sink, OutputSink) and sink.partial is not None:
            log(f"veil: wrote {sink.path}")
    return report
