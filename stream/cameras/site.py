"""A site file: the pipeline file of ``veil run --pipeline`` (its ``[[element]]`` tables and
``[source]`` properties, the defaults of every camera), plus the cameras.

    [[element]]
    name = "yunet"
    [[element]]
    name = "track"
    [[element]]
    name = "blur"

    [record]                      # how recordings are kept, for every camera that records
    folder = "recordings"
    segment = 600                 # seconds a file
    keep-days = 30                # and/or keep-gb: the newest that fit, per camera
    recovery-keys = ["controller.pub"]  # seal each segment's originals beside it (veil keygen)

    [[camera]]
    name = "gate"
    source = "rtsp://10.0.0.5/stream1"
    outputs = ["rtmp://127.0.0.1/live/gate"]
    record = true
    mode = "pixelate"             # overrides: detector, mode, size, threshold, tiles, coast, ...
    keep = ["staff/"]             # or only = [...]: people left visible (or the only ones hidden)

Optional tables: ``[status] listen = "127.0.0.1:8090"`` (the status page and /metrics),
``[batch] wait-ms = 5`` (how long a detector call waits for other cameras' frames), and
``[cluster]`` (cameras-per-actor, cpus-per-camera, gpus-per-camera) for ``--ray``. Every
key is checked: an unknown one, a duplicate camera name or a camera with nowhere to send
its frames is an InputError before anything opens.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from veil.errors import InputError
from veil.stream.description import OVERRIDES, Description, read_toml
from veil.stream.io.live import is_live_url
from veil.stream.io.segments import Recording
from veil.stream.options import Options

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")  # file names and metric labels carry it
CAMERA_KEYS = ("name", "source", "outputs", "record", "pipeline", "keep", "only", *OVERRIDES)
RECORD_KEYS = {"folder": "folder", "segment": "segment_s", "format": "format", "keep-days": "keep_days", "keep-gb": "keep_bytes",
               "recovery-keys": "recovery_keys"}  # fmt: skip
SITE_KEYS = ("element", "source", "status", "record", "batch", "cluster", "camera")
DEFAULT_STATUS = "127.0.0.1:8090"
BATCH_WAIT_MS = 5  # a frame waits this long at most for other cameras' to share a detector call


@dataclass(frozen=True)
class CameraSpec:
    """One camera: where its frames come from, where they go, and its pipeline."""

    name: str
    source: str
    outputs: tuple[str, ...]
    record: Recording | None
    description: Description
    selection: dict = field(default_factory=dict)  # keep = [...] or only = [...]: reference photos or folders

    def options(self) -> Options:
        sealing = {"recovery_keys": self.record.recovery_keys} if self.record is not None and self.record.recovery_keys else {}
        return self.description.options(progress=False, **sealing, **self.selection)


@dataclass(frozen=True)
class Cluster:
    """How ``--ray`` places cameras: actors of this many cameras, each asking for these resources."""

    cameras_per_actor: int = 4
    cpus_per_camera: float = 1.0
    gpus_per_camera: float = 0.0


@dataclass
class Site:
    cameras: list[CameraSpec]
    status: str = DEFAULT_STATUS  # host:port of the status page; "" for none
    batch_wait_s: float = BATCH_WAIT_MS / 1000
    cluster: Cluster = field(default_factory=Cluster)

    @classmethod
    def load(cls, path) -> Site:
        return cls.from_tables(read_toml(path, "site file"), Path(path).absolute())

    @classmethod
    def from_tables(cls, document: dict, where: Path) -> Site:
        _known(document, SITE_KEYS, f"{where}")
        tables = {key: document[key] for key in ("element", "source") if key in document}
        if "source" in tables and not isinstance(tables["source"], dict):
            raise InputError(f"{where}: source is each camera's own; [source] may hold reconnect and stage-timeout for all")
        defaults = Description.from_tables(tables, where) if "element" in tables else _default_pipeline(tables, where)
        record = _table(document, "record", where)
        _known(record, RECORD_KEYS, f"{where} [record]")
        cameras, names = [], set()
        for number, table in enumerate(document.get("camera", []), 1):
            camera = _camera(table, defaults, record, where, number, where.parent)
            if camera.name in names:
                raise InputError(f"{where}: two cameras are called {camera.name!r}; each needs its own name")
            names.add(camera.name)
            cameras.append(camera)
        if not cameras:
            raise InputError(f"{where}: no cameras; add a [[camera]] table with a name and a source")
        status = _table(document, "status", where)
        _known(status, ("listen",), f"{where} [status]")
        batch = _table(document, "batch", where)
        _known(batch, ("wait-ms",), f"{where} [batch]")
        cluster = _table(document, "cluster", where)
        _known(cluster, ("cameras-per-actor", "cpus-per-camera", "gpus-per-camera"), f"{where} [cluster]")
        try:
            wait_ms = float(batch.get("wait-ms", BATCH_WAIT_MS))
            settings = Cluster(int(cluster.get("cameras-per-actor", 4)), float(cluster.get("cpus-per-camera", 1.0)),
                               float(cluster.get("gpus-per-camera", 0.0)))
        except (TypeError, ValueError) as error:
            raise InputError(f"{where}: [batch] and [cluster] take numbers: {error}") from None
        if not 0 <= wait_ms <= 100 or settings.cameras_per_actor < 1 or settings.cpus_per_camera < 0 or settings.gpus_per_camera < 0:
            raise InputError(f"{where}: [batch] wait-ms is 0 to 100, [cluster] cameras-per-actor at least 1, resources not negative")
        return cls(cameras, str(status.get("listen", DEFAULT_STATUS)), wait_ms / 1000, settings)


def _default_pipeline(tables: dict, where) -> Description:
    """Without elements, every camera runs ``veil run``'s defaults (with the [source] given)."""
    elements = [{"name": e.name, **e.properties} for e in Description.of(Options(backfill_s=0.0)).elements]
    return Description.from_tables({**tables, "element": elements}, where)


def _camera(table, defaults: Description, record: dict, where, number: int, base: Path) -> CameraSpec:
    if not isinstance(table, dict):
        raise InputError(f"{where}: camera {number} is not a table; write [[camera]] with name = ... and source = ...")
    _known(table, CAMERA_KEYS, f"{where} camera {number}")
    name = table.get("name")
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise InputError(f"{where}: camera {number} needs a name of letters, digits, - and _ (it names its files and metrics), got {name!r}")
    here = f"{where} camera {name!r}"
    source = table.get("source")
    if not isinstance(source, str) or not source:
        raise InputError(f"{here}: no source; give source = an rtsp://, rtmp:// or srt:// URL, a file or a device")
    if not is_live_url(source) and not Path(source).is_absolute():
        source = str(base / source)  # a file played live, found beside the site file
    outputs = table.get("outputs", [])
    if isinstance(outputs, str):
        outputs = [outputs]
    if not isinstance(outputs, list) or not all(isinstance(o, str) and o for o in outputs):
        raise InputError(f"{here}: outputs is a list of URLs (rtmp://, srt://, webrtc://...)")
    recording = _recording(table.get("record", False), record, here, base)
    if not outputs and recording is None:
        raise InputError(f"{here}: nowhere to send its frames; give outputs = [...] or record = true")
    description = Description.parse(table["pipeline"]) if "pipeline" in table else defaults
    if "pipeline" in table and (description.source or description.sink):
        raise InputError(f"{here}: pipeline holds the elements only; the source and outputs have their own keys")
    if "pipeline" in table:
        description.source_properties = dict(defaults.source_properties)
    changes = {key: value for key, value in table.items() if key in OVERRIDES}
    description = description.overridden(changes, here) if changes else description
    description = Description(description.elements, source, None, dict(description.source_properties), {})
    selection = {}
    for key in ("keep", "only"):
        references = [table[key]] if isinstance(table.get(key), str) else table.get(key, [])
        if not isinstance(references, list) or not all(isinstance(r, str) and r for r in references):
            raise InputError(f"{here}: {key} is a list of reference photos or folders")
        if references:
            selection[key] = tuple(r if Path(r).is_absolute() else str(base / r) for r in references)
    camera = CameraSpec(name, source, tuple(outputs), recording, description, selection)
    try:
        options = camera.options()  # a bad key fails here, before anything opens
        options.people()  # and a reference without a clear face
    except InputError as error:
        raise InputError(f"{here}: {error}") from None
    if options.audit:
        raise InputError(f"{here}: audit logs are per file run; a camera's figures are on the status page and /metrics")
    return camera


def _recording(value, defaults: dict, where: str, base: Path) -> Recording | None:
    if value is False:
        return None
    if value is True:
        value = {}
    if not isinstance(value, dict):
        raise InputError(f"{where}: record is true, false or a table of {', '.join(RECORD_KEYS)}")
    _known(value, RECORD_KEYS, f"{where} record")
    settings = {**defaults, **value}
    folder = Path(settings.pop("folder", "recordings"))
    keys = settings.pop("recovery-keys", [])
    keys = [keys] if isinstance(keys, str) else keys
    if not isinstance(keys, list) or not all(isinstance(k, str) and k for k in keys):
        raise InputError(f"{where}: record: recovery-keys is a list of public key files (veil keygen)")
    settings["recovery-keys"] = tuple(k if Path(k).is_absolute() else str(base / k) for k in keys)
    try:
        fields = {RECORD_KEYS[key]: (float(v) * 1e9 if key == "keep-gb" else v) for key, v in settings.items()}
        if "segment_s" in fields:
            fields["segment_s"] = float(fields["segment_s"])
        return Recording(folder if folder.is_absolute() else base / folder, **fields)
    except (TypeError, ValueError) as error:
        raise InputError(f"{where}: record: {error}") from None


def _table(document: dict, key: str, where) -> dict:
    value = document.get(key, {})
    if not isinstance(value, dict):
        raise InputError(f"{where}: {key} is a table: write [{key}]")
    return value


def _known(table: dict, valid, where: str) -> None:
    unknown = sorted(set(table) - set(valid))
    if unknown:
        raise InputError(f"unknown key {unknown[0]!r} in {where}; valid keys: {', '.join(valid)}")
