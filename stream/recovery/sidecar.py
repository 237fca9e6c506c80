"""The sidecar (``OUT.veilrec``): the original pixels of every masked region, sealed.

    "VEILREC1", then chunks: u32 length, u32 meta length, meta (JSON), body, MAC (32 bytes)

Chunk 0 is the header (the video's size, layout and time base; the chain key wrapped for
every recipient). Data chunks hold a second or so of frames: each region's pixels,
as PNG (lossless) encrypted with AES-256-GCM under its track's data key (wrapped for every
recipient in the chunk where the track first appears), the region's frame, pts, box and track
as authenticated data. The last chunk closes the sidecar with the frame count. Every chunk
carries the sidecar's id and its number and is sealed by HMAC-SHA256 under the chain key over
the previous chunk's MAC, so a modified, missing, reordered, foreign or cut-off chunk is found,
each with its own message, and only by a key holder: without the private key nothing in the
sidecar can be read or checked. A run killed mid-way loses at most the chunk it was filling.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import struct
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from veil.errors import InputError, OutputError, reason
from veil.stream.io.partial import PartialFile, partial_path
from veil.stream.recovery.keys import Recipient, fingerprint, unwrap, wrap

MAGIC = b"VEILREC1"
SUFFIX = ".veilrec"
MAC_SIZE = 32
CHUNK_BYTES = 8 << 20  # a chunk is closed early past this much sealed pixels
PNG = [cv2.IMWRITE_PNG_COMPRESSION, 1]  # lossless; half the raw size, as fast as zlib on raw bytes
CHANNELS = {"bgr": 3}  # pixels a region holds per layout (the GPU path's i420 is brought to BGR first)


def sidecar_path(video: str | Path) -> Path:
    """out.mp4 -> out.mp4.veilrec; a kept partial out.partial.mp4 -> out.mp4.partial.veilrec."""
    video = Path(video)
    stem, dot, suffix = video.name.rpartition(".partial.")
    if dot:
        return partial_path(video.with_name(f"{stem}.{suffix}{SUFFIX}"))
    return video.with_name(video.name + SUFFIX)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as stream:
            while block := stream.read(1 << 20):
                digest.update(block)
    except OSError as error:
        raise OutputError(f"cannot read {path}: {reason(error)}") from None
    return digest.hexdigest()


def _aad(sidecar: bytes, record: dict) -> bytes:
    fields = {key: record[key] for key in ("frame", "pts", "track", "rect")}
    return sidecar + json.dumps(fields, sort_keys=True).encode()


def _mac(chain_key: bytes, sidecar: bytes, seq: int, previous: bytes, meta: bytes, body: bytes) -> bytes:
    return hmac.new(chain_key, sidecar + struct.pack(">Q", seq) + previous + meta + body, hashlib.sha256).digest()


class SidecarWriter:
    """Seals regions frame by frame; ``close()`` writes the closing chunk, then the run
    ``commit()``s, ``keep()``s or ``abort()``s it beside its video."""

    def __init__(self, video: str | Path, recipients: list[Recipient], *, width: int, height: int, rate: Fraction,
                 time_base: Fraction, source: str, mode: str, chunk_frames: int | None = None):  # fmt: skip
        if not recipients:
            raise InputError("sealing originals needs at least one recovery key")
        self.path = sidecar_path(video)
        self.id = os.urandom(16)
        self.recipients = recipients
        self.chunk_frames = chunk_frames or max(1, round(float(rate)))
        self._chain = os.urandom(32)
        self._track_keys: dict[int, AESGCM] = {}
        self._new_keys: dict[str, list] = {}
        self._records: list[dict] = []
        self._body = bytearray()
        self._frames_in_chunk = 0
        self._seq = 0
        self._mac = bytes(MAC_SIZE)
        self.frames = 0
        self.file = PartialFile(self.path)
        try:
            self._stream = open(self.file.partial, "wb")
            self._stream.write(MAGIC)
            header = {
                "kind": "header", "version": 1, "video": Path(video).name, "source": source, "mode": mode,
                "width": width, "height": height, "layout": "bgr", "rate": str(rate), "time_base": str(time_base),
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "recipients": [r.fingerprint for r in recipients],
                "chain": [wrap(self._chain, r, self.id + b"chain") for r in recipients],
            }  # fmt: skip
            self._write_chunk(header, b"")
        except BaseException:
            self.abort()
            raise

    @property
    def id_hex(self) -> str:
        return self.id.hex()

    def at(self, frame) -> SidecarWriter:
        """The writer for ``frame``: this one (a segmented recording has one per segment)."""
        return self

    def add(self, frame: int, pts: int, track: int, rect: tuple[int, int, int, int], pixels: np.ndarray) -> None:
        """One masked region's original pixels (``rect``: left, top, right, bottom)."""
        if track not in self._track_keys:
            key = AESGCM.generate_key(bit_length=256)
            self._track_keys[track] = AESGCM(key)
            self._new_keys[str(track)] = [wrap(key, r, self.id + b"track %d" % track) for r in self.recipients]
        record = {"frame": frame, "pts": int(pts), "track": int(track), "rect": [int(v) for v in rect]}
        nonce = os.urandom(12)
        ok, png = cv2.imencode(".png", np.ascontiguousarray(pixels), PNG)
        if not ok:
            raise OutputError(f"cannot compress a region for {self.path}")
        sealed = self._track_keys[track].encrypt(nonce, png.tobytes(), _aad(self.id, record))
        record.update(nonce=nonce.hex(), offset=len(self._body), length=len(sealed))
        self._records.append(record)
        self._body += sealed

    def end_frame(self) -> None:
        """After each frame's regions: a chunk is written every ``chunk_frames`` frames."""
        self.frames += 1
        self._frames_in_chunk += 1
        if self._frames_in_chunk >= self.chunk_frames or len(self._body) >= CHUNK_BYTES:
            self._flush()

    def _flush(self) -> None:
        if not self._frames_in_chunk:
            return
        meta = {"kind": "data", "frames": self._frames_in_chunk, "keys": self._new_keys, "records": self._records}
        self._write_chunk(meta, bytes(self._body))
        self._new_keys, self._records, self._body, self._frames_in_chunk = {}, [], bytearray(), 0

    def _write_chunk(self, meta: dict, body: bytes) -> None:
        meta = json.dumps({"sidecar": self.id.hex(), "seq": self._seq, **meta}).encode()
        self._mac = _mac(self._chain, self.id, self._seq, self._mac, meta, body)
        chunk = struct.pack(">I", len(meta)) + meta + body + self._mac
        try:
            self._stream.write(struct.pack(">I", len(chunk)) + chunk)
            self._stream.flush()
            os.fsync(self._stream.fileno())  # a killed run keeps every chunk written
        except OSError as error:
            raise OutputError(f"cannot write {self.path}: {reason(error)}") from None
        self._seq += 1

    def close(self, video: Path | None = None) -> None:
        """The closing chunk, with the SHA-256 of the finished ``video`` file when there is one:
        recovery then refuses a video other than the one written with this sidecar."""
        if self._stream is None:
            return
        self._flush()
        self._write_chunk({"kind": "end", "frames": self.frames, "video_sha256": None if video is None else file_sha256(video)}, b"")
        stream, self._stream = self._stream, None
        stream.close()

    def commit(self, video: Path | None = None) -> Path:
        self.close(video)
        return self.file.commit()

    def keep(self, video: Path | None = None) -> Path:
        """Beside a kept partial video: closed, with the frames written."""
        self.close(video)
        return self.file.keep()

    def abort(self) -> None:
        stream, self._stream = getattr(self, "_stream", None), None
        if stream is not None:
            stream.close()
        self.file.abort()


@dataclass(frozen=True)
class Region:
    frame: int
    pts: int
    track: int
    rect: tuple[int, int, int, int]
    _at: int  # where its sealed bytes start in the file
    _record: dict


class Sidecar:
    """A sidecar read and checked whole with the private key; ``regions`` lists what it
    holds, ``pixels(region)`` opens one. ``partial``: accept a sidecar whose run was cut off
    (no closing chunk), up to its last complete chunk. The file is read a chunk at a time,
    and the sealed pixels stay on disk until a region is opened: an hour's sidecar is many
    gigabytes."""

    def __init__(self, path: str | Path, key: X25519PrivateKey, *, partial: bool = False):
        self.path = Path(path)
        try:
            with open(self.path, "rb") as stream:
                if stream.read(len(MAGIC)) != MAGIC:
                    raise InputError(f"{self.path} is not a Veil recovery sidecar")
                chunks = self._chunks(stream, self.path.stat().st_size)
        except OSError as error:
            raise InputError(f"cannot read sidecar {self.path}: {reason(error)}") from None
        header_meta = self._meta(chunks[0][0], 0) if chunks else None
        if header_meta is None or header_meta.get("kind") != "header":
            raise InputError(f"{self.path} is damaged: it has no header")
        self.id = bytes.fromhex(header_meta["sidecar"])
        chain = unwrap(header_meta["chain"], key, self.id + b"chain")
        if chain is None:
            raise InputError(f"{self.path} was not sealed for this key ({fingerprint(key.public_key())}); "
                             f"it was sealed for {', '.join(header_meta['recipients'])}")  # fmt: skip
        self.header, self.key = header_meta, key
        self.regions: list[Region] = []
        self.frames, self.complete, self.video_sha256 = 0, False, None
        self._keys: dict[int, AESGCM] = {}
        self._verify(chunks, chain)
        if not self.complete and not partial:
            raise InputError(f"{self.path} has no closing chunk: its run was cut off after chunk {len(chunks) - 1} "
                             f"({self.frames} frames); --partial recovers the frames up to there")  # fmt: skip

    def _chunks(self, stream, size: int) -> list[tuple[bytes, int, int, bytes]]:
        """(meta, body offset, body length, MAC) per chunk. A last chunk cut off by a killed
        run is left out: without the closing chunk, the sidecar is incomplete either way."""
        at, chunks = len(MAGIC), []
        while at + 4 <= size:
            stream.seek(at)
            (length,) = struct.unpack(">I", stream.read(4))
            if at + 4 + length > size:
                break
            (meta_length,) = struct.unpack(">I", stream.read(4)) if length >= 4 else (length,)
            if length < 4 + MAC_SIZE or 4 + meta_length + MAC_SIZE > length:
                raise InputError(f"chunk {len(chunks)} of {self.path} is damaged (its framing is broken)")
            meta = stream.read(meta_length)
            body_at, body_length = at + 8 + meta_length, length - 4 - meta_length - MAC_SIZE
            stream.seek(body_at + body_length)
            chunks.append((meta, body_at, body_length, stream.read(MAC_SIZE)))
            at += 4 + length
        return chunks

    def _read(self, at: int, length: int) -> bytes:
        try:
            with open(self.path, "rb") as stream:
                stream.seek(at)
                return stream.read(length)
        except OSError as error:
            raise InputError(f"cannot read sidecar {self.path}: {reason(error)}") from None

    def _meta(self, meta: bytes, seq: int) -> dict:
        try:
            found = json.loads(meta)
            if not isinstance(found, dict) or not isinstance(found.get("seq"), int) or "sidecar" not in found:
                raise ValueError
            return found
        except ValueError:
            raise InputError(f"chunk {seq} of {self.path} is damaged (unreadable)") from None

    def _verify(self, chunks, chain: bytes) -> None:
        previous = bytes(MAC_SIZE)
        metas = [self._meta(chunk[0], position) for position, chunk in enumerate(chunks)]
        numbers = [meta["seq"] for meta in metas]
        for position, ((meta_bytes, body_at, body_length, mac), meta) in enumerate(zip(chunks, metas, strict=True)):
            if meta["sidecar"] != self.id.hex():
                raise InputError(f"chunk {position} of {self.path} comes from another sidecar (another run's)")
            if self.complete:
                raise InputError(f"{self.path} has chunks after its closing chunk")
            if meta["seq"] != position:
                if position in numbers[position + 1 :]:
                    raise InputError(f"chunks of {self.path} are out of order (chunk {meta['seq']} stands where chunk {position} should)")
                raise InputError(f"chunk {position} of {self.path} is missing (chunk {meta['seq']} follows chunk {position - 1})")
            body = self._read(body_at, body_length)  # one chunk in memory at a time
            if not hmac.compare_digest(mac, _mac(chain, self.id, position, previous, meta_bytes, body)):
                raise InputError(f"chunk {position} of {self.path} is modified (its seal does not match)")
            previous = mac
            if meta["kind"] == "data":
                self._take(meta, body_at)
            elif meta["kind"] == "end":
                if meta["frames"] != self.frames:
                    raise InputError(f"{self.path} closes with {meta['frames']} frames but holds {self.frames}")
                self.complete, self.video_sha256 = True, meta.get("video_sha256")

    def _take(self, meta: dict, body_at: int) -> None:
        for track, entries in meta["keys"].items():
            key = unwrap(entries, self.key, self.id + b"track %d" % int(track))
            if key is None:
                raise InputError(f"{self.path}: track {track}'s key is not sealed for this key")
            self._keys[int(track)] = AESGCM(key)
        for record in meta["records"]:
            self.regions.append(Region(record["frame"], record["pts"], record["track"], tuple(record["rect"]), body_at + record["offset"], record))
        self.frames += meta["frames"]

    @property
    def time_base(self) -> Fraction:
        return Fraction(self.header["time_base"])

    def tracks(self) -> dict[int, list[Region]]:
        found: dict[int, list[Region]] = {}
        for region in self.regions:
            found.setdefault(region.track, []).append(region)
        return found

    def pixels(self, region: Region) -> np.ndarray:
        record = region._record
        sealed = self._read(region._at, record["length"])
        try:
            raw = self._keys[region.track].decrypt(bytes.fromhex(record["nonce"]), sealed, _aad(self.id, record))
        except InvalidTag:
            raise InputError(f"{self.path}: the region of track {region.track} at frame {region.frame} does not open (modified)") from None
        left, top, right, bottom = region.rect
        pixels = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_UNCHANGED)
        if pixels is None or pixels.shape != (bottom - top, right - left, CHANNELS[self.header["layout"]]):
            raise InputError(f"{self.path}: the region of track {region.track} at frame {region.frame} is not what its record says")
        return pixels
