"""Small stand-ins the graph tests share."""

from veil.stream.elements import Sink


class ListSink(Sink):
    """A sink that keeps every frame written to it."""

    def __init__(self):
        self.frames, self.closed = [], False

    def write(self, frame):
        self.frames.append(frame)

    def close(self):
        self.closed = True
