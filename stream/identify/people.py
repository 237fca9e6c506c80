"""The people a selection is about: names and reference embeddings."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from veil.stream.identify.recogniser import Recogniser


@dataclass
class People:
    """Each person's reference embeddings; ``best`` scores a face against them all. The
    recogniser that made them comes along: only its embeddings compare with them."""

    names: list[str]
    embeddings: list[np.ndarray]  # per person, Kx128 unit rows
    recogniser: Recogniser

    def best(self, embedding: np.ndarray) -> tuple[str, float]:
        """The closest person and the cosine similarity to their nearest photo."""
        scores = [float((rows @ embedding).max()) for rows in self.embeddings]
        best = int(np.argmax(scores))
        return self.names[best], scores[best]
