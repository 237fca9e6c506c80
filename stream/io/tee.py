"""One graph's anonymised frames to several outputs at once (a camera's restreams and its
recording), finished together."""

from __future__ import annotations

from pathlib import Path

from veil.stream.elements import OutputSink, Sink
from veil.stream.frame import Frame


class Tee(OutputSink):
    """Writes every frame to each sink in turn. ``partial`` is the first file output's, so
    a failed run keeps (or removes) the files as a single output's would be."""

    def __init__(self, sinks: list[Sink]):
        if not sinks:
            raise ValueError("a tee needs at least one sink")
        self.sinks = list(sinks)
        files = [sink for sink in self.sinks if isinstance(sink, OutputSink) and sink.partial is not None]
        self._file = files[0] if files else None
        self.takes_i420 = all(sink.takes_i420 for sink in self.sinks)

    @property
    def partial(self) -> Path | None:
        return None if self._file is None else self._file.partial

    @property
    def path(self) -> Path | None:
        return None if self._file is None else self._file.path

    def write(self, frame: Frame) -> None:
        for sink in self.sinks:
            sink.write(frame)
        self.frames += 1

    def close(self) -> None:
        """Closes every sink, then raises the first error any of them gave."""
        self._each(lambda sink: sink.close(), self.sinks)

    def commit(self) -> Path | None:
        self._each(lambda sink: sink.commit(), self._outputs())
        return self.path

    def keep(self) -> Path | None:
        self._each(lambda sink: sink.keep(), self._outputs())
        return self.partial

    def abort(self) -> None:
        self._each(lambda sink: sink.abort(), self._outputs())

    def _outputs(self) -> list[OutputSink]:
        return [sink for sink in self.sinks if isinstance(sink, OutputSink)]

    @staticmethod
    def _each(action, sinks) -> None:
        errors = []
        for sink in sinks:
            try:
                action(sink)
            except Exception as error:  # noqa: BLE001 - raised below, after the others are done
                errors.append(error)
        if errors:
            raise errors[0]
