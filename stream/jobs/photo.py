"""A photo: detected and anonymised once, written as a photo, its transparency kept."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from veil.errors import InputError, OutputError
from veil.stream.detectors import Detector
from veil.stream.faces import Faces
from veil.stream.frame import Frame
from veil.stream.io import credentials
from veil.stream.io.audit import AuditLog
from veil.stream.io.partial import PartialFile
from veil.stream.io.provenance import marks
from veil.stream.jobs.kinds import ALPHA_SUFFIXES, check_kind
from veil.stream.options import Options
from veil.stream.recovery.sidecar import SidecarWriter
from veil.stream.stages.audit import record
from veil.stream.stages.mesh import open_face_mesh, with_meshes
from veil.stream.stages.seal import reach
from veil.stream.stages.select import SelectStage


def read_photo(path) -> tuple[np.ndarray, np.ndarray | None]:
    """The photo upright as BGR (EXIF orientation applied), and its alpha channel if it has one."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise InputError(f"cannot read image {path}")
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None or raw.ndim != 3 or raw.shape[2] != 4 or raw.shape[:2] != image.shape[:2]:
        return image, None
    alpha = raw[:, :, 3]
    return image, alpha if alpha.dtype == np.uint8 else (alpha >> 8).astype(np.uint8)


def run_image(input_path, output_path, options: Options, detector: Detector, *, log=print,
              audit: AuditLog | None = None, label: str | None = None) -> None:
    output = Path(output_path)
    check_kind(input_path, output, photo=True)
    image, alpha = read_photo(input_path)
    faces, kept, decisions = select_in_photo(image, detector.detect(image), options)
    if options.anonymiser().wants_mesh:
        faces = with_meshes(open_face_mesh(options.backend, options.device), image, faces)
    result = options.anonymiser().apply(image, faces)
    if alpha is not None:
        if output.suffix.lower() in ALPHA_SUFFIXES:
            result = np.dstack([result, alpha])
        else:
            log(f"veil: {Path(input_path).name} has transparency, which {output.suffix} files cannot hold: written opaque")
    file = PartialFile(output)
    own_audit = seal = None
    try:
        if options.recovery_keys:
            seal = seal_photo(image, faces, output, Path(input_path).name, options)
        own_audit = AuditLog(options.audit) if audit is None and options.audit else None
        try:
            written = cv2.imwrite(str(file.partial), result)
        except cv2.error as error:
            raise OutputError(f"cannot write {output}: {error.err or error}") from None
        if not written:
            raise OutputError(f"cannot write {output}")
        credentials.sign(file.partial, marks(options, None if seal is None else seal.id_hex), title=output.name)
        (audit or own_audit or _NoLog).write(record(0, 0, 0.0, faces, label, kept=kept, decisions=decisions))
        if own_audit is not None:
            own_audit.close()
    except BaseException:
        file.abort()
        for beside in (own_audit, seal):
            if beside is not None:
                beside.abort()
        raise
    file.commit()
    if own_audit is not None:
        own_audit.commit()
    if seal is not None:
        seal.commit(output)
        log(f"veil: sealed the originals of the masked regions in {seal.path}")
    log(f"veil: wrote {output}: {len(faces)} faces anonymised")


def select_in_photo(image: np.ndarray, faces: Faces, options: Options) -> tuple[Faces, Faces | None, dict]:
    """With --keep or --only: the faces to mask, those left visible and why. A photo is one
    judged frame, so one confident match is all a kept face can have."""
    if not options.selection:
        return faces, None, {}
    tracked = Faces(faces.boxes, faces.scores, faces.landmarks, np.arange(len(faces)), faces.detected)
    stage = SelectStage(options.selection, options.people(), threshold=options.match_threshold, confirm=1)
    (decided,) = stage.process(Frame(image=image, pts=0, time_base=Fraction(1), index=0, tracks=tracked))
    return decided.tracks, decided.kept, decided.decisions


def seal_photo(image: np.ndarray, faces, output: Path, source: str, options: Options) -> SidecarWriter:
    """The photo's sidecar: each face's region as its own track (a photo has no tracker)."""
    height, width = image.shape[:2]
    seal = SidecarWriter(output, options.recipients(), width=width, height=height, rate=Fraction(1), time_base=Fraction(1),
                         source=source, mode=options.mode)  # fmt: skip
    try:
        for i in range(len(faces)):
            rect = reach(options.anonymiser(), faces, i, height, width)
            if rect is not None:
                seal.add(0, 0, i, rect, image[rect[1] : rect[3], rect[0] : rect[2]])
        seal.end_frame()
    except BaseException:
        seal.abort()
        raise
    return seal


class _NoLog:
    @staticmethod
    def write(line: dict) -> None:
        pass
