"""Training the synth generator: it runs on a small folder of photos, leaves every file
it promises (checkpoint, weights, log, samples, ONNX), resumes where it stopped, says
clearly what is wrong with a bad folder, and its flip augmentation keeps each landmark
the landmark it names."""

from __future__ import annotations

import csv
import math
import shutil
from pathlib import Path

import cv2
import numpy as np
import onnxruntime
import pytest
import skimage.data
import torch

from veil import cli
from veil.engines import align, mesh, train
from veil.engines.generator import IN_CHANNELS, LATENT
from veil.engines.runtime import open_engine
from veil.errors import InputError
from veil.stream.detectors import make_detector

STEPS = ["--batch", "4", "--workers", "0", "--log-every", "1", "--sample-every", "1", "--device", "cpu"]
LOSSES = ["d", *train.WEIGHTS]


def astronaut_bgr() -> np.ndarray:
    return cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)


def write_faces(folder: Path) -> Path:
    """Eight photos of one real face: four crops around the astronaut's head at different
    scales, each also mirrored, as JPEG (one in a subfolder: the search is recursive)."""
    image = astronaut_bgr()
    (folder / "more").mkdir(parents=True)
    for i, (x, y, scale) in enumerate([(100, 0, 1.0), (110, 10, 0.8), (90, 0, 1.2), (120, 20, 0.7)]):
        head = cv2.resize(image[y : y + 280, x : x + 260], None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(folder / f"head{i}.jpg"), head)
        cv2.imwrite(str(folder / ("more" if i == 0 else ".") / f"mirror{i}.jpg"), head[:, ::-1])
    return folder


def write_photo(path: Path, name: str) -> None:
    """One of scikit-image's photos as JPEG."""
    image = getattr(skimage.data, name)()
    cv2.imwrite(str(path), image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2BGR))


def read_log(out: Path) -> list[dict]:
    with open(out / "log.csv", newline="") as file:
        return list(csv.DictReader(file))


DETECTOR = make_detector("yunet")  # what `veil train` gives training


def train_main(faces: Path, out: Path, steps: int, *extra: str) -> int:
    return train.main([str(faces), "--out", str(out), "--steps", str(steps), *STEPS, *extra], DETECTOR)


@pytest.fixture(scope="module")
def faces(tmp_path_factory) -> Path:
    return write_faces(tmp_path_factory.mktemp("train") / "faces")


@pytest.fixture(scope="module")
def trained(faces, tmp_path_factory) -> Path:
    """Two training steps of batch 4 on the eight photos."""
    out = tmp_path_factory.mktemp("run") / "out"
    assert train_main(faces, out, 2) == 0
    return out


def test_training_on_a_small_folder_writes_checkpoint_weights_log_samples_and_onnx(trained):
    for name in ("checkpoint.pt", "weights_fp16.pt", "log.csv", "index.npz", "generator.onnx"):
        assert (trained / name).is_file(), name
    index = np.load(trained / "index.npz")
    assert len(index["paths"]) == 8 and index["landmarks"].shape == (8, 5, 2)

    rows = read_log(trained)
    assert [int(row["step"]) for row in rows] == [1, 2]
    assert list(rows[0]) == ["step", "minutes", *LOSSES]
    assert all(math.isfinite(float(row[name])) for row in rows for name in ["minutes", *LOSSES])

    samples = sorted(trained.glob("samples_*.png"))
    assert [p.name for p in samples] == ["samples_000001.png", "samples_000002.png"]
    grid = cv2.imread(str(samples[-1]))
    # rows: the batch; columns: masked input, two outputs, original
    assert grid.shape == (4 * align.SIZE, 4 * align.SIZE, 3) and grid.std() > 10

    weights = torch.load(trained / "weights_fp16.pt")
    assert weights["step"] == 2
    assert all(tensor.dtype == torch.float16 for tensor in weights["generator"].values() if tensor.is_floating_point())
    assert torch.load(trained / "checkpoint.pt")["step"] == 2


def test_the_exported_generator_runs_in_onnxruntime_on_any_batch(trained):
    session = onnxruntime.InferenceSession(str(trained / "generator.onnx"), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for batch in (2, 3):
        image = rng.uniform(-1, 1, (batch, IN_CHANNELS, align.SIZE, align.SIZE)).astype(np.float32)
        latent = rng.standard_normal((batch, LATENT)).astype(np.float32)
        (face,) = session.run(None, {"image": image, "latent": latent})
        assert face.shape == (batch, 3, align.SIZE, align.SIZE)
        assert face.min() >= -1 and face.max() <= 1 and face.std() > 0.01


def test_a_second_run_resumes_from_the_checkpoint(trained, faces, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(trained, out)
    assert train_main(faces, out, 3) == 0
    assert "resumed from" in capsys.readouterr().out
    assert [int(row["step"]) for row in read_log(out)] == [1, 2, 3]
    assert torch.load(out / "checkpoint.pt")["step"] == 3
    assert (out / "samples_000003.png").is_file()


def test_init_from_carried_weights_starts_at_their_step_in_a_new_folder(trained, faces, tmp_path, capsys):
    out = tmp_path / "elsewhere"
    assert train_main(faces, out, 3, "--init", str(trained / "weights_fp16.pt")) == 0
    assert "(step 2;" in capsys.readouterr().out
    assert [int(row["step"]) for row in read_log(out)] == [3]
    state = torch.load(out / "checkpoint.pt")
    assert state["step"] == 3
    # the generator went on from the carried weights, not from a fresh start
    carried = torch.load(trained / "weights_fp16.pt")["generator"]
    name = "stem.weight"
    assert torch.allclose(state["generator"][name], carried[name].float(), atol=0.02)


def test_a_folder_without_images_is_an_input_error_naming_it(tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    (folder / "notes.txt").write_text("not a photo")
    with pytest.raises(InputError, match=f"no images.*{folder}"):
        train_main(folder, tmp_path / "out", 1)
    with pytest.raises(InputError, match="does not exist"):
        train_main(tmp_path / "missing", tmp_path / "out", 1)


def test_a_folder_of_photos_without_faces_is_an_input_error(tmp_path):
    folder = tmp_path / "things"
    folder.mkdir()
    for name in ("coins", "brick", "grass", "rocket"):
        write_photo(folder / f"{name}.jpg", name)
    with pytest.raises(InputError, match=f"no faces found in the 4 images under {folder}"):
        train_main(folder, tmp_path / "out", 1)
    assert not (tmp_path / "out" / "index.npz").exists()
    assert not (tmp_path / "out" / "checkpoint.pt").exists()


def test_a_photo_without_a_face_stays_out_of_the_training_index(faces, tmp_path):
    folder = tmp_path / "faces"
    shutil.copytree(faces, folder)
    write_photo(folder / "coffee.jpg", "coffee")
    paths, landmarks, _ = train.prepare_index(folder, tmp_path / "out", DETECTOR, log=lambda *_: None)
    assert len(paths) == len(landmarks) == 8
    assert folder / "coffee.jpg" not in paths


def test_veil_train_reports_a_bad_folder_in_one_line_with_exit_code_2(tmp_path, capsys):
    folder = tmp_path / "empty"
    folder.mkdir()
    assert cli.main(["train", str(folder), "--out", str(tmp_path / "out"), "--steps", "1"]) == cli.EXIT_BAD_INPUT
    error = capsys.readouterr().err
    assert error.startswith("veil: error: no images") and error.count("\n") == 1


class ScriptedRng:
    """Stands in for np.random.default_rng() in the dataset: flip or not, no jitter."""

    def __init__(self, flip: bool):
        self.flip = flip

    def random(self) -> float:
        return 0.0 if self.flip else 0.99

    def uniform(self, low, high, size=None):
        return np.full(size, (low + high) / 2) if size is not None else (low + high) / 2


def test_a_flipped_sample_keeps_each_landmark_the_landmark_it_names(tmp_path, yunet, monkeypatch):
    path = tmp_path / "astronaut.jpg"
    cv2.imwrite(str(path), astronaut_bgr())
    landmarks = yunet.detect(cv2.imread(str(path))).landmarks[:1]
    dataset = train.AlignedFaces([path], landmarks, augment=True)
    samples = {}
    for flip in (False, True):
        with monkeypatch.context() as patch:
            patch.setattr(np.random, "default_rng", lambda *args, flip=flip: ScriptedRng(flip))
            samples[flip] = [tensor.numpy() for tensor in dataset[0]]
    for flip, (inputs, _) in samples.items():
        assert inputs.shape == (IN_CHANNELS, align.SIZE, align.SIZE)
        peaks = np.array([np.unravel_index(heatmap.argmax(), heatmap.shape)[::-1] for heatmap in inputs[4:]])
        # right eye and right mouth corner (YuNet's order: the person's right) on the
        # image's left half, flipped or not, each at its template point
        assert peaks[0, 0] < align.SIZE / 2 < peaks[1, 0] and peaks[3, 0] < align.SIZE / 2 < peaks[4, 0], (flip, peaks)
        np.testing.assert_allclose(peaks, align.TEMPLATE, atol=5)
    # and the flip did happen: the flipped crop is the mirror image of the plain one
    # (measured: 0.03 mean difference from the mirror, 0.35 from the plain crop)
    plain, flipped = samples[False][1], samples[True][1]
    assert np.abs(flipped - plain[:, :, ::-1]).mean() < 0.1 < np.abs(flipped - plain).mean()


# --- conditioning on the face mesh (veil train --condition mesh) -----------------------------


@pytest.fixture(scope="module")
def trained_on_mesh(faces, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run_mesh") / "out"
    assert train_main(faces, out, 2, "--condition", "mesh") == 0
    return out


def test_training_on_the_mesh_indexes_each_face_s_expression_and_exports_17_channels(trained_on_mesh):
    index = np.load(trained_on_mesh / "index_mesh.npz")
    assert index["expression"].shape == (8, align.EXPRESSION_POINTS, 2) and np.isfinite(index["expression"]).all()
    # the mesh's mouth corners lie by YuNet's (two independent models on the same photos)
    eye_distance = np.linalg.norm(index["landmarks"][:, 0] - index["landmarks"][:, 1], axis=1)
    apart = np.linalg.norm(index["expression"][:, :2] - index["landmarks"][:, 3:], axis=2).max(axis=1)
    assert (apart < 0.25 * eye_distance).all(), apart / eye_distance
    session = onnxruntime.InferenceSession(str(trained_on_mesh / "generator.onnx"), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[1] == align.MESH_IN_CHANNELS


def test_a_generator_trained_on_the_mesh_is_given_each_face_s_mesh_in_a_run(trained_on_mesh, tmp_path):
    """veil run --mode synth --generator: the mesh stage runs, and the generator's 8 extra
    heatmaps peak where the face's mesh puts its mouth and eyelids."""
    from veil.stream.options import Options
    from veil.stream.stages.mesh import open_face_mesh, with_meshes

    options = Options(mode="synth", generator=str(trained_on_mesh / "generator.onnx"), secret="tests")
    synth = options.anonymiser()
    assert synth.uses_mesh and synth.wants_mesh
    image = astronaut_bgr()
    faces = with_meshes(open_face_mesh("onnxruntime", "cpu"), image, DETECTOR.detect(image))
    (face,), fallback = synth.align(image, faces)
    assert fallback == []
    inputs = synth.network_inputs([face])[0]
    assert inputs.shape == (align.MESH_IN_CHANNELS, align.SIZE, align.SIZE)
    peaks = np.array([np.unravel_index(heatmap.argmax(), heatmap.shape)[::-1] for heatmap in inputs[align.IN_CHANNELS:]])
    expected = align.transform_points(faces.mesh[0][list(mesh.EXPRESSION)], face.matrix)
    np.testing.assert_allclose(peaks, expected, atol=1.0)
    # without a mesh the face is still generated, with a neutral expression from its five points
    (bare,), _ = synth.align(image, DETECTOR.detect(image))
    np.testing.assert_allclose(bare.expression, align.neutral_expression(bare.points))
    photo, out = tmp_path / "astronaut.jpg", tmp_path / "out.png"
    cv2.imwrite(str(photo), image)
    assert cli.main(["run", str(photo), "-o", str(out), "--mode", "synth", "--generator", str(trained_on_mesh / "generator.onnx")]) == 0
    assert cv2.imread(str(out)).shape == image.shape


def test_a_flipped_sample_keeps_each_expression_point_the_point_it_names(tmp_path, monkeypatch):
    path = tmp_path / "astronaut.jpg"
    cv2.imwrite(str(path), astronaut_bgr())
    faces = DETECTOR.detect(cv2.imread(str(path)))
    points = mesh.FaceMesh(open_engine(mesh.runnable_model(), "onnxruntime", "cpu")).meshes(cv2.imread(str(path)), faces.boxes, faces.landmarks).points
    dataset = train.AlignedFaces([path], faces.landmarks[:1], augment=True, expression=points[:, list(mesh.EXPRESSION), :2])
    peaks = {}
    for flip in (False, True):
        with monkeypatch.context() as patch:
            patch.setattr(np.random, "default_rng", lambda *args, flip=flip: ScriptedRng(flip))
            inputs = dataset[0][0].numpy()
        peaks[flip] = np.array([np.unravel_index(h.argmax(), h.shape)[::-1] for h in inputs[align.IN_CHANNELS:]], float)
    for found in peaks.values():
        # the right mouth corner and the right eye's lids (the person's right) on the image's left half
        assert found[0, 0] < align.SIZE / 2 < found[1, 0] and found[4, 0] < align.SIZE / 2 < found[6, 0]
        assert found[4, 1] < found[5, 1] and found[6, 1] < found[7, 1]  # upper lids above lower ones
    mirrored = peaks[True].copy()
    mirrored[:, 0] = align.SIZE - 1 - mirrored[:, 0]
    np.testing.assert_allclose(mirrored[mesh.EXPRESSION_MIRROR], peaks[False], atol=3)
