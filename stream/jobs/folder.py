"""A folder: every photo and video in it, the same names out."""

from __future__ import annotations

from pathlib import Path

from veil.errors import InputError, OutputError, StageError, VeilError, reason
from veil.stream.detectors import Detector
from veil.stream.io.audit import AuditLog
from veil.stream.jobs.kinds import PHOTO_SUFFIXES, VIDEO_SUFFIXES, is_photo
from veil.stream.jobs.photo import run_image
from veil.stream.jobs.video import run_video
from veil.stream.options import Options


def run_folder(input_dir: Path, output_dir: Path, options: Options, detector: Detector, *, log=print) -> None:
    """Every file is tried; one that fails is reported and the rest go on; the run fails at
    the end if any did. With ``--audit``, one log for the folder, every line naming its
    file, and after each file a line that says whether it was written."""
    media, skipped = folder_media(input_dir, output_dir)
    audit = AuditLog(options.audit) if options.audit else None
    failures: list[tuple[str, BaseException]] = []
    try:
        for path in media:
            label = path.relative_to(input_dir).as_posix()
            try:
                run_file(path, output_dir / label, options, detector, log=log, audit=audit, label=label)
                outcome = {"file": label, "written": (output_dir / label).as_posix()}
            except Exception as error:  # noqa: BLE001 - one bad file must not stop the others
                failures.append((label, error))
                log(f"veil: {label}: failed: {said(error)}")
                outcome = {"file": label, "failed": said(error)}
            if audit is not None:
                audit.write(outcome)
    except BaseException:
        if audit is not None:
            audit.keep()
        raise
    if audit is not None:
        audit.commit()
    finish_folder(len(media), failures, skipped, log)


def folder_media(input_dir: Path, output_dir: Path) -> tuple[list[Path], int]:
    """The photos and videos under ``input_dir``, sorted, and how many other files it holds."""
    if output_dir.resolve().is_relative_to(input_dir.resolve()):
        raise OutputError("the output folder must not be inside the input folder")
    files = sorted(p for p in input_dir.rglob("*") if p.is_file())
    media = [p for p in files if p.suffix.lower() in PHOTO_SUFFIXES | VIDEO_SUFFIXES]
    if not media:
        raise InputError(f"no images or videos in {input_dir}")
    return media, len(files) - len(media)


def run_file(path: Path, target: Path, options: Options, detector: Detector, *, log=print, audit=None, label=None) -> None:
    """One file of a folder, into ``target`` (its folders made)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    job = run_image if is_photo(path) else run_video
    job(path, target, options, detector, log=log, audit=audit, label=label)


def finish_folder(count: int, failures: list[tuple[str, BaseException]], skipped: int, log) -> None:
    """The summary line; raises if any file failed, naming each."""
    log(f"veil: folder done: {count - len(failures)} of {count} files anonymised" + (f", {skipped} other files skipped" if skipped else ""))
    if failures:
        named = "; ".join(f"{label} ({said(error)})" for label, error in failures)
        # exit 2 when every failure is the input's or output's fault, 1 when a run itself failed
        kind = InputError if all(isinstance(e, (InputError, OutputError)) for _, e in failures) else StageError
        raise kind(f"{len(failures)} of {count} files failed: {named}")


def said(error: BaseException) -> str:
    """An error in one line: Veil's own message, or the exception's type and words."""
    return str(error) if isinstance(error, VeilError) else f"{type(error).__name__}: {reason(error)}"
