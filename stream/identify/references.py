"""The people a run keeps visible (``--keep``) or hides (``--only``): each reference is a
photo, several photos, or a folder of one person's photos; a folder of folders is one
person per folder. Every photo must show its person: no face, or several faces of about
the same size, is an InputError before any frame is processed."""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

from veil.errors import InputError
from veil.stream.identify.people import People
from veil.stream.identify.recogniser import Recogniser
from veil.stream.jobs.kinds import PHOTO_SUFFIXES

CLEARLY_LARGEST = 2.0  # a photo of several faces is taken when one is this many times the area of the next


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


def load_people(references: tuple[str, ...], recogniser: Recogniser, detector, *, log=_stderr) -> People:
    people: dict[str, list[np.ndarray]] = {}
    for reference in references:
        for name, photos in _photos_of(Path(reference)).items():
            people.setdefault(name, []).extend(_embed(photo, recogniser, detector, log) for photo in photos)
    return People(list(people), [np.stack(rows) for rows in people.values()], recogniser)


def _photos_of(path: Path) -> dict[str, list[Path]]:
    """{person: photos}: a photo is its own person (named by its stem), a folder of photos
    one person, a folder of folders one person each."""
    if path.is_file():
        if path.suffix.lower() not in PHOTO_SUFFIXES:
            raise InputError(f"reference {path}: not a photo ({', '.join(sorted(PHOTO_SUFFIXES))})")
        return {path.stem: [path]}
    if not path.is_dir():
        raise InputError(f"reference {path}: no such photo or folder")
    photos = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in PHOTO_SUFFIXES)
    folders = sorted(p for p in path.iterdir() if p.is_dir())
    if photos:
        return {path.name: photos}
    found = {folder.name: sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in PHOTO_SUFFIXES) for folder in folders}
    found = {name: photos for name, photos in found.items() if photos}
    if not found:
        raise InputError(f"reference {path}: no photos in it (nor in folders inside it)")
    return found


def _embed(photo: Path, recogniser: Recogniser, detector, log) -> np.ndarray:
    image = cv2.imread(str(photo), cv2.IMREAD_COLOR)
    if image is None:
        raise InputError(f"reference {photo}: cannot read it as an image")
    faces = detector.detect(image)
    if not len(faces):
        raise InputError(f"reference {photo}: no face found in it; give a photo where the person's face is clearly seen")
    areas = (faces.boxes[:, 2] - faces.boxes[:, 0]) * (faces.boxes[:, 3] - faces.boxes[:, 1])
    order = np.argsort(areas)[::-1]
    if len(faces) > 1:
        if areas[order[0]] < CLEARLY_LARGEST * areas[order[1]]:
            raise InputError(f"reference {photo}: {len(faces)} faces of about the same size; crop it to the one person")
        box = ", ".join(str(round(float(v))) for v in faces.boxes[order[0]])
        log(f"veil: reference {photo.name}: {len(faces)} faces, took the largest (box {box})")
    crop = recogniser.crop(image, faces.landmarks[order[0]])
    if crop is None:
        raise InputError(f"reference {photo}: the face has no landmarks to align it by; give a clearer photo")
    return recogniser.embed([crop])[0]
