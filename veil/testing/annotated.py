"""dlib's annotated photos (../shared/data/annotated/dlib_faces): PASCAL VOC pictures with
their face boxes and, in the ``*_with_face_landmarks.xml`` files, 68 points per face."""

from __future__ import annotations

from pathlib import Path
from xml.etree import ElementTree

import cv2
import numpy as np


def annotated_photos(folder: Path, xml_name: str) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(BGR image, boxes Nx4 x1 y1 x2 y2, points Nx68x2 or Nx0x2) for each photo of an imglab file."""
    photos = []
    for image in ElementTree.parse(Path(folder) / xml_name).getroot().iter("image"):
        boxes, points = [], []
        for box in image.iter("box"):
            left, top = int(box.get("left")), int(box.get("top"))
            boxes.append([left, top, left + int(box.get("width")), top + int(box.get("height"))])
            parts = sorted(box.iter("part"), key=lambda part: int(part.get("name")))
            points.append([[float(part.get("x")), float(part.get("y"))] for part in parts])
        shaped = np.array(points, np.float32).reshape(len(boxes), -1, 2)
        photos.append((cv2.imread(str(Path(folder) / image.get("file"))), np.array(boxes, np.float32).reshape(-1, 4), shaped))
    return photos
