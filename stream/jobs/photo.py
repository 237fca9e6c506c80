"""A photo: detected and anonymised once, written as a photo, its transparency kept."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from veil.errors import InputError, OutputError
from veil.stream.detectors import Detector
from veil.stream.io.audit import AuditLog
from veil.stream.io.partial import PartialFile
from veil.stream.jobs.kinds import ALPHA_SUFFIXES, check_kind
from veil.stream.options import Options
from veil.stream.stages.audit import record


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
    faces = detector.detect(image)
    result = options.anonymiser().apply(image, faces)
    if alpha is not None:
        if output.suffix.lower() in ALPHA_SUFFIXES:
            result = np.dstack([result, alpha])
        else:
            log(f"veil: {Path(input_path).name} has transparency, which {output.suffix} files cannot hold: written opaque")
    file = PartialFile(output)
    own_audit = None
    try:
        own_audit = AuditLog(options.audit) if audit is None and options.audit else None
        try:
            written = cv2.imwrite(str(file.partial), result)
        except cv2.error as error:
            raise OutputError(f"cannot write {output}: {error.err or error}") from None
        if not written:
            raise OutputError(f"cannot write {output}")
        (audit or own_audit or _NoLog).write(record(0, 0, 0.0, faces, label))
        if own_audit is not None:
            own_audit.close()
    except BaseException:
        file.abort()
        if own_audit is not None:
            own_audit.abort()
        raise
    file.commit()
    if own_audit is not None:
        own_audit.commit()
    log(f"veil: wrote {output}: {len(faces)} faces anonymised")


class _NoLog:
    @staticmethod
    def write(line: dict) -> None:
        pass
