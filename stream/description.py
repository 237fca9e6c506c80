"""A pipeline a person can write, as GStreamer's launch line or as a TOML file:

    in.mp4 ! yunet threshold=0.4 ! track coast=1 ! backfill 0.2 ! synth keyframe-every=16 ! out.mp4

Each element is a name, an optional positional value and ``property=value`` pairs. The
first element may be the source (a file, a URL, a camera) and the last the sink; between
them come a detector, ``track``, optionally ``backfill`` and ``audit``, and the anonymiser,
in that order. Every ``veil run`` flag is a property here (``veil run ... --print-pipeline``
prints the line the flags make), and a description becomes the run's ``Options``: the one
way a graph is built. An unknown element or property is an InputError that names the
valid ones.

The same graph as TOML (``veil run --pipeline FILE``)::

    source = "in.mp4"            # or [source] with url = ..., live = true, reconnect = 30
    sink = "out.mp4"
    [[element]]
    name = "yunet"
    threshold = 0.4
    [[element]]
    name = "track"
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass, field

from veil.errors import InputError
from veil.stream.anonymisers import MODES
from veil.stream.anonymisers.classic import SHAPES
from veil.stream.detectors import DETECTOR_NAMES, detector_class
from veil.stream.options import ENCODER_PRESETS, Options

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib


def _flag(text) -> bool:
    if isinstance(text, bool):
        return text
    if str(text).lower() in ("1", "true", "yes", "on"):
        return True
    if str(text).lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def _number(text) -> float:
    try:
        if isinstance(text, bool):
            raise ValueError
        return float(text)
    except ValueError:
        raise ValueError(f"expected a number, got {text!r}") from None


def _whole(text) -> int:
    value = _number(text)
    if value != int(value):
        raise ValueError(f"expected a whole number, got {text!r}")
    return int(value)


def _choice(*choices: str) -> Callable[[object], str]:
    def parse(text) -> str:
        if str(text) not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {text!r}")
        return str(text)

    return parse


def _size(text) -> int | None:
    return None if str(text) == "native" else _whole(text)


@dataclass(frozen=True)
class Property:
    """One property of an element: where it goes in Options, how its text is read, and how
    its value is written back (``show``)."""

    parse: Callable[[object], object]
    field: str  # an Options field, or "detector_options.KEY"
    show: Callable[[object], str] = lambda value: f"{value:g}" if isinstance(value, float) else str(value).lower() if isinstance(value, bool) else str(value)


def _seconds_from_ms(text) -> float:
    return _number(text) / 1000


_SOURCE = {
    "live": Property(_flag, "live"),
    "reconnect": Property(_number, "reconnect_s"),
    "stage-timeout": Property(_number, "stage_timeout"),
}
_SINK = {
    "target-delay": Property(_seconds_from_ms, "target_delay_s", lambda s: f"{s * 1000:g}"),
    "preset": Property(_choice(*ENCODER_PRESETS), "preset"),
}
_DETECTOR = {
    "threshold": Property(_number, "detector_options.score_threshold"),
    "size": Property(_size, "detector_options.input_size", lambda v: "native" if v is None else str(v)),
    "tiles": Property(_flag, "detector_options.tiles"),
    "every": Property(_whole, "detect_every"),
    "backend": Property(_choice("onnxruntime", "torch", "tensorrt"), "detector_options.backend"),
    "device": Property(_choice("cpu", "cuda"), "detector_options.device"),
}
_HIDE = {
    "strength": Property(_number, "strength"),
    "margin": Property(_number, "margin"),
    "shape": Property(_choice(*SHAPES), "shape"),
}
_SYNTH = {
    **_HIDE,
    "keyframe-every": Property(_whole, "keyframe_every"),
    "secret": Property(str, "secret"),
    "generator": Property(str, "generator"),
    "backend": Property(_choice("onnxruntime", "torch", "tensorrt"), "backend"),
    "device": Property(_choice("cpu", "cuda"), "device"),
}
ELEMENTS: dict[str, dict[str, Property]] = {
    **{name: _DETECTOR for name in DETECTOR_NAMES},
    "track": {"coast": Property(_number, "coast_s"), "coast-tentative": Property(_number, "tentative_coast_s")},
    "backfill": {"seconds": Property(_number, "backfill_s")},
    "audit": {"path": Property(str, "audit")},
    **{mode: _HIDE for mode in MODES if mode != "synth"},
    "synth": _SYNTH,
}
# What one camera of a site file may change in the site's pipeline: the element of this
# role itself (None) or one of its properties.
OVERRIDES = {
    "detector": ("detector", None), "mode": ("anonymiser", None),
    "size": ("detector", "size"), "threshold": ("detector", "threshold"), "tiles": ("detector", "tiles"),
    "coast": ("track", "coast"),
    "strength": ("anonymiser", "strength"), "margin": ("anonymiser", "margin"), "shape": ("anonymiser", "shape"),
    "keyframe-every": ("anonymiser", "keyframe-every"),
}  # fmt: skip
POSITIONAL = {"backfill": "seconds", "audit": "path"}  # the element whose one value needs no name
ORDER = ("detector", "track", "backfill", "audit", "anonymiser")  # where each element may stand


def _role(name: str) -> str:
    if name in DETECTOR_NAMES:
        return "detector"
    if name in MODES:
        return "anonymiser"
    return name


@dataclass
class Element:
    name: str
    properties: dict = field(default_factory=dict)

    def text(self) -> str:
        specs = ELEMENTS.get(self.name, {})
        words = [self.name]
        for key, value in self.properties.items():
            shown = specs[key].show(value) if key in specs else str(value)
            words.append(shlex.quote(shown) if POSITIONAL.get(self.name) == key else f"{key}={shlex.quote(shown)}")
        return " ".join(words)


@dataclass
class Description:
    """A source (URL and its properties), the elements in order, a sink (URL and its properties)."""

    elements: list[Element]
    source: str | None = None
    sink: str | None = None
    source_properties: dict = field(default_factory=dict)
    sink_properties: dict = field(default_factory=dict)

    # --- reading -----------------------------------------------------------
    @classmethod
    def parse(cls, line: str) -> Description:
        """A launch line: ``[SOURCE !] element ! ... [! SINK]``."""
        try:
            parts = [shlex.split(part) for part in _split(line)]
        except ValueError as error:  # an unclosed quote
            raise InputError(f"cannot read the pipeline: {error}") from None
        if any(not words for words in parts):
            raise InputError("cannot read the pipeline: an element between two '!' is empty")
        description = cls(elements=[])
        if parts and _is_end(parts[0][0]):
            description.source, description.source_properties = parts[0][0], _raw(parts.pop(0)[1:], "the source", _SOURCE)
        if parts and _is_end(parts[-1][0]):
            description.sink, description.sink_properties = parts[-1][0], _raw(parts.pop()[1:], "the sink", _SINK)
        for words in parts:
            name = words[0]
            if name not in ELEMENTS:
                raise InputError(f"unknown element {name!r}; valid elements: {', '.join(ELEMENTS)} (and a source first, a sink last)")
            description.elements.append(Element(name, _raw(words[1:], name, ELEMENTS[name], POSITIONAL.get(name))))
        description.check()
        return description

    @classmethod
    def load(cls, path) -> Description:
        """A TOML file: ``source``/``sink`` (a URL, or a table with ``url`` and properties)
        and ``[[element]]`` tables (``name`` and properties)."""
        document = read_toml(path, "pipeline file")
        unknown = set(document) - {"source", "sink", "element"}
        if unknown:
            raise InputError(f"unknown key {sorted(unknown)[0]!r} in {path}; valid keys: source, sink, element")
        return cls.from_tables(document, path)

    @classmethod
    def from_tables(cls, document: dict, where) -> Description:
        """The description that a TOML document's ``source``, ``sink`` and ``element`` give
        (a site file holds them too, beside its cameras)."""
        description = cls(elements=[])
        for end, specs in (("source", _SOURCE), ("sink", _SINK)):
            value = document.get(end)
            if isinstance(value, dict):
                value = dict(value)
                url = value.pop("url", None)
                setattr(description, end, url)
                setattr(description, f"{end}_properties", _raw([f"{k}={_toml_text(v)}" for k, v in value.items()], f"the {end}", specs))
            elif value is not None:
                setattr(description, end, str(value))
        for table in document.get("element", []):
            table = dict(table)
            name = table.pop("name", None)
            if name not in ELEMENTS:
                raise InputError(f"unknown element {name!r} in {where}; valid elements: {', '.join(ELEMENTS)}")
            description.elements.append(Element(name, _raw([f"{k}={_toml_text(v)}" for k, v in table.items()], name, ELEMENTS[name])))
        description.check()
        return description

    def overridden(self, changes: dict, where: str) -> Description:
        """A copy with the ``OVERRIDES`` in ``changes`` made: ``{"mode": "pixelate", "size":
        640}`` swaps the anonymiser (keeping the properties the new one has) and sets the
        detector's size."""
        elements = [Element(element.name, dict(element.properties)) for element in self.elements]
        roles = [_role(element.name) for element in elements]
        for key, value in sorted(changes.items(), key=lambda item: OVERRIDES[item[0]][1] is not None):
            role, name = OVERRIDES[key]
            index = roles.index(role)
            element = elements[index]
            if name is None:
                choices = DETECTOR_NAMES if role == "detector" else MODES
                if value not in choices:
                    raise InputError(f"{where}: {key} {value!r}: expected one of {', '.join(choices)}")
                elements[index] = Element(value, {k: v for k, v in element.properties.items() if k in ELEMENTS[value]})
            else:
                element.properties.update(_raw([f"{name}={_toml_text(value)}"], f"{where} ({element.name})", ELEMENTS[element.name]))
        changed = Description(elements, self.source, self.sink, dict(self.source_properties), dict(self.sink_properties))
        changed.check()
        return changed

    def check(self) -> None:
        """The order a graph needs: a detector, ``track``, then ``backfill`` and ``audit`` at
        most once each, and the anonymiser last. Fail closed: no detector or no anonymiser
        would let every face through."""
        roles = [_role(element.name) for element in self.elements]
        for required, what in (("detector", f"detector ({', '.join(DETECTOR_NAMES)})"), ("track", "track"),
                               ("anonymiser", f"anonymiser ({', '.join(MODES)})")):
            if roles.count(required) != 1:
                raise InputError(f"a pipeline needs exactly one {what}; got {roles.count(required)}")
        for role in ("backfill", "audit"):
            if roles.count(role) > 1:
                raise InputError(f"a pipeline takes at most one {role}")
        ranks = [ORDER.index(role) for role in roles]
        if ranks != sorted(ranks):
            raise InputError(f"elements out of order: {' ! '.join(e.name for e in self.elements)}; "
                             "the order is: detector ! track ! [backfill] ! [audit] ! anonymiser")

    # --- writing -----------------------------------------------------------
    def line(self) -> str:
        """The launch line: ``Description.parse(d.line())`` gives ``d`` back."""
        parts = []
        if self.source is not None:
            parts.append(" ".join([shlex.quote(self.source), *(f"{k}={_SOURCE[k].show(v)}" for k, v in self.source_properties.items())]))
        parts += [element.text() for element in self.elements]
        if self.sink is not None:
            parts.append(" ".join([shlex.quote(self.sink), *(f"{k}={_SINK[k].show(v)}" for k, v in self.sink_properties.items())]))
        return " ! ".join(parts)

    # --- to and from a run's settings ----------------------------------------
    def options(self, **extra) -> Options:
        """The run's settings. What the description leaves out takes Options' default, except
        backfill, which is 0 where no ``backfill`` element is given. ``extra``: settings a
        description does not hold (progress, verbose)."""
        values: dict = {"detector_options": {}, "backfill_s": 0.0, **extra}
        for properties, specs in ((self.source_properties, _SOURCE), (self.sink_properties, _SINK)):
            for key, value in properties.items():
                _set(values, specs[key].field, value)
        for element in self.elements:
            role = _role(element.name)
            if role == "detector":
                values["detector"] = element.name
            elif role == "anonymiser":
                values["mode"] = element.name
            for key, value in element.properties.items():
                _set(values, ELEMENTS[element.name][key].field, value)
        return Options(**values)

    @classmethod
    def of(cls, options: Options, source: str | None = None, sink: str | None = None) -> Description:
        """The description a run's settings make: every setting shown, defaults included."""
        detector = detector_class(options.detector)
        found = {"score_threshold": detector.SCORE_THRESHOLD, "input_size": detector.INPUT_SIZE, **options.detector_options}
        detecting = {"threshold": found["score_threshold"], "size": found["input_size"]}
        if "tiles" in options.detector_options:
            detecting["tiles"] = options.detector_options["tiles"]
        if options.detect_every != 1:
            detecting["every"] = options.detect_every
        for key in ("backend", "device"):
            if key in found:
                detecting[key] = found[key]
        hiding = {"strength": options.strength, "margin": options.margin, "shape": options.shape}
        if options.mode == "synth":
            hiding.update({"keyframe-every": options.keyframe_every, "backend": options.backend, "device": options.device})
            for key in ("secret", "generator"):
                if getattr(options, key) is not None:
                    hiding[key] = getattr(options, key)
        elements = [Element(options.detector, detecting),
                    Element("track", {"coast": options.coast_s, "coast-tentative": options.tentative_coast_s})]
        if options.backfill_s:
            elements.append(Element("backfill", {"seconds": options.backfill_s}))
        if options.audit:
            elements.append(Element("audit", {"path": str(options.audit)}))
        elements.append(Element(options.mode, hiding))
        source_properties = {"reconnect": options.reconnect_s, "stage-timeout": options.stage_timeout}
        if options.live:
            source_properties = {"live": True, **source_properties}
        sink_properties = {} if options.target_delay_s is None else {"target-delay": options.target_delay_s}
        if options.preset is not None:
            sink_properties["preset"] = options.preset
        return cls(elements, source, sink, source_properties, sink_properties)


def read_toml(path, what: str) -> dict:
    """A TOML file's tables, or an InputError that names the file and the fault."""
    try:
        with open(path, "rb") as file:
            return tomllib.load(file)
    except OSError as error:
        raise InputError(f"cannot read {what} {path}: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise InputError(f"cannot read {what} {path}: {error}") from None


def _is_end(word: str) -> bool:
    """A source or sink: a path, a URL or a camera index; any other word is an element, so a
    misspelt one is an error, not a file of that name."""
    return word not in ELEMENTS and (any(c in word for c in "./:\\") or word.isdigit())


def _split(line: str) -> list[str]:
    """The parts between unquoted '!'."""
    parts, current, quote = [], [], None
    for character in line:
        if quote:
            quote = None if character == quote else quote
        elif character in "'\"":
            quote = character
        elif character == "!":
            parts.append("".join(current))
            current = []
            continue
        current.append(character)
    parts.append("".join(current))
    return parts if line.strip() else []


def _raw(words: list[str], owner: str, specs: dict[str, Property], positional: str | None = None) -> dict:
    """``key=value`` words (and one positional value) read by their properties' parsers."""
    properties = {}
    for word in words:
        key, equals, text = word.partition("=")
        if not equals:
            if positional is None or positional in properties:
                raise InputError(f"{owner}: {word!r} is not property=value; {_valid(owner, specs)}")
            key, text = positional, word
        if key not in specs:
            raise InputError(f"{owner} has no property {key!r}; {_valid(owner, specs)}")
        try:
            properties[key] = specs[key].parse(text)
        except ValueError as error:
            raise InputError(f"{owner} {key}: {error}") from None
    return properties


def _valid(owner: str, specs: dict) -> str:
    return f"valid properties of {owner}: {', '.join(specs)}" if specs else f"{owner} takes no properties"


def _toml_text(value) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _set(values: dict, name: str, value) -> None:
    if name.startswith("detector_options."):
        values["detector_options"][name.split(".", 1)[1]] = value
    else:
        values[name] = value
