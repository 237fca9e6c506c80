"""The Python front door: one call for a whole job, and the two ends of a pipeline."""

from __future__ import annotations

from collections.abc import Callable

from veil.stream.elements import Sink, Source
from veil.stream.io.live import is_live_url
from veil.stream.io.sink import VideoFileSink
from veil.stream.io.source import VideoSource
from veil.stream.jobs import run as run_job
from veil.stream.jobs.kinds import is_live_output
from veil.stream.jobs.live import open_live_sink, open_live_source
from veil.stream.options import Options


def run(input: str, output: str, *, log: Callable[[str], None] = print, **settings) -> None:
    """Anonymise ``input`` (a video, photo, folder, stream or camera) into ``output``, as
    ``veil run`` does. ``settings`` are Options fields (``mode="synth"``, ``strength=2``,
    ``backfill_s=0.5``, ...), checked before anything opens; no progress bar by default."""
    run_job(str(input), str(output), Options(**{"progress": False, **settings}), log=log)


def open_source(url: str, *, live: bool = False, reconnect_s: float = 30.0, log: Callable[[str], None] = print) -> Source:
    """A video file; or, for a stream URL, a camera or ``live=True``, a live source (the
    newest frame, reconnected with backoff for up to ``reconnect_s``)."""
    if live or is_live_url(url):
        return open_live_source(url, Options(live=True, reconnect_s=reconnect_s), log=log)
    return VideoSource(url)


def open_sink(url: str, *, like: Source, log: Callable[[str], None] = print) -> Sink:
    """Where the anonymised frames of ``like`` go, sized and timed as it is: a file (written
    under a partial name until the run succeeds), an RTMP/SRT stream or a recording of a
    live source, or ``webrtc://HOST:PORT`` viewers."""
    if like.live or is_live_output(url):
        return open_live_sink(url, like, Options(live=True), log=log)
    return VideoFileSink(url, width=like.width, height=like.height, rate=like.rate, time_base=like.time_base, audio=like.audio)
