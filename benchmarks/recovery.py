"""What sealing the originals costs: sidecar size per minute and fps with and without
``--recovery-key``, and how fast a track is restored.

    python -m benchmarks.recovery [--seconds 4] [--modes blur synth]

The built-in example clip at 1280x720 and 25 fps, with 1 and with 4 faces (the first actors of
its cast). For each mode and face count, the same file run twice in this process, without and
with a recovery key (the baseline row first), then the longest track restored losslessly.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from veil.stream.jobs import run
from veil.stream.options import Options
from veil.stream.recovery.keys import generate, load_private
from veil.stream.recovery.restore import open_for, recover
from veil.stream.recovery.sidecar import sidecar_path
from veil.testing.clips import DEFAULT_CAST, make_example_clip


def timed_run(clip: Path, out: Path, options: Options) -> float:
    start = time.perf_counter()
    run(str(clip), str(out), options, log=lambda line: None)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--modes", nargs="+", default=["blur", "synth"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        generate(folder / "controller")
        key = load_private(folder / "controller.key")
        print(f"1280x720, 25 fps, {args.seconds:g} s\n")
        print("| mode | faces | fps without | fps with | cost | sidecar MB/min | restore fps |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for faces in (1, 4):
            clip = folder / f"clip{faces}.mp4"
            make_example_clip(clip, width=1280, height=720, seconds=args.seconds, cast=DEFAULT_CAST[:faces])
            frames = round(args.seconds * 25)
            for mode in args.modes:
                plain = timed_run(clip, folder / f"plain-{mode}-{faces}.mp4", Options(mode=mode, progress=False))
                out = folder / f"sealed-{mode}-{faces}.mp4"
                sealed = timed_run(clip, out, Options(mode=mode, progress=False, recovery_keys=(str(folder / "controller.pub"),)))
                megabytes_a_minute = sidecar_path(out).stat().st_size / 1e6 * 60 / args.seconds
                tracks = open_for(out, key).tracks()
                longest = max(tracks, key=lambda t: len(tracks[t]))
                start = time.perf_counter()
                recover(out, key, folder / f"restored-{mode}-{faces}.mkv", tracks=[longest], log=lambda line: None)
                restore_fps = frames / (time.perf_counter() - start)
                print(f"| {mode} | {faces} | {frames / plain:.1f} | {frames / sealed:.1f} | {sealed / plain - 1:+.0%} "
                      f"| {megabytes_a_minute:.0f} | {restore_fps:.1f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
