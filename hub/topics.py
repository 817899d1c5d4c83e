"""Topic names: the external contract of DESIGN.md, with an optional prefix."""

from __future__ import annotations

import re
from dataclasses import dataclass

from hub.domain.errors import InputError

_NAME = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*$")


def check_name(kind: str, name: str) -> str:
    if not _NAME.match(name):
        raise InputError(f"{kind} {name!r} is not a valid name (lower case, digits, '_' and '.')")
    return name


@dataclass(frozen=True)
class Topics:
    prefix: str = ""

    def ingest(self, agency: str) -> str:
        return f"{self.prefix}ingest.{check_name('agency', agency)}"

    def dlq(self, agency: str) -> str:
        return f"{self.ingest(agency)}.dlq"

    def deliver(self, audience: str) -> str:
        return f"{self.prefix}deliver.{check_name('audience', audience)}"

    @property
    def audit(self) -> str:
        return f"{self.prefix}hub.audit"

    @property
    def identity(self) -> str:
        return f"{self.prefix}hub.identity"

    def agency_of_ingest(self, topic: str) -> str | None:
        """The agency whose ingest topic this is, or None for any other topic."""
        head = f"{self.prefix}ingest."
        if not topic.startswith(head) or topic.endswith(".dlq"):
            return None
        return topic[len(head) :]
