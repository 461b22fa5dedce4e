"""What to tell the grower about each label: ``advice.json`` maps a label to its condition name,
what it is, and what to do.

Labels are matched exactly first, then loosely, so the same file serves a model trained on
PlantVillage folders (``Tomato___Early_blight``) and one trained on plain names (``Early_blight``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_ADVICE", "Advice", "AdviceBook", "AdviceError"]

DEFAULT_ADVICE = Path(__file__).resolve().parent / "advice.json"


class AdviceError(ValueError):
    """The advice file cannot be read or is not shaped as {label: {name, what, do}}."""


@dataclass(frozen=True)
class Advice:
    label: str
    name: str
    what: str
    do: list[str] = field(default_factory=list)
    known: bool = True

    def as_dict(self) -> dict[str, Any]:
        return {"label": self.label, "name": self.name, "what": self.what, "do": list(self.do), "known": self.known}


def _loose(label: str) -> str:
    s = label.lower()
    s = re.sub(r"^(tomato|plant)[_\s-]+", "", s)  # PlantVillage's "Tomato___" crop prefix
    return re.sub(r"[^a-z0-9]+", "", s)


class AdviceBook:
    def __init__(self, entries: dict[str, Advice]) -> None:
        self.entries = entries
        self._loose = {_loose(k): v for k, v in entries.items()}

    @classmethod
    def load(cls, path: str | Path = DEFAULT_ADVICE) -> AdviceBook:
        p = Path(path)
        try:
            raw = json.loads(p.read_text(encoding="utf-8"))
        except OSError as exc:
            raise AdviceError(f"{p}: cannot read the advice file ({exc.strerror})") from exc
        except ValueError as exc:
            raise AdviceError(f"{p}: not JSON ({exc})") from exc
        if not isinstance(raw, dict) or not raw:
            raise AdviceError(f"{p}: expected an object mapping each label to {{name, what, do}}")
        entries: dict[str, Advice] = {}
        for label, e in raw.items():
            if not (isinstance(e, dict) and isinstance(e.get("name"), str) and isinstance(e.get("what"), str)
                    and isinstance(e.get("do"), list) and all(isinstance(d, str) for d in e["do"])):
                raise AdviceError(f"{p}: entry {label!r} needs 'name' and 'what' (text) and 'do' (a list of text)")
            entries[label] = Advice(label, e["name"], e["what"], list(e["do"]))
        return cls(entries)

    def lookup(self, label: str) -> Advice:
        hit = self.entries.get(label) or self._loose.get(_loose(label))
        if hit is not None:
            return Advice(label, hit.name, hit.what, list(hit.do))
        return Advice(label, label.replace("_", " ").strip() or "unknown", "No advice on file for this label.",
                      [], known=False)

    def missing(self, labels: list[str]) -> list[str]:
        """Labels of a model that the file does not cover."""
        return [lb for lb in labels if not self.lookup(lb).known]
