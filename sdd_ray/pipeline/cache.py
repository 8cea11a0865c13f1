"""Content-addressed stage outputs: `<out>/<stage>/<key>/`, finished when it holds a marker.

A stage's key is a hash of everything that determines its output: its own settings and the keys of
the stages it reads from. So a changed setting changes the key of that stage and of every stage
downstream of it (their upstream key changed), and nothing else; a finished stage (marker present)
is skipped; an interrupted one (directory present, no marker) is rerun in the same directory, where
the stage's own resume logic (distillation by row id, fine-tuning from its Ray Train checkpoint)
picks up what was already written.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from sdd_ray.io import write_json

MARKER = "_COMPLETE.json"
INPUTS = "_inputs.json"
KEY_LENGTH = 16


def canonical_json(value) -> str:
    """JSON with sorted keys and no whitespace: equal settings give equal text, hence equal keys."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def stage_key(stage: str, settings: dict, upstream: dict[str, str] | None = None) -> str:
    """The key of a `stage` run with `settings`, reading the outputs of `upstream` (name -> key)."""
    material = {"stage": stage, "settings": settings, "upstream": dict(sorted((upstream or {}).items()))}
    return hashlib.sha256(canonical_json(material).encode()).hexdigest()[:KEY_LENGTH]


@dataclass(frozen=True)
class StageUnit:
    """One run of one stage: what it is, where its output goes, and what it depends on."""

    stage: str
    """Stage name, the first directory level (`prune`, `distill`, `finetune`, ...)."""
    label: str
    """What this unit is, for people: `prune[bs=6]`, `finetune[sdd, bs=6]`."""
    settings: dict
    """The settings that determine the output (the stage config without upstream paths)."""
    upstream: dict[str, StageUnit] = field(default_factory=dict)
    """Units whose outputs this one reads, by role (`model`, `data`, ...)."""

    @property
    def key(self) -> str:
        return stage_key(self.stage, self.settings, {role: unit.key for role, unit in self.upstream.items()})


class StageCache:
    """The stage outputs under one run directory."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def dir(self, unit: StageUnit) -> Path:
        return self.root / unit.stage / unit.key

    def is_complete(self, unit: StageUnit) -> bool:
        return (self.dir(unit) / MARKER).is_file()

    def state(self, unit: StageUnit) -> str:
        """`done` (marker present), `partial` (started, not finished) or `new`."""
        if self.is_complete(unit):
            return "done"
        return "partial" if self.dir(unit).exists() else "new"

    def begin(self, unit: StageUnit) -> Path:
        """Create the unit's directory (kept if it exists: resume) and record what determined its key."""
        out = self.dir(unit)
        out.mkdir(parents=True, exist_ok=True)
        inputs = {
            "stage": unit.stage,
            "label": unit.label,
            "key": unit.key,
            "settings": unit.settings,
            "upstream": {role: {"label": u.label, "key": u.key} for role, u in unit.upstream.items()},
        }
        write_json(inputs, out / INPUTS)
        return out

    def complete(self, unit: StageUnit, result: dict, wall_s: float) -> None:
        """Mark the unit finished; its `result` and wall time are what a later run reuses."""
        marker = {"label": unit.label, "key": unit.key, "wall_s": wall_s, "finished_at": time.time(), "result": result}
        write_json(marker, self.dir(unit) / MARKER)

    def result(self, unit: StageUnit) -> dict:
        """The marker of a finished unit: {label, key, wall_s, finished_at, result}."""
        return json.loads((self.dir(unit) / MARKER).read_text())
