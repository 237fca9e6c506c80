"""CUDA kernels (one .cu file per family) with their thin loader and the NumPy/OpenCV
references they are tested against. The per-pixel GPU work (warp, composite,
obfuscate, colour, preprocess) lands here with the GPU path; the CPU pipeline does
not import this package."""
