"""The settings of a run: what the pipeline description sets (veil.stream.description), checked
on construction, before any model loads or any file opens (veil.stream.limits)."""

from __future__ import annotations

from dataclasses import dataclass, field

from veil.errors import InputError
from veil.stream.anonymisers.propagate import KEYFRAME_EVERY
from veil.stream.limits import LIMITS

# x264's presets, fastest first: a faster one gives the cores back to detection for a bigger
# file at the same quality (benchmarks/ENCODER.md).
ENCODER_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")
REFERENCE_SCORE = 0.8  # a reference photo's face must be clear: not the low threshold that finds every face in a frame


@dataclass
class Options:
    mode: str = "blur"  # one of veil.stream.anonymisers.MODES
    keyframe_every: int = KEYFRAME_EVERY  # synth: frames between generator runs at most (1: every frame)
    secret: str | None = None  # synth: picks each track's identity; None: random per run
    generator: str | None = None  # synth: a generator ONNX file (veil train writes one); None: the shipped weights
    backend: str = "onnxruntime"  # runs the generator (the detector's is in detector_options)
    device: str = "cpu"
    # Keep frames on the engines' device from upload to download (veil.stream.gpu). None:
    # yes on cuda. True on cpu runs that path's kernels through the CPU shim (tests).
    frames_on_device: bool | None = None
    detector: str = "yunet"
    detector_options: dict = field(default_factory=dict)  # the detector's own: score_threshold, input_size, tiles, ...
    detect_every: int = 1
    strength: float = 1.0
    margin: float = 0.4
    shape: str = "ellipse"
    coast_s: float = 1.0
    tentative_coast_s: float = 0.25
    backfill_s: float = 0.2
    audit: str | None = None
    recovery_keys: tuple[str, ...] = ()  # public keys to seal the originals for (a sidecar beside each output file)
    keep: tuple[str, ...] = ()  # reference photos or folders of people left visible (veil.stream.stages.select)
    only: tuple[str, ...] = ()  # ... or of the only people hidden
    match_threshold: float | None = None  # SFace cosine a match needs; None: the selection's default
    stage_timeout: float = 30.0
    preset: str | None = None  # x264's speed for H.264 files (ENCODER_PRESETS); None: veil.stream.io.sink's default
    progress: bool = True
    # live runs
    live: bool = False  # play a file input in real time, as a camera would deliver it
    target_delay_s: float | None = None
    reconnect_s: float = 30.0
    verbose: bool = False

    _anonymiser: object = field(default=None, init=False, repr=False, compare=False)
    _recipients: list = field(default_factory=list, init=False, repr=False, compare=False)
    _people: object = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self):
        """Every number in range before anything opens."""
        for name in ("strength", "margin", "coast_s", "tentative_coast_s", "backfill_s", "stage_timeout",
                     "keyframe_every", "detect_every", "reconnect_s"):
            setattr(self, name, LIMITS[name].check(getattr(self, name)))
        if self.recovery_keys:
            from veil.stream.recovery.keys import load_public

            self.recovery_keys = tuple(str(path) for path in self.recovery_keys)
            self._recipients = [load_public(path) for path in self.recovery_keys]  # a bad key fails now
        if self.generator is not None and self.mode != "synth":
            raise InputError(f"--generator is the synth mode's; this run's mode is {self.mode}")
        if self.preset is not None and self.preset not in ENCODER_PRESETS:
            raise InputError(f"unknown encoder preset {self.preset!r}; choose one of {', '.join(ENCODER_PRESETS)}")
        if self.keep and self.only:
            raise InputError("--keep and --only do not go together: keep some people visible, or hide only some")
        self.keep, self.only = tuple(str(p) for p in self.keep), tuple(str(p) for p in self.only)
        if self.match_threshold is not None:
            self.match_threshold = LIMITS["match_threshold"].check(self.match_threshold)
        if self.target_delay_s is not None:
            self.target_delay_s = LIMITS["target_delay_ms"].check(self.target_delay_s * 1000) / 1000
        if "score_threshold" in self.detector_options:
            LIMITS["threshold"].check(self.detector_options["score_threshold"])
        if self.detector_options.get("input_size") is not None:
            LIMITS["detect_size"].check(self.detector_options["input_size"])

    def __getstate__(self) -> dict:
        """Sent to another process (Ray's workers) without the models it loaded: they load there."""
        return {**self.__dict__, "_anonymiser": None, "_people": None}

    def share_anonymiser(self, shared: dict) -> None:
        """Take the anonymiser of an earlier run with the same hiding settings from ``shared``
        (or leave this one's there): the cameras of one process then fill one generator batch."""
        key = (self.mode, self.strength, self.margin, self.shape, self.keyframe_every, self.secret, self.generator, self.backend,
               self.device, self.live)
        self._anonymiser = shared.setdefault(key, self.anonymiser())

    def recipients(self) -> list:
        """The recovery keys, loaded (veil.stream.recovery.keys.Recipient)."""
        return self._recipients

    @property
    def selection(self) -> str | None:
        """"keep", "only" or None: whether some people are treated apart from the rest."""
        return "keep" if self.keep else "only" if self.only else None

    def people(self):
        """The reference people, loaded once (veil.stream.identify.references); a reference
        without a clear face fails here, before any frame."""
        if self._people is None and self.selection:
            from veil.stream.detectors import make_detector
            from veil.stream.identify.recogniser import Recogniser
            from veil.stream.identify.references import load_people

            detector = make_detector("yunet", backend=self.backend, device=self.device, score_threshold=REFERENCE_SCORE)
            self._people = load_people(self.keep or self.only, Recogniser(self.backend, self.device), detector)
        return self._people

    def anonymiser(self):
        """The run's one anonymiser (stateless, shared by its graphs); a bad mode fails here."""
        if self._anonymiser is None:
            from veil.stream.anonymisers import make_anonymiser

            self._anonymiser = make_anonymiser(self)
        return self._anonymiser
