"""The face mesh: MediaPipe's 468 points on every face to mask, for masks that follow the
face's outline (``--shape contour``)."""

from __future__ import annotations

import functools

import numpy as np

from veil.engines.mesh import FaceMesh, runnable_model
from veil.engines.runtime import open_engine
from veil.stream.elements import Stage
from veil.stream.faces import Faces
from veil.stream.frame import Frame


@functools.lru_cache(maxsize=4)
def open_face_mesh(backend: str, device: str, threads: int | None = None) -> FaceMesh:
    """The face mesh on an engine backend, one per setting in a process: it is stateless,
    and the stages of a folder's videos or a site's cameras share it."""
    return FaceMesh(open_engine(runnable_model(), backend, device, intra_op_threads=threads))


def with_meshes(mesh: FaceMesh, image: np.ndarray, faces: Faces) -> Faces:
    """``faces`` with their meshes (NaN where the model is not confident a face is there: the
    anonymiser then falls back to the ellipse). All of a frame's faces run as one batch."""
    if len(faces) == 0:
        return faces
    return faces.with_mesh(mesh.meshes(image, faces.boxes, faces.landmarks).points[:, :, :2])


class MeshStage(Stage):
    """Adds the mesh of each face the anonymiser will hide."""

    name = "mesh"

    def __init__(self, mesh: FaceMesh):
        self.mesh = mesh

    def process(self, frame: Frame) -> Frame:
        faces = frame.faces_to_mask
        if faces is None:
            return frame
        faces = with_meshes(self.mesh, frame.image, faces)
        return frame.replace(tracks=faces) if frame.tracks is not None else frame.replace(detections=faces)
