"""The `veil` command."""

from __future__ import annotations

import argparse
import signal
import sys

from stream.errors import InputError, OutputError, StageError, VeilError

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


def _parser() -> argparse.ArgumentParser:
    from stream.anonymise import MODES, SHAPES

    parser = argparse.ArgumentParser(prog="veil", description="Anonymise faces in video, live.")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="anonymise a video, photo, folder or stream")
    run.add_argument("input", help="video file or URL FFmpeg can open, a photo, or a folder")
    run.add_argument("-o", "--output", required=True, help="output file (or folder, for a folder input)")
    run.add_argument("--mode", choices=MODES, default="blur")
    run.add_argument("--detector", choices=("yunet", "centerface"), default="yunet")
    run.add_argument("--threshold", type=float, help="detector score threshold (low by default: a miss costs more than a false alarm)")
    run.add_argument("--detect-size", type=int, metavar="PX", help="scale the longest side to PX before detecting (default: the detector's own)")
    run.add_argument("--native", action="store_true", help="detect at the frame's native resolution (small faces)")
    run.add_argument("--tiles", action="store_true", help="also detect on overlapping native-resolution tiles (tiny faces; slower)")
    run.add_argument("--detect-every", type=int, default=1, metavar="N", help="run the detector on every Nth frame, track in between")
    run.add_argument("--strength", type=float, default=1.0, help="obfuscation strength relative to face size (>1 hides more)")
    run.add_argument("--margin", type=float, default=0.4, help="grow each face region by this fraction per side")
    run.add_argument("--shape", choices=SHAPES, default="ellipse")
    run.add_argument("--coast", type=float, default=1.0, metavar="S", help="keep masking a lost face for S seconds")
    run.add_argument("--coast-tentative", type=float, default=0.25, metavar="S", help="the same for a face detected only once (often a false alarm)")
    run.add_argument("--backfill", type=float, default=0.2, metavar="S", help="also mask a new face in the S seconds before its first detection (delays output by S)")
    run.add_argument("--audit", metavar="FILE", help="write one JSON line per frame with every face box")
    run.add_argument("--stage-timeout", type=float, default=30.0, metavar="S", help="fail the run if a stage takes longer than S seconds on one frame")
    run.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    demo = commands.add_parser("demo", help="make the built-in example clip and anonymise it")
    demo.add_argument("--out", default="demo", help="folder for the example, its anonymised version and a before/after image")

    commands.add_parser("doctor", help="print what this machine can use")
    return parser


def _run(args) -> None:
    from stream.job import Options, run

    detector_options = {}
    if args.threshold is not None:
        detector_options["score_threshold"] = args.threshold
    if args.native and args.detect_size:
        raise InputError("--native and --detect-size contradict each other; give one")
    if args.native:
        detector_options["input_size"] = None
    elif args.detect_size:
        detector_options["input_size"] = args.detect_size
    if args.tiles:
        detector_options["tiles"] = True
    options = Options(
        mode=args.mode, detector=args.detector, detector_options=detector_options,
        detect_every=args.detect_every, strength=args.strength, margin=args.margin, shape=args.shape,
        coast_s=args.coast, tentative_coast_s=args.coast_tentative, backfill_s=args.backfill, audit=args.audit, stage_timeout=args.stage_timeout, progress=not args.quiet,
    )  # fmt: skip
    run(args.input, args.output, options)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # SIGTERM (service managers, `kill`) stops a run the way Ctrl-C does: cleanly.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        if args.command == "run":
            _run(args)
        elif args.command == "demo":
            from stream.demo import run_demo

            run_demo(args.out)
        elif args.command == "doctor":
            from stream.doctor import report

            print(report())
    except (InputError, OutputError) as error:
        print(f"veil: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (StageError, VeilError) as error:
        print(f"veil: failed: {error}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("veil: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


if __name__ == "__main__":
    sys.exit(main())
