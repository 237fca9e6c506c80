"""Cameras per machine: how many cameras one `veil cameras` process keeps in real time
(its cameras share one detector, frames that arrive together run as one batch) against
the same cameras run one process each (as `veil run --live` per camera runs them).

    python -m benchmarks.cameras [--size 640x360] [--fps 10] [--max 6] [--seconds 20]

Every camera plays the built-in example clip (five moving faces) live at ``--fps`` and
records it (NVR segments, as a site would). Both rows run the same code: the baseline is a
one-camera site file per process. Each count of cameras runs after every camera is live and
has written frames (model load and warm-up excluded), for ``--seconds``, read from the status
JSON of every process. A count is "real time" when every camera drops under 1% of its frames
at the source and writes at least 95% of ``--fps``. Memory is the summed resident memory of
the processes at the end.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from veil.testing.clips import make_example_clip
from veil.testing.servers import free_port

MAX_DROPPED = 0.01
MIN_FPS_SHARE = 0.95


def site_file(folder: Path, clip: Path, names: list[str]) -> tuple[Path, str]:
    listen = f"127.0.0.1:{free_port()}"
    cameras = "".join(f'[[camera]]\nname = "{name}"\nsource = "{clip}"\nrecord = true\n' for name in names)
    path = folder / f"site-{names[0]}.toml"
    path.write_text(f'[status]\nlisten = "{listen}"\n[record]\nfolder = "{folder}/recordings"\nsegment = 10\nkeep-gb = 1\n' + cameras)
    return path, f"http://{listen}/status"


def statuses(urls: list[str]) -> list[dict]:
    found = []
    for url in urls:
        try:
            with urllib.request.urlopen(url, timeout=5) as reply:
                found += json.loads(reply.read())["cameras"]
        except OSError:
            pass
    return found


def resident_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def trial(folder: Path, clip: Path, count: int, *, shared: bool, fps: float, seconds: float) -> dict:
    names = [f"cam{i}" for i in range(count)]
    groups = [names] if shared else [[name] for name in names]
    sites = [site_file(folder, clip, group) for group in groups]
    processes = [subprocess.Popen([sys.executable, "-m", "veil", "cameras", str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for path, _ in sites]  # fmt: skip
    urls = [url for _, url in sites]
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            now = statuses(urls)
            if len(now) == count and all(s["state"] == "live" and s["frames_out"] > 2 * fps for s in now):
                break
            time.sleep(0.5)
        else:
            raise RuntimeError(f"{count} cameras did not all come up: {statuses(urls)}")
        before = {s["name"]: s for s in statuses(urls)}
        time.sleep(seconds)
        after = {s["name"]: s for s in statuses(urls)}
        memory = sum(resident_mb(p.pid) for p in processes)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=60)
    rows = []
    for name in names:
        received = after[name]["frames_in"] - before[name]["frames_in"]
        dropped = after[name]["dropped"] - before[name]["dropped"]
        written = after[name]["frames_out"] - before[name]["frames_out"]
        rows.append((dropped / max(received, 1), written / seconds, after[name]["latency_p50_ms"], after[name]["latency_p99_ms"]))
    worst_drop, worst_fps = max(r[0] for r in rows), min(r[1] for r in rows)
    return {
        "cameras": count, "shared": shared, "worst_dropped": worst_drop, "worst_fps": worst_fps,
        "p50": max(r[2] or 0 for r in rows), "p99": max(r[3] or 0 for r in rows), "memory_mb": memory,
        "real_time": worst_drop < MAX_DROPPED and worst_fps >= MIN_FPS_SHARE * fps,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="640x360")
    parser.add_argument("--fps", type=int, default=10)
    parser.add_argument("--max", type=int, default=6, help="most cameras to try")
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        clip = folder / "camera.mp4"
        make_example_clip(clip, width=width, height=height, fps=args.fps, seconds=args.seconds + 150)
        print(f"{args.size} at {args.fps} fps, {args.seconds:g} s a count\n")
        print("| cameras | processes | worst dropped | worst fps out | p50 ms (worst camera) | p99 ms (worst camera) | memory MB | real time |")
        print("|---:|---|---:|---:|---:|---:|---:|---|")
        best = {True: 0, False: 0}
        for count in range(1, args.max + 1):
            for shared in (False, True):
                if best[shared] < count - 1:
                    continue  # it already fell behind with fewer
                row = trial(folder, clip, count, shared=shared, fps=args.fps, seconds=args.seconds)
                best[shared] = count if row["real_time"] else best[shared]
                print(f"| {count} | {'one, shared' if shared else f'{count}, one each'} | {row['worst_dropped']:.1%} | {row['worst_fps']:.1f} "
                      f"| {row['p50']:.0f} | {row['p99']:.0f} | {row['memory_mb']:.0f} | {'yes' if row['real_time'] else 'no'} |", flush=True)  # fmt: skip
        print(f"\nreal time: {best[False]} cameras one process each, {best[True]} in one shared process")


if __name__ == "__main__":
    main()
