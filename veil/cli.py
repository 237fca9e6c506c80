"""The `veil` command."""

from __future__ import annotations

import argparse
import signal
import sys

from veil.errors import InputError, MissingDependency, OutputError, StageError, VeilError

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    """argparse, with every usage error in the one line and exit code the README promises."""

    def error(self, message: str):
        self.exit(EXIT_BAD_INPUT, f"veil: error: {message} (see {self.prog} --help)\n")


def _number(limit: str):
    """An argparse type: the flag's value, checked against ``veil.stream.limits.LIMITS[limit]``."""
    from veil.stream.limits import LIMITS

    rule = LIMITS[limit]

    def parse(text: str):
        try:
            return rule.check(float(text))
        except ValueError:  # not a number, or out of range (InputError is a ValueError)
            raise argparse.ArgumentTypeError(f"{rule.rule()}, got '{text}'") from None

    parse.__name__ = rule.what  # argparse names the type in some messages
    return parse


def _size(text: str) -> str:
    """An argparse type: a WIDTHxHEIGHT the webcam can be asked for."""
    from veil.stream.io.vcam import parse_size

    try:
        parse_size(text)
    except InputError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def _parser() -> argparse.ArgumentParser:
    from veil import __version__
    from veil.engines.runtime import BACKENDS, DEVICES
    from veil.stream.anonymisers import MODES
    from veil.stream.anonymisers.classic import SHAPES
    from veil.stream.anonymisers.propagate import KEYFRAME_EVERY
    from veil.stream.detectors import DETECTOR_NAMES
    from veil.stream.options import ENCODER_PRESETS

    parser = _Parser(prog="veil", description="Anonymise faces in video, live.")
    parser.add_argument("--version", action="version", version=f"veil {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    anonymise = _Parser(add_help=False)
    anonymise.add_argument("--mode", choices=MODES, default="blur", help="synth: a generated face of nobody, with the same pose and expression")
    anonymise.add_argument("--keyframe-every", type=_number("keyframe_every"), default=KEYFRAME_EVERY, metavar="N",
                           help="synth: generate each face at most N frames apart and carry it along the face's motion in between (1: every frame)")
    anonymise.add_argument("--generator", metavar="ONNX", help="synth: a generator that veil train wrote (default: the shipped weights)")
    anonymise.add_argument("--secret", help="synth: key that picks each track's synthetic identity (default: random per run; set it to repeat a run)")
    anonymise.add_argument("--backend", choices=BACKENDS, default="onnxruntime", help="what runs the detector and generator models")
    anonymise.add_argument("--device", choices=DEVICES, default="cpu", help="where they run (cuda needs a GPU build of the backend)")
    anonymise.add_argument("--detector", choices=DETECTOR_NAMES, default="yunet",
                           help="mediapipe: BlazeFace full range; mediapipe-short: its short-range model, for faces within 2 m (webcams); "
                                "thorough: see --thorough")
    anonymise.add_argument("--thorough", action="store_true",
                           help="for datasets and photo sets: YuNet and CenterFace, on tiles and mirrored, at lower thresholds (several times slower)")
    anonymise.add_argument("--threshold", type=_number("threshold"), help="detector score threshold (low by default: a miss costs more than a false alarm)")
    anonymise.add_argument("--detect-size", type=_number("detect_size"), metavar="PX", help="scale the longest side to PX before detecting (default: the detector's own)")
    anonymise.add_argument("--native", action="store_true", help="detect at the frame's native resolution (small faces)")
    anonymise.add_argument("--tiles", action="store_true", help="also detect on overlapping native-resolution tiles (tiny faces; slower)")
    anonymise.add_argument("--detect-every", type=_number("detect_every"), default=1, metavar="N", help="run the detector on every Nth frame, track in between")
    anonymise.add_argument("--strength", type=_number("strength"), default=1.0, help="obfuscation strength relative to face size (>1 hides more)")
    anonymise.add_argument("--margin", type=_number("margin"), default=0.4, help="grow each face region by this fraction per side")
    anonymise.add_argument("--shape", choices=SHAPES, default="ellipse",
                           help="contour: follow each face's outline from MediaPipe's face mesh (the ellipse where the mesh is unsure)")
    anonymise.add_argument("--coast", type=_number("coast_s"), default=1.0, metavar="S", help="keep masking a lost face for S seconds")
    anonymise.add_argument("--coast-tentative", type=_number("tentative_coast_s"), default=0.25, metavar="S", help="the same for a face detected only once (often a false alarm)")
    anonymise.add_argument("--stage-timeout", type=_number("stage_timeout"), default=30.0, metavar="S", help="fail the run if a stage takes longer than S seconds on one frame")

    select = _Parser(add_help=False)
    select.add_argument("--keep", action="append", metavar="REF", help="leave these people visible: a photo, or a folder of one person's photos, "
                        "or a folder of such folders; repeat for more. A face is shown only after it matched confidently")
    select.add_argument("--only", action="append", metavar="REF", help="hide only these people (as --keep names them); everyone else stays "
                        "visible, and a person the recogniser misses is shown")
    select.add_argument("--match-threshold", type=_number("match_threshold"), metavar="COS", help="SFace cosine similarity a match needs (default: 0.45 for --keep, 0.30 for --only)")

    live = _Parser(add_help=False)
    live.add_argument("--target-delay", type=_number("target_delay_ms"), metavar="MS", help="live: output each frame MS after its capture, a constant delay that audio can be matched to")
    live.add_argument("--reconnect", type=_number("reconnect_s"), default=30.0, metavar="S", help="live: keep reconnecting a lost source or output for S seconds before giving up")
    live.add_argument("-v", "--verbose", action="store_true", help="live: print latency and drops every few seconds")

    run = commands.add_parser("run", parents=[anonymise, select, live], help="anonymise a video, photo, folder or stream")
    run.add_argument("input", nargs="?", help="video file, stream URL (rtsp://, rtmp://, ...), camera (/dev/video0), photo, or folder")
    run.add_argument("-o", "--output", help="output file or folder, rtmp://host/app/key, or webrtc://host:port")
    run.add_argument("--pipeline", metavar="FILE", help="the graph as a TOML file (its source and sink unless INPUT and -o are given) instead of the flags")
    run.add_argument("--print-pipeline", action="store_true", help="print the pipeline these flags make, as a launch line, and exit")
    run.add_argument("--live", action="store_true", help="play a file input in real time, as a camera would (implied by stream outputs)")
    run.add_argument("--backfill", type=_number("backfill_s"), default=0.2, metavar="S", help="also mask a new face in the S seconds before its first detection (files only; delays output by S)")
    run.add_argument("--preset", choices=ENCODER_PRESETS, help="x264's speed for H.264 files (default veryfast): superfast ran 10-18%% faster at "
                     "720p for a file 1.5-3.6 times larger at the same quality (benchmarks/ENCODER.md)")
    run.add_argument("--audit", metavar="FILE", help="write one JSON line per frame with every face box")
    run.add_argument("--recovery-key", action="append", metavar="PUB", help="also seal the original pixels of every masked region for this public key (veil keygen), in OUT.veilrec; repeat for several recipients")
    run.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    run.add_argument("--ray", metavar="ADDRESS", help="a folder: spread its files over the Ray cluster at ADDRESS (host:port; needs veil[cluster])")

    launch = commands.add_parser("launch", help='run a pipeline written as a launch line: "IN ! yunet ! track ! blur ! OUT"')
    launch.add_argument("line", help="source ! element prop=value ! ... ! sink (see README: the pipeline)")
    launch.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    launch.add_argument("-v", "--verbose", action="store_true", help="live: print latency and drops every few seconds")

    serve = commands.add_parser("serve", parents=[anonymise, select, live], help="web page: your browser camera in, anonymised video back over WebRTC")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 for other machines; browsers need https for cameras off localhost)")
    serve.add_argument("--port", type=_number("port"), default=8080)

    camera = commands.add_parser("camera", parents=[anonymise, select, live], help="webcam in, anonymised virtual camera out (for Zoom, Meet, OBS)")
    camera.add_argument("--webcam", default="/dev/video0", help="the webcam (/dev/videoN; video=NAME on Windows; an index on macOS)")
    camera.add_argument("--output-device", help="the virtual camera (default: the first one pyvirtualcam finds)")
    camera.add_argument("--size", type=_size, metavar="WxH", help="ask the webcam for this size, e.g. 1280x720")
    camera.add_argument("--fps", type=_number("camera_fps"), help="ask the webcam for this frame rate")

    cameras = commands.add_parser("cameras", help="every camera of a site file: RTSP in, restreams, recordings, a status page")
    cameras.add_argument("site", help="the site file (TOML: the pipeline, then a [[camera]] table per camera; see docs/cameras.md)")
    cameras.add_argument("--status", metavar="HOST:PORT", help="serve the status page, JSON and /metrics here (default: the site file's, else 127.0.0.1:8090)")
    cameras.add_argument("--ray", metavar="ADDRESS", help="place the cameras on the Ray cluster at ADDRESS (host:port; needs veil[cluster])")

    keygen = commands.add_parser("keygen", help="make a recovery key pair: PREFIX.pub for the machines that anonymise, PREFIX.key for the controller")
    keygen.add_argument("-o", "--output", required=True, metavar="PREFIX", help="writes PREFIX.pub and PREFIX.key (mode 0600)")
    keygen.add_argument("--passphrase", action="store_true", help="encrypt the private key under a passphrase (asked for, or $VEIL_KEY_PASSPHRASE)")

    recover = commands.add_parser("recover", help="restore chosen people's faces from a video's sealed originals (needs the private key)")
    recover.add_argument("video", help="the anonymised video (its sidecar VIDEO.veilrec beside it)")
    recover.add_argument("--key", metavar="KEY", help="the private key (veil keygen's PREFIX.key)")
    recover.add_argument("-o", "--output", help="the restored video (.mkv, lossless; any video with --lossy); with --list: a contact sheet image")
    recover.add_argument("--track", type=int, action="append", metavar="ID", help="a track to restore (repeat; --list or the audit log gives the ids)")
    recover.add_argument("--all-tracks", action="store_true", help="restore every track")
    recover.add_argument("--from", dest="start", type=float, metavar="S", help="restore from this time (seconds)")
    recover.add_argument("--to", dest="end", type=float, metavar="S", help="restore up to this time (seconds)")
    recover.add_argument("--lossy", action="store_true", help="write H.264 for viewing instead of lossless FFV1")
    recover.add_argument("--list", action="store_true", help="list the tracks (first and last time, frames); -o writes a sheet of their original faces")
    recover.add_argument("--sidecar", metavar="FILE", help="the sidecar, if not VIDEO.veilrec")
    recover.add_argument("--partial", action="store_true", help="accept a sidecar whose run was cut off, up to its last complete chunk")
    recover.add_argument("--verify-log", action="store_true", help="check the sidecar's access log (its hash chain) and exit")

    inspect = commands.add_parser("inspect", help="what a file says about itself: anonymised by Veil, mode, generated faces, sidecar")
    inspect.add_argument("file")

    demo = commands.add_parser("demo", help="make the built-in example clip and anonymise it")
    demo.add_argument("--out", default="demo", help="folder for the example, its anonymised version and a before/after image")

    commands.add_parser("doctor", help="print what this machine can use")

    # Listed for the help text; main() hands `veil train ...` to veil.engines.train whole.
    commands.add_parser("train", help="train the synth face generator on a folder of face photos (veil train --help)")

    engines = commands.add_parser("engines", help="list the engine backends (TensorRT, ONNX Runtime, PyTorch) usable here")
    engine_commands = engines.add_subparsers(dest="engines_command")
    build = engine_commands.add_parser("build", help="build (TensorRT) or load the generator and detector engines and run each once")
    build.add_argument("--backend", choices=("tensorrt", "onnxruntime", "torch"), default="onnxruntime")
    build.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda for tensorrt, else cpu")
    build.add_argument("--generator", metavar="ONNX", help="a generator ONNX file (veil train writes one); default: the shipped weights")
    build.add_argument("--cache", metavar="DIR", help="where TensorRT engines are kept (default: ~/.cache/veil/engines)")
    return parser


def _options(args):
    from veil.stream.options import Options

    detector_options = {}
    if args.threshold is not None:
        detector_options["score_threshold"] = args.threshold
    if args.thorough and args.detector not in ("yunet", "thorough"):
        raise InputError(f"--thorough is a detector of its own; it does not go with --detector {args.detector}")
    if args.native and args.detect_size:
        raise InputError("--native and --detect-size contradict each other; give one")
    if args.native:
        detector_options["input_size"] = None
    elif args.detect_size is not None:
        detector_options["input_size"] = args.detect_size
    if args.tiles:
        detector_options["tiles"] = True
    detector_options.update(backend=args.backend, device=args.device)
    return Options(
        mode=args.mode, keyframe_every=args.keyframe_every, secret=args.secret, generator=args.generator, backend=args.backend, device=args.device,
        detector="thorough" if args.thorough else args.detector, detector_options=detector_options,
        detect_every=args.detect_every, strength=args.strength, margin=args.margin, shape=args.shape,
        coast_s=args.coast, tentative_coast_s=args.coast_tentative, stage_timeout=args.stage_timeout,
        target_delay_s=None if args.target_delay is None else args.target_delay / 1000,
        reconnect_s=args.reconnect, verbose=args.verbose,
        backfill_s=getattr(args, "backfill", 0.0), audit=getattr(args, "audit", None), preset=getattr(args, "preset", None),
        progress=not getattr(args, "quiet", False), live=getattr(args, "live", False),
    )  # fmt: skip


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _train(argv: list[str]) -> int:
    """`veil train`: the generator learns on faces found and aligned by the pipeline's own detector."""
    try:
        from veil.engines.train import main as train
    except ModuleNotFoundError as error:
        print(f"veil: error: training needs {error.name}: pip install 'veil[train]'", file=sys.stderr)
        return EXIT_BAD_INPUT
    from veil.stream.detectors import make_detector

    try:
        return train(argv, make_detector("yunet"), prog="veil train")
    except InputError as error:
        print(f"veil: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT


def _description(args, parser):
    """The pipeline of ``veil run``: the flags' (every flag is a property of an element), or
    the file's, with INPUT and -o as its source and sink where given."""
    from veil.stream.description import Description

    flags = Description.of(_options(args), args.input, args.output)
    if args.pipeline is None:
        if args.input is None or args.output is None:
            raise InputError("veil run needs an INPUT and -o OUTPUT (or --pipeline FILE)")
        return flags
    defaults = Description.of(_options(parser.parse_args(["run"])))
    if Description(flags.elements, source_properties=flags.source_properties, sink_properties=flags.sink_properties).line() != defaults.line():
        raise InputError(f"--pipeline {args.pipeline} is the whole graph: set the elements' properties there, not as flags")
    description = Description.load(args.pipeline)
    description.source = args.input or description.source
    description.sink = args.output or description.sink
    if description.source is None or description.sink is None:
        raise InputError(f"{args.pipeline} names no {'source' if description.source is None else 'sink'}; give it there or on the command line")
    return description


def _run(description, args) -> None:
    from veil.stream.jobs import run

    extra = {"recovery_keys": tuple(args.recovery_key)} if getattr(args, "recovery_key", None) else {}
    extra.update(_selection(args))
    if getattr(args, "ray", None):
        from veil.stream.cluster import run_folder_on_ray

        return run_folder_on_ray(description.source, description.sink, description.options(progress=not args.quiet, **extra), args.ray)
    run(description.source, description.sink, description.options(progress=not args.quiet, verbose=args.verbose, **extra))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["train"]:
        return _train(argv[1:])
    parser = _parser()
    args = parser.parse_args(argv)
    import cv2

    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)  # Veil says what went wrong, in one line
    # Live runs and servers log as they go; a pipe or a service's journal must see each line.
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)
    # SIGTERM (service managers, `kill`) stops a run the way Ctrl-C does: cleanly.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        if args.command == "run":
            description = _description(args, parser)
            if args.print_pipeline:
                print(description.line())
            else:
                _run(description, args)
        elif args.command == "launch":
            from veil.stream.description import Description

            description = Description.parse(args.line)
            if description.source is None or description.sink is None:
                raise InputError("a launch line starts with its source and ends with its sink: IN ! yunet ! track ! blur ! OUT")
            _run(description, args)
        elif args.command == "serve":
            from veil.commands.serve import serve

            serve(args.host, args.port, _settings(args))
        elif args.command == "camera":
            from veil.commands.camera import run_camera

            run_camera(args.webcam, args.output_device, _settings(args), size=args.size, fps=args.fps)
        elif args.command == "cameras":
            from veil.commands.cameras import run_cameras

            run_cameras(args.site, status=args.status, ray=args.ray)
        elif args.command == "keygen":
            from veil.commands.recovery import keygen

            keygen(args.output, passphrase=args.passphrase)
        elif args.command == "recover":
            from veil.commands.recovery import run_recover

            run_recover(args)
        elif args.command == "inspect":
            from veil.commands.recovery import inspect

            print(inspect(args.file))
        elif args.command == "demo":
            from veil.commands.demo import run_demo

            run_demo(args.out)
        elif args.command == "doctor":
            from veil.commands.doctor import report

            print(report())
        elif args.command == "engines":
            from veil.commands.doctor import build_engines, engines_report

            if args.engines_command == "build":
                device = args.device or ("cuda" if args.backend == "tensorrt" else "cpu")
                build_engines(args.backend, device, args.generator, args.cache)
            else:
                print(engines_report())
    except (InputError, OutputError, MissingDependency) as error:
        print(f"veil: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (StageError, VeilError) as error:
        print(f"veil: failed: {error}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("veil: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


def _settings(args):
    """A live command's settings, through the same description a run's go through."""
    from veil.stream.description import Description

    return Description.of(_options(args)).options(verbose=args.verbose, **_selection(args))


def _selection(args) -> dict:
    """--keep, --only and --match-threshold, as Options takes them."""
    chosen = {name: tuple(getattr(args, name)) for name in ("keep", "only") if getattr(args, name, None)}
    if getattr(args, "match_threshold", None) is not None:
        chosen["match_threshold"] = args.match_threshold
    return chosen


if __name__ == "__main__":
    sys.exit(main())
