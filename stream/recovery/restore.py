"""Recovery: the chosen tracks' original pixels put back into the anonymised video, every
other face left as it was; and the listing a controller picks tracks from.

Inside a restored track's regions the pixels are exactly those Veil decoded from the input
(BGR); the regions of the tracks not chosen are never written, even where they overlap a
chosen one. Everything else is the anonymised video as decoded. The restored file is FFV1
(lossless) in Matroska by default, or H.264 with ``lossy`` for viewing. Nothing is written
unless the sidecar checks out whole and belongs to this video; the file is written under a
partial name and named only when complete; each look is appended to the access log.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable
from pathlib import Path

import av
import cv2
import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from veil.errors import InputError, OutputError, reason
from veil.stream.io.partial import PartialFile
from veil.stream.io.provenance import tags_of
from veil.stream.io.sink import add_video, tag
from veil.stream.jobs.kinds import PHOTO_SUFFIXES
from veil.stream.recovery import access
from veil.stream.recovery.keys import fingerprint
from veil.stream.recovery.sidecar import Region, Sidecar, file_sha256, sidecar_path

SHEET_CELL = 128


def open_for(video: str | Path, key: X25519PrivateKey, *, sidecar: str | Path | None = None, partial: bool = False) -> Sidecar:
    """The video's sidecar, checked whole, after checking it was made with this video."""
    video = Path(video)
    path = Path(sidecar) if sidecar is not None else sidecar_path(video)
    said = None
    if video.suffix.lower() not in PHOTO_SUFFIXES:
        try:
            with av.open(str(video)) as container:
                said = tags_of(container).get("veil_recovery")
        except (av.FFmpegError, OSError) as error:
            raise InputError(f"cannot read {video}: {reason(error)}") from None
    found = Sidecar(path, key, partial=partial)
    if said is not None and said != found.id.hex():
        raise InputError(f"{path} is the sidecar of another video (its id {found.id.hex()}, {video.name} says {said})")
    if found.video_sha256 is not None and found.video_sha256 != file_sha256(video):
        raise InputError(f"{video} is not the file {path} was sealed with (another video, or it was changed since: its SHA-256 differs)")
    if said is None and found.video_sha256 is None:
        raise InputError(f"{video} carries no recovery id and {path} no file hash: nothing ties them together")
    return found


def track_table(sidecar: Sidecar) -> list[dict]:
    """Per track: its id, first and last time (s), and how many frames show it."""
    time_base = sidecar.time_base
    return [
        {"track": track, "first_s": round(float(regions[0].pts * time_base), 3), "last_s": round(float(regions[-1].pts * time_base), 3),
         "frames": len(regions)}
        for track, regions in sorted(sidecar.tracks().items())
    ]  # fmt: skip


def contact_sheet(sidecar: Sidecar) -> np.ndarray:
    """One original face per track (its largest region), labelled with the track id."""
    cells = []
    for track, regions in sorted(sidecar.tracks().items()):
        region = max(regions, key=lambda r: (r.rect[2] - r.rect[0]) * (r.rect[3] - r.rect[1]))
        pixels = sidecar.pixels(region)
        scale = SHEET_CELL / max(pixels.shape[:2])
        small = cv2.resize(pixels, (max(1, round(pixels.shape[1] * scale)), max(1, round(pixels.shape[0] * scale))), interpolation=cv2.INTER_AREA)
        cell = np.full((SHEET_CELL + 24, SHEET_CELL, 3), 255, np.uint8)
        cell[: small.shape[0], : small.shape[1]] = small
        cv2.putText(cell, f"track {track}", (4, SHEET_CELL + 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
        cells.append(cell)
    if not cells:
        return np.full((SHEET_CELL + 24, SHEET_CELL, 3), 255, np.uint8)
    columns = min(8, len(cells))
    cells += [np.full_like(cells[0], 255)] * (-len(cells) % columns)
    return np.vstack([np.hstack(cells[i : i + columns]) for i in range(0, len(cells), columns)])


def list_tracks(video, key: X25519PrivateKey, *, sheet: str | Path | None = None, sidecar=None, partial: bool = False) -> list[dict]:
    found = open_for(video, key, sidecar=sidecar, partial=partial)
    table = track_table(found)
    if sheet is not None:
        if not cv2.imwrite(str(sheet), contact_sheet(found)):
            raise OutputError(f"cannot write the contact sheet {sheet} (give a .jpg or .png path)")
    access.append(access.log_path(found.path), {"action": "list", "video": Path(video).name, "sidecar": found.id.hex(),
                                                "key": fingerprint(key.public_key()), "sheet": None if sheet is None else str(sheet)})  # fmt: skip
    return table


def recover(video, key: X25519PrivateKey, output: str | Path, *, tracks: list[int] | None, start_s: float | None = None,
            end_s: float | None = None, lossy: bool = False, sidecar=None, partial: bool = False,
            log: Callable[[str], None] = print) -> Path:  # fmt: skip
    """Restore ``tracks`` (None: all) between ``start_s`` and ``end_s`` into ``output``."""
    output, photo = Path(output), Path(video).suffix.lower() in PHOTO_SUFFIXES
    lossless = ".png" if photo else ".mkv"
    if not lossy and output.suffix.lower() != lossless:
        raise InputError(f"a lossless restore of a {'photo is PNG' if photo else 'video is FFV1 in Matroska'}: give an output "
                         f"ending {lossless} (got {output.name}), or --lossy")  # fmt: skip
    for name, value in (("--from", start_s), ("--to", end_s)):
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise InputError(f"{name} is a time in seconds, 0 or more, got {value:g}")
    if start_s is not None and end_s is not None and end_s < start_s:
        raise InputError(f"--to {end_s:g} is before --from {start_s:g}")
    found = open_for(video, key, sidecar=sidecar, partial=partial)
    known = found.tracks()
    chosen = set(known) if tracks is None else set(tracks)
    missing = sorted(chosen - set(known))
    if missing:
        raise InputError(f"{found.path} holds no track {', '.join(map(str, missing))}; it holds {', '.join(map(str, sorted(known))) or 'none'}")
    by_time = _frames_by_time(found)
    if photo:
        restored = _write_photo(Path(video), output, found, by_time, chosen)
    else:
        restored = _write(Path(video), output, found, by_time, chosen, start_s, end_s, lossy)
    digest = file_sha256(output)
    access.append(access.log_path(found.path), {
        "action": "recover", "video": Path(video).name, "sidecar": found.id.hex(), "key": fingerprint(key.public_key()),
        "tracks": sorted(chosen), "from_s": start_s, "to_s": end_s, "output": str(output), "output_sha256": digest,
        "frames_restored": restored,
    })  # fmt: skip
    log(f"veil: restored tracks {', '.join(map(str, sorted(chosen)))} on {restored} frames into {output} (sha256 {digest[:16]}...)")
    return output


def _frames_by_time(found: Sidecar) -> dict[float, list[Region]]:
    by_time: dict[float, list[Region]] = {}
    for region in found.regions:
        by_time.setdefault(float(region.pts * found.time_base), []).append(region)
    return by_time


def _write(video: Path, output: Path, found: Sidecar, by_time, chosen, start_s, end_s, lossy: bool) -> int:
    claim = PartialFile(output)
    restored, times = 0, sorted(by_time)
    try:
        with av.open(str(video)) as source, av.open(str(claim.partial), mode="w") as out:
            stream = source.streams.video[0]
            tolerance = 0.25 / float(stream.average_rate or 25)
            writer = _video_stream(out, stream, lossy)
            tag(out, {key: value for key, value in source.metadata.items() if key.startswith("veil_") or key == "comment"} |
                {"veil_restored": ",".join(map(str, sorted(chosen)))})  # fmt: skip
            audio = {s.index: out.add_stream_from_template(s) for s in source.streams.audio}
            for packet in source.demux(stream, *source.streams.audio):
                if packet.stream.index in audio:
                    if packet.dts is not None:
                        packet.stream = audio[packet.stream.index]
                        out.mux(packet)
                    continue
                for frame in packet.decode():
                    restored += _restore_frame(out, writer, frame, found, by_time, times, tolerance, chosen, start_s, end_s)
            out.mux(writer.encode(None))
    except (av.FFmpegError, OSError) as error:
        claim.abort()
        raise OutputError(f"cannot write {output}: {reason(error)}") from None
    except BaseException:
        claim.abort()
        raise
    claim.commit()
    return restored


def _video_stream(out, template, lossy: bool):
    if lossy:
        stream = add_video(out, template.width, template.height, template.average_rate or 25, template.time_base)
    else:
        stream = out.add_stream("ffv1", rate=template.average_rate or 25)
        stream.width, stream.height, stream.pix_fmt = template.width, template.height, "bgr0"
        stream.time_base = template.time_base
    return stream


def _write_photo(photo: Path, output: Path, found: Sidecar, by_time, chosen) -> int:
    image = cv2.imread(str(photo), cv2.IMREAD_COLOR)
    if image is None:
        raise InputError(f"cannot read image {photo}")
    regions = next(iter(by_time.values()), [])
    put_back(image, found, regions, chosen)
    claim = PartialFile(output)
    try:
        if not cv2.imwrite(str(claim.partial), image):
            raise OutputError(f"cannot write {output}")
    except BaseException:
        claim.abort()
        raise
    claim.commit()
    return int(any(r.track in chosen for r in regions))


def _restore_frame(out, writer, frame, found, by_time, times, tolerance, chosen, start_s, end_s) -> int:
    image = frame.to_ndarray(format="bgr24")
    seconds = float(frame.pts * frame.time_base)
    regions = _regions_at(seconds, by_time, times, tolerance)
    inside = (start_s is None or seconds >= start_s) and (end_s is None or seconds <= end_s)
    restored = put_back(image, found, regions, chosen) if inside else 0
    picture = av.VideoFrame.from_ndarray(image, format="bgr24")
    picture.pts, picture.time_base = frame.pts, frame.time_base
    out.mux(writer.encode(picture))
    return restored


def put_back(image: np.ndarray, found: Sidecar, regions: list[Region], chosen) -> int:
    """The chosen tracks' original pixels into ``image`` (in place), except where a region
    of a track not chosen reaches: that stays anonymised. 1 if any was put back."""
    wanted = [r for r in regions if r.track in chosen]
    for region in wanted:
        left, top, right, bottom = region.rect
        keep = np.zeros((bottom - top, right - left), bool)  # where another track's mask reaches: stays anonymised
        for other in regions:
            if other.track not in chosen:
                x1, y1 = max(other.rect[0], left) - left, max(other.rect[1], top) - top
                x2, y2 = min(other.rect[2], right) - left, min(other.rect[3], bottom) - top
                if x2 > x1 and y2 > y1:
                    keep[y1:y2, x1:x2] = True
        patch = image[top:bottom, left:right]
        patch[~keep] = found.pixels(region)[~keep]
    return int(bool(wanted))


def _regions_at(seconds: float, by_time, times, tolerance) -> list[Region]:
    at = bisect.bisect_left(times, seconds)
    for candidate in times[max(0, at - 1) : at + 1]:
        if abs(candidate - seconds) <= tolerance:
            return by_time[candidate]
    return []
