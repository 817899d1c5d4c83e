"""Name similarity for identity candidates: only ever a proposal for a person to confirm.

:func:`name_key` normalises a name: diacritics folded (``José`` → ``jose``), case folded,
punctuation and hyphens as spaces, tokens sorted (so ``Jordan Smith`` and ``SMITH, Jordan`` are
the same key). :func:`similar` compares two keys: equal keys score 1.0; otherwise the whole keys
within a small edit distance (one edit per 6 characters, at least 1, at most 2) score below 1;
anything else is not similar (None). Dates of birth are compared by the caller (equal only).
"""

from __future__ import annotations

import re
import unicodedata

_SEPARATORS = re.compile(r"[^\w]+|_")


def name_key(name: str) -> str:
    """Folded, sorted tokens of ``name`` joined by one space."""
    folded = unicodedata.normalize("NFKD", name)
    folded = "".join(c for c in folded if not unicodedata.combining(c)).casefold()
    return " ".join(sorted(t for t in _SEPARATORS.split(folded) if t))


def edit_distance(a: str, b: str, limit: int) -> int:
    """Levenshtein distance of ``a`` and ``b``, or ``limit + 1`` once it must exceed ``limit``."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        if min(current) > limit:
            return limit + 1
        previous = current
    return previous[-1]


def similar(a: str, b: str) -> float | None:
    """1.0 for equal keys, a score in (0, 1) for keys a few edits apart, else None."""
    if not a or not b:
        return None
    if a == b:
        return 1.0
    limit = max(1, min(2, min(len(a), len(b)) // 6))
    distance = edit_distance(a, b, limit)
    if distance > limit:
        return None
    return round(1.0 - distance / max(len(a), len(b)), 3)
