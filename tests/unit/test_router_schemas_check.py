"""IN-4 (RELIABILITY.md B.2): `hub schemas check` refuses schemas that allow amplification.

An Avro array of items that encode to zero bytes lets 5 bytes claim 10^7 items (measured: 0.38 s
and a 10^7-element list per record; A6). The CLI runs as a subprocess on a copy of ``schemas/``
with one such field added (``--against`` the original, so the added field is a compatible
change and the amplification is the only problem): it must exit 1 and name the field. The
unchanged copy passes, so the failure is the added field's.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
HUB = REPO / ".venv" / "bin" / "hub"
EVENT = "CustodyReleased"

EMPTY = {"type": "record", "name": "hub.events.Nothing", "doc": "empty", "fields": []}
CASES: dict[str, tuple[Any, str]] = {
    # case: (the added field's type, what the message must say)
    "array_of_null": ({"type": "array", "items": "null"}, "array of null"),
    "array_of_empty_record": ({"type": "array", "items": EMPTY}, "empty record"),
    "array_of_zero_size_fixed": (
        {"type": "array", "items": {"type": "fixed", "name": "hub.events.Zero", "size": 0}},
        "zero-size fixed",
    ),
}


def _check(schemas: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(HUB), "schemas", "check", "--schemas", str(schemas), "--against",
         str(REPO / "schemas")],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )  # fmt: skip


def _copy_with_field(tmp_path: Path, name: str, field_type: Any) -> Path:
    copy = tmp_path / "schemas"
    shutil.copytree(REPO / "schemas", copy)
    path = copy / "events" / f"{EVENT}.avsc"
    schema = json.loads(path.read_text())
    # payload fields are nullable with a null default (the catalogue's rule), so the change is
    # compatible with the original and the amplification lint is what refuses it
    field = {"name": name, "type": ["null", field_type], "default": None,
             "doc": "an amplification risk"}  # fmt: skip
    schema["fields"].insert(-1, field)  # before `disclosure`, which stays last
    path.write_text(json.dumps(schema, indent=2))
    return copy


def test_the_unchanged_catalogue_passes(tmp_path: Path) -> None:
    copy = tmp_path / "schemas"
    shutil.copytree(REPO / "schemas", copy)
    result = _check(copy)
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.parametrize("case", sorted(CASES))
def test_an_array_of_zero_byte_items_fails_the_check_naming_the_field(
    tmp_path: Path, case: str
) -> None:
    field_type, what = CASES[case]
    result = _check(_copy_with_field(tmp_path, case, field_type))
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr[-2000:])
    lines = [line for line in result.stderr.splitlines() if "amplification" in line]
    assert lines, result.stderr[-2000:]
    assert any(f"hub.events.{EVENT}.{case}" in line and what in line for line in lines), lines


def test_a_nested_array_of_null_inside_a_record_field_is_named_by_its_path(
    tmp_path: Path,
) -> None:
    inner = {
        "type": "record", "name": "hub.events.Holder", "doc": "a holder",
        "fields": [{"name": "items", "type": ["null", {"type": "array", "items": "null"}],
                    "default": None, "doc": "nested"}],
    }  # fmt: skip
    result = _check(_copy_with_field(tmp_path, "holder", inner))
    assert result.returncode == 1, result.stderr[-2000:]
    assert f"hub.events.{EVENT}.holder.items: array of null allows amplification" in result.stderr
