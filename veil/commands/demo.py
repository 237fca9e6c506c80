"""`veil demo`: the built-in example clip (veil.testing.clips), anonymised, and a before/after still."""

from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np

from veil.stream.jobs import run
from veil.stream.options import Options
from veil.testing.clips import make_example_clip


def before_after(original: str | Path, anonymised: str | Path, image_path: str | Path, at_s: float = 3.0) -> None:
    """Side-by-side still of the same moment before and after."""
    pictures = []
    for path in (original, anonymised):
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            for frame in container.decode(stream):
                if frame.time is not None and frame.time >= at_s:
                    break
            pictures.append(frame.to_ndarray(format="bgr24"))
    cv2.imwrite(str(image_path), np.hstack(pictures))


def run_demo(out_dir: str | Path) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    clip, result, still = out / "example.mp4", out / "example_anon.mp4", out / "before_after.png"
    make_example_clip(clip)
    print(f"veil: made the example clip {clip}")
    run(str(clip), str(result), Options())
    before_after(clip, result, still)
    print(f"veil: before/after image {still}")
