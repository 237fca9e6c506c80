"""Whole runs: a video, a photo, a folder, a live stream; ``run`` picks by what the input is."""

from __future__ import annotations

import os
from pathlib import Path

from veil.errors import InputError
from veil.stream.io.live import is_live_url
from veil.stream.jobs.folder import run_folder
from veil.stream.jobs.kinds import check_paths, is_live_output, is_photo
from veil.stream.jobs.live import run_live, run_live_job
from veil.stream.jobs.photo import run_image
from veil.stream.jobs.video import run_video
from veil.stream.options import Options
from veil.stream.pipeline import file_detector, live_detector

__all__ = ["run", "run_folder", "run_image", "run_live", "run_live_job", "run_video"]


def run(input_path: str, output_path: str, options: Options, *, log=print) -> None:
    """Anonymise ``input_path`` into ``output_path``; raise VeilError on failure."""
    check_paths(input_path, output_path)
    options.anonymiser()  # a bad mode fails before any model loads or any file is opened
    options.people()  # so does a reference photo without one clear face
    if options.live or is_live_url(input_path) or is_live_output(output_path):
        run_live_job(input_path, output_path, options, live_detector(options), log=log)
        return
    detector = file_detector(options)
    if os.path.isdir(input_path):
        run_folder(Path(input_path), Path(output_path), options, detector, log=log)
    elif is_photo(input_path):
        if options.preset is not None:
            raise InputError("--preset is for video outputs (x264's speed); a photo is written as a photo")
        run_image(input_path, output_path, options, detector, log=log)
    else:
        run_video(input_path, output_path, options, detector, log=log)
