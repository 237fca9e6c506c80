"""Who a tracked face is: SFace embeddings of the faces (``recogniser``), compared with the
people a run keeps visible or hides (``references``). The selection stage
(veil.stream.stages.select) decides per track from them, failing closed."""
