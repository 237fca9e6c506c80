"""The built-in stages, in the order a pipeline runs them: detect, track, (select),
backfill, (mesh), audit, seal, anonymise. Each is synchronous; the graph runtime gives each its own thread."""

from veil.stream.stages.anonymise import AnonymiseStage
from veil.stream.stages.audit import AuditStage
from veil.stream.stages.backfill import BackfillStage
from veil.stream.stages.detect import DetectStage
from veil.stream.stages.mesh import MeshStage
from veil.stream.stages.seal import SealStage
from veil.stream.stages.select import SelectStage
from veil.stream.stages.track import TrackStage

__all__ = ["AnonymiseStage", "AuditStage", "BackfillStage", "DetectStage", "MeshStage", "SealStage", "SelectStage", "TrackStage"]
