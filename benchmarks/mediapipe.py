"""MediaPipe's models in Veil: BlazeFace against YuNet, what the face mesh costs and how well it
lands, what --shape contour hides and costs, and how far synth's faces follow the person's
expression today.

    python -m benchmarks.mediapipe [--out benchmarks/MEDIAPIPE.md] [--parts detectors mesh contour expression]

1. Detectors, on ../shared/data/annotated/dlib_faces (testing.xml and training.xml: 9 photos,
   43 faces): recall (a box with IoU >= 0.4 on each annotated face, as the tests count),
   boxes that match no annotated face (some are real faces nobody annotated), boxes on
   dogs.jpg, ms a photo. Then at 1280x720: talking_head_d13 pillarboxed, and crowd_arcade
   scaled down: ms a frame (median), boxes a frame, and of the faces the privacy gate (dlib
   HOG + CenterFace, independent of all three) finds on every 5th frame, how many the detector
   finds (IoU >= 0.3).
2. The mesh: ms a face with 1 and 4 faces a frame (one batch), and on the 43 annotated faces
   the mean distance of eight points (eye corners, nose tip, mouth corners, chin) from the
   annotation's, over the inter-ocular distance, from YuNet's box and from BlazeFace's.
3. --shape contour against the ellipse, blur and pixelate: glint24 re-identification by dlib
   (veil.testing.privacy.reidentification: rank-1 and verification), the share of pixels
   changed, and on shared clips the faces the gate finds again (every 4th frame) and the
   share of faces that fell back to the ellipse; and fps of both, end to end, in this process.
4. Expression: synth with its defaults (keyframes every 16 frames, DIS flow between) on the
   talking heads, and the same with the warp driven by the mesh instead (an experiment, not
   in Veil: ``MeshDrivenSynth``): dlib's 68 points on input and output in the input's face
   box; the five-point error over the inter-ocular distance (as DEID.md), and how the
   output's mouth opening (inner lips 62/66) and eye opening follow the input's (Pearson
   correlation over the clip's frames).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from veil.engines import align
from veil.stream.anonymisers.classic import Anonymiser
from veil.stream.anonymisers.propagate import FLOW_MAX, PropagatingSynth
from veil.stream.detectors import make_detector
from veil.stream.faces import iou_matrix
from veil.stream.jobs import run_video
from veil.stream.options import Options
from veil.stream.pipeline import file_detector
from veil.stream.stages.mesh import open_face_mesh, with_meshes
from veil.stream.tracker import Tracker
from veil.testing.annotated import annotated_photos
from veil.testing.privacy import IndependentDetector, Recogniser, decoded_frames, dlib_model, load_identities, reidentification, video_leaks

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
PHOTOS = DATA / "annotated" / "dlib_faces"
DETECTORS = ("yunet", "centerface", "mediapipe", "mediapipe-short")
# dlib 68-point indices and the mesh points that name the same place
MESH_OF_DLIB = {36: 33, 39: 133, 42: 362, 45: 263, 30: 1, 48: 61, 54: 291, 8: 152}
CONTOUR_CLIPS = ("talking_head_d13.mp4", "stage_audience_360p.mp4", "crowd_arcade_1080p.mp4")
EXPRESSION_CLIPS = ("talking_head_d3.mp4", "talking_head_d10.mp4", "talking_head_d13.mp4")


def ms(run, repeats: int) -> float:
    """Median ms of ``run()`` over ``repeats`` calls, after one untimed."""
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def annotated() -> list:
    return annotated_photos(PHOTOS, "testing_with_face_landmarks.xml") + annotated_photos(PHOTOS, "training_with_face_landmarks.xml")


def frames_720p(name: str, count: int) -> list[np.ndarray]:
    """The first ``count`` frames of a shared clip as 1280x720: scaled to fit, black bars beside."""
    out = []
    for _, image in decoded_frames(DATA / "video" / name):
        height, width = image.shape[:2]
        scale = min(1280 / width, 720 / height)
        size = (round(width * scale), round(height * scale))
        small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        left, top = (1280 - size[0]) // 2, (720 - size[1]) // 2
        out.append(cv2.copyMakeBorder(small, top, 720 - size[1] - top, left, 1280 - size[0] - left, cv2.BORDER_CONSTANT))
        if len(out) == count:
            break
    return out


def detectors_part(gate: IndependentDetector) -> list[str]:
    photos = annotated()
    dogs = cv2.imread(str(PHOTOS / "dogs.jpg"))
    lines = ["## 1. Detectors", "",
             f"### Annotated photos ({len(photos)} photos, {sum(len(b) for _, b, _ in photos)} faces)", "",
             "| detector | recall | boxes matching no annotated face | boxes on dogs.jpg | ms a photo |", "|---|---:|---:|---:|---:|"]
    settings = [(name, {}) for name in DETECTORS] + [("mediapipe", {"tiles": True})]
    for name, options in settings:
        detector = make_detector(name, **options)
        found = total = extra = 0
        for image, truth, _ in photos:
            faces = detector.detect(image)
            total += len(truth)
            if len(faces):
                overlap = iou_matrix(truth, faces.boxes)
                found += int((overlap.max(axis=1) >= 0.4).sum())
                extra += int((overlap.max(axis=0) < 0.4).sum())
        cost = statistics.mean(ms(lambda image=image: detector.detect(image), 3) for image, _, _ in photos)
        label = name + "".join(f", {key}" for key in options)
        lines.append(f"| {label} | {found}/{total} | {extra} | {len(detector.detect(dogs))} | {cost:.1f} |")
    lines += ["", "### 1280x720 frames", "",
              "| clip | detector | ms a frame, median | boxes a frame | gate's faces found (every 5th frame) |", "|---|---|---:|---:|---:|"]
    for clip, count in (("talking_head_d13.mp4", 60), ("crowd_arcade_1080p.mp4", 60)):
        frames = frames_720p(clip, count)
        judged = [(image, gate.detect(image)) for image in frames[::5]]
        for name in ("yunet", "mediapipe", "mediapipe-short"):
            detector = make_detector(name)
            found = [detector.detect(image) for image in frames]
            cost = statistics.median(ms(lambda image=image: detector.detect(image), 1) for image in frames[::3])
            hits = total = 0
            for image, truth in judged:
                faces = detector.detect(image)
                total += len(truth)
                hits += int((iou_matrix(truth, faces.boxes).max(axis=1) >= 0.3).sum()) if len(faces) and len(truth) else 0
            boxes = statistics.mean(len(faces) for faces in found)
            lines.append(f"| {clip.removesuffix('.mp4')} (720p) | {name} | {cost:.1f} | {boxes:.2f} | {hits}/{total} |")
    return lines + [""]


def mesh_part() -> list[str]:
    face_mesh = open_face_mesh("onnxruntime", "cpu")
    yunet, blazeface = make_detector("yunet"), make_detector("mediapipe")
    lines = ["## 2. The face mesh", "", "| faces a frame | ms a face (one batch) |", "|---:|---:|"]
    image, _, _ = annotated()[0]
    faces = yunet.detect(image)[:1]
    for count in (1, 4):
        boxes, landmarks = np.repeat(faces.boxes, count, 0), np.repeat(faces.landmarks, count, 0)
        lines.append(f"| {count} | {ms(lambda: face_mesh.meshes(image, boxes, landmarks), 20) / count:.1f} |")
    lines += ["", "Eight points from dlib's annotation (its 68-point predictor's output, kept in the XML), over the "
              "inter-ocular distance (eye centres of the annotation), on the annotated faces each detector finds:", "",
              "| boxes from | faces | mean | median | no confident mesh |", "|---|---:|---:|---:|---:|"]
    for label, detector in (("yunet", yunet), ("mediapipe", blazeface)):
        errors, unsure = [], 0
        for image, truth, points in annotated():
            found = detector.detect(image)
            if not len(found):
                continue
            overlap = iou_matrix(truth, found.boxes)
            for i in np.flatnonzero(overlap.max(axis=1) >= 0.4):
                j = int(overlap[i].argmax())
                meshed = face_mesh.meshes(image, found.boxes[j:j + 1], found.landmarks[j:j + 1]).points[0, :, :2]
                if not np.isfinite(meshed).all():
                    unsure += 1
                    continue
                eyes = np.linalg.norm(points[i, 36:42].mean(axis=0) - points[i, 42:48].mean(axis=0))
                distance = np.linalg.norm(meshed[list(MESH_OF_DLIB.values())] - points[i, list(MESH_OF_DLIB)], axis=1)
                errors.append(float(distance.mean() / eyes))
        lines.append(f"| {label} | {len(errors) + unsure} | {np.mean(errors):.3f} | {np.median(errors):.3f} | {unsure} |")
    return lines + [""]


def contour_part(gate: IndependentDetector, seconds: float) -> list[str]:
    yunet, face_mesh, recogniser = make_detector("yunet"), open_face_mesh("onnxruntime", "cpu"), Recogniser()
    people = load_identities(DATA / "identities" / "glint24")
    lines = ["## 3. --shape contour", "", "### glint24 (216 probes, 24 people; chance 4.2 %): dlib re-identification", "",
             "| mode | shape | rank-1 | verification | pixels changed, share of the ellipse's |", "|---|---|---:|---:|---:|"]
    changed_by = {}
    for mode in ("blur", "pixelate"):
        for shape in ("ellipse", "contour"):
            anonymiser = Anonymiser(mode=mode, shape=shape)
            changed = []

            def anonymise(image, anonymiser=anonymiser, changed=changed):
                faces = yunet.detect(image)
                out = anonymiser.apply(image, with_meshes(face_mesh, image, faces) if anonymiser.wants_mesh else faces)
                changed.append(int((out != image).any(axis=2).sum()))
                return out

            rates = reidentification(people, anonymise, recogniser)
            changed_by[(mode, shape)] = sum(changed)
            share = changed_by[(mode, shape)] / changed_by[(mode, "ellipse")]
            lines.append(f"| {mode} | {shape} | {rates['rank1']:.1%} | {rates['match']:.1%} | {share:.2f} |")
    lines += ["", f"### Shared clips (first {seconds:g} s), blur", "",
              "| clip | shape | gate's faces found again (every 4th frame) | faces on the ellipse instead | fps end to end |",
              "|---|---|---:|---:|---:|"]
    with tempfile.TemporaryDirectory() as folder:
        for name in CONTOUR_CLIPS:
            clip = cut(DATA / "video" / name, Path(folder) / name, seconds)
            for shape in ("ellipse", "contour"):
                out = Path(folder) / f"{shape}_{name}"
                options = Options(progress=False, shape=shape)
                start = time.perf_counter()
                run_video(clip, out, options, file_detector(options), log=lambda *_: None)
                fps = frame_count(out) / (time.perf_counter() - start)
                found, leaked, _ = video_leaks(clip, out, gate, every=4)
                fallback = ellipse_share(clip, yunet, face_mesh) if shape == "contour" else "–"
                lines.append(f"| {name.removesuffix('.mp4')} | {shape} | {leaked}/{found} | {fallback} | {fps:.1f} |")
    return lines + [""]


def cut(clip: Path, out: Path, seconds: float) -> Path:
    """The first ``seconds`` of ``clip``, re-encoded near losslessly."""
    import av

    with av.open(str(clip)) as source, av.open(str(out), "w") as sink:
        rate = source.streams.video[0].average_rate
        stream = sink.add_stream("libx264", rate=rate)
        stream.options = {"crf": "12"}
        for index, frame in enumerate(source.decode(video=0)):
            if index >= seconds * rate:
                break
            image = frame.to_ndarray(format="bgr24")
            if index == 0:
                stream.height, stream.width = image.shape[:2]
            sink.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")))
        sink.mux(stream.encode(None))
    return out


def frame_count(path: Path) -> int:
    return sum(1 for _ in decoded_frames(path))


def ellipse_share(clip: Path, detector, face_mesh) -> str:
    """Of the faces the detector finds on every 4th frame, how many a contour anonymiser
    masks with the ellipse instead (no confident mesh, or one that disagrees with the box)."""
    contour, total, fallen = Anonymiser(shape="contour"), 0, 0
    for _, image in decoded_frames(clip, every=4):
        faces = with_meshes(face_mesh, image, detector.detect(image))
        total += len(faces)
        fallen += sum(contour.outline(box, points) is None for box, points in zip(faces.boxes, faces.mesh))
    return f"{fallen}/{total}"


GRID_STEP = 4  # crop pixels between the nodes the mesh-driven flow is computed on


def mesh_flow(now: np.ndarray, key: np.ndarray, sigma: float = 4.0, prior: float = 0.05) -> np.ndarray:
    """The experiment's motion model: a flow over the canonical crop that takes each mesh
    point where it is now to where it was on the keyframe (gaussian-weighted, fading to no
    motion away from the mesh), clipped to FLOW_MAX as DIS's is."""
    nodes = np.stack(np.mgrid[0:align.SIZE:GRID_STEP, 0:align.SIZE:GRID_STEP][::-1], -1).reshape(-1, 2) + GRID_STEP / 2
    weights = np.exp(-((nodes[:, None, :] - now[None]) ** 2).sum(-1) / (2 * sigma**2))
    flow = (weights @ (key - now)) / (prior + weights.sum(1))[:, None]
    side = align.SIZE // GRID_STEP
    flow = cv2.resize(flow.reshape(side, side, 2).astype(np.float32), (align.SIZE, align.SIZE), interpolation=cv2.INTER_LINEAR)
    length = np.hypot(flow[..., 0], flow[..., 1])
    flow[length > FLOW_MAX] *= (FLOW_MAX / length[length > FLOW_MAX])[:, None]
    return flow


class MeshDrivenSynth(PropagatingSynth):
    """PropagatingSynth whose flow between the keyframe and now comes from the two frames'
    meshes instead of DIS (DIS where either has no confident mesh)."""

    def __init__(self, synth, **options):
        super().__init__(synth, **options)
        self._meshes: dict[int, np.ndarray] = {}  # id of an aligned face's grey crop (a keyframe keeps it) -> its mesh in crop pixels
        self._align, synth.align = synth.align, self._align_keeping_meshes

    def _align_keeping_meshes(self, image, faces):
        aligned, fallback = self._align(image, faces)
        for face in aligned:
            self._meshes[id(face.grey)] = align.transform_points(faces.mesh[face.index], face.matrix)
        return aligned, fallback

    def _flow(self, grey, reference):
        now, key = self._meshes.get(id(grey)), self._meshes.get(id(reference))
        if now is None or key is None or not (np.isfinite(now).all() and np.isfinite(key).all()):
            return super()._flow(grey, reference)
        return mesh_flow(now, key)


def expression_part(seconds: float) -> list[str]:
    import dlib

    shape68 = dlib.shape_predictor(dlib_model("shape_predictor_68_face_landmarks.dat"))
    hog = dlib.get_frontal_face_detector()
    detector, face_mesh = make_detector("yunet"), open_face_mesh("onnxruntime", "cpu")
    lines = ["## 4. Expression, synth with its defaults, and with a mesh-driven warp", "",
             "YuNet, the tracker and the mesh on every frame; the anonymiser's apply on its own (the pipeline's "
             "stages, in one thread). dlib's 68 points on input and output, in dlib HOG's box on the input "
             "(frames where it finds exactly one face).", "",
             "| clip | motion between keyframes | frames judged | 5-point error / IOD, mean | median | mouth opening: correlation | "
             "input range | output range | eye opening: correlation | apply ms a frame |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    with tempfile.TemporaryDirectory() as folder:
        for name in EXPRESSION_CLIPS:
            clip = cut(DATA / "video" / name, Path(folder) / name, seconds)
            for label, kind in (("DIS flow (today)", PropagatingSynth), ("mesh-driven (experiment)", MeshDrivenSynth)):
                anonymiser = kind(Options(mode="synth", secret="benchmark").anonymiser())
                tracker, errors, mouths, eyes, spent, frames = Tracker(fps=25), [], [], [], 0.0, 0
                for _, before in decoded_frames(clip):
                    faces = with_meshes(face_mesh, before, tracker.update(detector.detect(before), before.shape[1], before.shape[0]))
                    started = time.perf_counter()
                    after = anonymiser.apply(before, faces)
                    spent, frames = spent + time.perf_counter() - started, frames + 1
                    found = hog(cv2.cvtColor(before, cv2.COLOR_BGR2RGB), 0)
                    if len(found) != 1:
                        continue
                    pair = [np.array([[p.x, p.y] for p in shape68(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), found[0]).parts()], float)
                            for image in (before, after)]
                    iod = np.linalg.norm(pair[0][36:42].mean(axis=0) - pair[0][42:48].mean(axis=0))
                    five = [np.stack([p[36:42].mean(axis=0), p[42:48].mean(axis=0), p[30], p[48], p[54]]) for p in pair]
                    errors.append(np.linalg.norm(five[0] - five[1], axis=1).mean() / iod)
                    mouths.append([np.linalg.norm(p[62] - p[66]) / iod for p in pair])
                    eyes.append([(np.linalg.norm(p[37] - p[41]) + np.linalg.norm(p[44] - p[46])) / (2 * iod) for p in pair])
                mouths, eyes = np.array(mouths), np.array(eyes)
                lines.append(f"| {name.removesuffix('.mp4')} | {label} | {len(errors)} | {np.mean(errors):.3f} | {np.median(errors):.3f} | "
                             f"{np.corrcoef(mouths.T)[0, 1]:.2f} | {np.ptp(mouths[:, 0]):.3f} | {np.ptp(mouths[:, 1]):.3f} | "
                             f"{np.corrcoef(eyes.T)[0, 1]:.2f} | {spent / frames * 1000:.1f} |")
    return lines + [""]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("MEDIAPIPE.md"))
    parser.add_argument("--parts", nargs="+", default=["detectors", "mesh", "contour", "expression"])
    parser.add_argument("--seconds", type=float, default=4.0, help="of each clip in parts 3 and 4")
    args = parser.parse_args(argv)
    if not DATA.is_dir():
        parser.error(f"needs ../shared/data at {DATA}")
    gate = IndependentDetector()
    lines = ["# MediaPipe in Veil: measured", "",
             f"`python -m benchmarks.mediapipe --parts {' '.join(args.parts)} --seconds {args.seconds:g}`, "
             f"{datetime.date.today()}, {platform.processor() or platform.machine()}, {len(os.sched_getaffinity(0))} cores. "
             "Written by the script; the summary at the end is by hand.", ""]
    parts = {"detectors": lambda: detectors_part(gate), "mesh": mesh_part,
             "contour": lambda: contour_part(gate, args.seconds), "expression": lambda: expression_part(args.seconds)}
    for part in args.parts:
        started = time.perf_counter()
        lines += parts[part]()
        print(f"{part}: {time.perf_counter() - started:.0f} s", flush=True)
        args.out.write_text("\n".join(lines) + "\n")  # after each part: a later part's failure keeps the earlier
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
