"""`hub schemas register | check | list`: the catalogue in ``schemas/`` against a registry.

``check`` fails when a schema allows amplification (an array or map of zero-byte items) or when a
change to ``schemas/`` breaks compatibility with the registered version (the subject's configured
level, BACKWARD by default), or with another copy of the catalogue given by ``--against``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from hub.ports import SchemaRegistry
from hub.registry import compat
from hub.serde.catalogue import Catalogue
from hub.serde.lint import lint_schema


@dataclass
class CheckReport:
    checked: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def check(
    catalogue: Catalogue,
    *,
    registry: SchemaRegistry | None = None,
    against: Path | None = None,
    level: str = compat.DEFAULT_COMPATIBILITY,
) -> CheckReport:
    """Lint every event schema and compare it with the registered (or ``against``) version."""
    report = CheckReport()
    previous = Catalogue.load(against) if against is not None else None
    for name in catalogue.names():
        report.checked += 1
        schema_json = catalogue.canonical_json(name)
        source = catalogue.source_file(name)
        report.problems += [
            f"{source}: {problem}" for problem in lint_schema(catalogue.schema(name))
        ]
        if previous is not None:
            if name in previous.names():
                old = previous.canonical_json(name)
                problems = compat.check_compatibility(schema_json, [(1, old)], level)
                report.problems += [f"{source}: {problem}" for problem in problems]
        elif registry is not None:
            report.problems += [
                f"{source}: {problem}" for problem in registry.incompatibilities(name, schema_json)
            ]
    return report


def register(catalogue: Catalogue, registry: SchemaRegistry) -> dict[str, int]:
    """Register every event schema under its record name; return name → schema id."""
    return {
        name: registry.register(name, catalogue.canonical_json(name)) for name in catalogue.names()
    }
