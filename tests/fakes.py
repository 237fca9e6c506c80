"""Small stand-ins the graph tests share."""


class ListSink:
    """A sink that keeps every frame written to it."""

    def __init__(self):
        self.frames, self.closed = [], False

    def write(self, frame):
        self.frames.append(frame)

    def close(self):
        self.closed = True
