"""What every file connector shares: read a partner's export, check each record, publish its
events once, quarantine what cannot be published, and say what happened.

A partner connector is a :class:`Connector`: its agency and source system, a reader
(:class:`CsvReader` with declared columns, or :class:`JsonReader`) and a ``map`` function that
turns one :class:`Row` into the :class:`Emit` s (events) it stands for. The framework does the
rest (``connectors/README.md`` is the guide):

- **encoding**: UTF-8 with or without a BOM (UTF-16 with a BOM too). A file that is not UTF-8 is
  a clear error naming the first bad line and byte, unless the connector (or ``--encoding``)
  declares a fallback such as ``cp1252``: exports from Dutch and Italian desktops often are.
  Guessing silently would turn "Jiménez" into "JimÃ©nez" in every partner's view.
- **validation**: every field a ``map`` reads through :class:`Row` is checked; a record's
  reasons name the file, line and field (``export.csv:12: date_of_birth: '31/02/1990' is not a
  date (expected YYYY-MM-DD or DD/MM/YYYY)``); the events are validated against the catalogue
  before anything of the record is sent.
- **quarantine**: a rejected record goes, with its raw text and every reason, to a JSON-lines
  quarantine file; nothing is silently dropped. A file that cannot be read at all (missing
  columns, not UTF-8, empty) raises :class:`~hub.domain.errors.InputError` instead.
- **exactly once**: each event's ``event_id`` is deterministic (uuid5 of the agency, source
  system, event type and ``<entity>#<fingerprint of the content>``). A small local
  :class:`Ledger` (SQLite) remembers what was published, so a re-run counts those records as
  "skipped as already published" and sends nothing; the router drops any duplicate that still
  reaches it (a ledger lost or a crash between the broker's acknowledgement and the ledger's
  commit). The same entity with other content later is a **correction**: a new event with
  ``supersedes_event_id`` = the entity's last published event.
- **counts**: every record read is exactly one of published, rejected or skipped; the
  :class:`Summary` says so, with the events and corrections sent and the quarantine file.

:func:`run_file` processes one file; :func:`watch` processes a drop folder until told to stop.
"""

from __future__ import annotations

import bisect
import codecs
import csv
import datetime as dt
import decimal
import hashlib
import io
import json
import re
import shutil
import sqlite3
import sys
import time
import zoneinfo
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import structlog

from hub.domain.errors import InputError, ValidationError
from hub.publisher import Publisher, RecordSink
from hub.serde import wire

log = structlog.get_logger(__name__)

UTC = dt.UTC
BATCH_SIZE = 500  # records between flushes (the ledger is committed after each flush)
MAX_REASON = 500  # characters of one reason kept in the quarantine file
DATE_FORMATS = ("%Y-%m-%d", "%d/%m/%Y")
DATETIME_FORMATS = (
    "%Y-%m-%dT%H:%M:%S",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%d %H:%M",
    "%d/%m/%Y %H:%M:%S",
    "%d/%m/%Y %H:%M",
)
TRUE = frozenset({"y", "yes", "true", "1", "t", "j", "ja", "s", "si", "sì"})
FIRST_DAY, LAST_DAY = dt.date(1900, 1, 1), dt.date(2199, 12, 31)  # what a real record holds
FALSE = frozenset({"n", "no", "false", "0", "f", "nee"})


class RecordError(ValueError):
    """Raise from a ``map`` function to reject the record: ``field`` names the column or key."""

    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


# -- reading --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    """One record of an input file: where it starts, its raw text and what was parsed."""

    file: str
    line: int
    raw: str
    fields: Any = None  # CSV: {column: value}; JSON: the document; None when unparseable
    problem: str | None = None  # why it could not be parsed (the record is rejected)


def decode(data: bytes, name: str, fallback: str | None = None) -> tuple[str, str]:
    """The text of a file and the encoding used: UTF-8 (a BOM is dropped), UTF-16 with a BOM,
    else ``fallback`` when declared; otherwise an ``InputError`` naming the first bad byte."""
    if data.startswith(codecs.BOM_UTF8):
        data, bom = data[len(codecs.BOM_UTF8) :], "utf-8-sig"
    elif data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return data.decode("utf-16"), "utf-16"
        except UnicodeDecodeError as exc:
            raise InputError(f"{name}: starts with a UTF-16 byte order mark but {exc}") from None
    else:
        bom = "utf-8"
    try:
        return data.decode("utf-8"), bom
    except UnicodeDecodeError as exc:
        if fallback:
            try:
                return data.decode(fallback), fallback
            except (UnicodeDecodeError, LookupError) as again:
                raise InputError(f"{name}: neither UTF-8 nor {fallback}: {again}") from None
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise InputError(
            f"{name}:{line}: not UTF-8 (byte 0x{data[exc.start]:02x} at column {column}); "
            "re-export the file as UTF-8, or declare its encoding with --encoding "
            "(cp1252 or latin-1 for most Western European desktop exports)"
        ) from None


def normalise(header: str) -> str:
    """How column names are compared: case, spaces, hyphens and a stray BOM do not matter."""
    return "_".join(header.replace("\ufeff", "").replace("-", " ").casefold().split())


@dataclass(frozen=True)
class Column:
    """A declared input column. ``aliases`` are other headers meaning the same (another
    language, an older export); a ``required`` column missing from the header fails the file."""

    name: str
    required: bool = True
    aliases: tuple[str, ...] = ()
    doc: str = ""

    def names(self) -> set[str]:
        return {normalise(self.name), *(normalise(a) for a in self.aliases)}


class Reader(Protocol):
    def records(self, text: str, name: str) -> Iterator[Record]: ...


@dataclass(frozen=True)
class CsvReader:
    """A CSV file with a header row. The delimiter is the one of ``delimiters`` under which the
    header names the most declared columns. Values are stripped; an empty value is ``None``.
    Columns not declared are ignored (the summary warns about them)."""

    columns: tuple[Column, ...]
    delimiters: str = ",;\t|"

    def header(self, text: str, name: str) -> tuple[str, list[str | None], list[str]]:
        """(delimiter, the declared column name of each header cell or None, warnings)."""
        first = text.split("\n", 1)[0].rstrip("\r")
        if not first.strip():
            raise InputError(f"{name}: empty file (expected a header line naming the columns)")
        lookup = {n: c.name for c in self.columns for n in c.names()}
        best: tuple[int, str, list[str]] = (-1, ",", [])
        for d in self.delimiters:
            try:
                cells = next(csv.reader([first], delimiter=d))
            except csv.Error:
                continue
            known = sum(normalise(c) in lookup for c in cells)
            if known > best[0]:
                best = (known, d, cells)
        _, delimiter, cells = best
        mapped = [lookup.get(normalise(c)) for c in cells]
        missing = [c.name for c in self.columns if c.required and c.name not in mapped]
        if missing:
            raise InputError(
                f"{name}:1: missing column{'s' if len(missing) > 1 else ''} "
                f"{', '.join(missing)} (the header has {', '.join(cells) or 'nothing'}; "
                f"expected {', '.join(c.name for c in self.columns)})"
            )
        seen: set[str] = set()
        for cell, column in zip(cells, mapped, strict=True):
            if column in seen:
                raise InputError(f"{name}:1: column {column} appears twice (as {cell!r})")
            if column:
                seen.add(column)
        warnings = [
            f"{name}: column {c!r} ignored"
            for c, m in zip(cells, mapped, strict=True)
            if m is None and c.strip()
        ]
        return delimiter, mapped, warnings

    def records(self, text: str, name: str) -> Iterator[Record]:
        delimiter, mapped, _ = self.header(text, name)
        stream = io.StringIO(text, newline="")
        stream.readline()  # the header
        buffered: list[str] = []

        def feed() -> Iterator[str]:
            for line in iter(stream.readline, ""):
                buffered.append(line)
                yield line

        lines = feed()
        reader = csv.reader(lines, delimiter=delimiter, strict=True)
        line_no = 2  # the header was line 1
        while True:
            buffered.clear()
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield Record(name, line_no, "".join(buffered), None, f"not valid CSV: {exc}")
                line_no += max(1, len(buffered))
                reader = csv.reader(lines, delimiter=delimiter, strict=True)
                continue
            start, line_no, raw = line_no, line_no + max(1, len(buffered)), "".join(buffered)
            if not any(c.strip() for c in cells):
                continue  # a blank line is not a record
            if len(cells) != len(mapped):
                yield Record(
                    name,
                    start,
                    raw,
                    None,
                    f"{len(cells)} fields where the header has {len(mapped)}",
                )
                continue
            fields = {m: (v.strip() or None) for m, v in zip(mapped, cells, strict=True) if m}
            yield Record(name, start, raw, fields)


@dataclass(frozen=True)
class JsonReader:
    """JSON documents: a JSON array of objects, one object, or JSON lines (``.jsonl``). With
    ``items``, a top-level object's list under that key (``{"cases": [...]}``). A document that
    does not parse is a rejected record; reading carries on at the next line."""

    items: str | None = None

    def records(self, text: str, name: str) -> Iterator[Record]:
        if not text.strip():
            raise InputError(f"{name}: empty file (expected JSON documents)")
        decoder = json.JSONDecoder()
        pos, n = 0, len(text)

        newlines = [i for i, ch in enumerate(text) if ch == "\n"]

        def line_of(p: int) -> int:
            return bisect.bisect_left(newlines, p) + 1

        def skip(p: int) -> int:
            while p < n and text[p] in " \t\r\n,":
                p += 1
            return p

        pos = skip(pos)
        if text.startswith("[", pos):
            yield from self._array(text, name, pos + 1, decoder, line_of)
            return
        while pos < n:
            try:
                doc, end = decoder.raw_decode(text, pos)
            except (json.JSONDecodeError, RecursionError) as exc:
                end = text.find("\n", pos)
                end = n if end < 0 else end + 1
                yield Record(name, line_of(pos), text[pos:end], None, f"not valid JSON: {exc}")
                pos = skip(end)
                continue
            if self.items and isinstance(doc, dict) and isinstance(doc.get(self.items), list):
                starts = _item_starts(text, pos, self.items, decoder)
                for i, item in enumerate(doc[self.items]):
                    yield self._record(name, line_of(starts[i] if starts else pos), item)
            else:
                yield self._record(name, line_of(pos), doc, text[pos:end])
            pos = skip(end)

    def _array(
        self,
        text: str,
        name: str,
        pos: int,
        decoder: json.JSONDecoder,
        line_of: Callable[[int], int],
    ) -> Iterator[Record]:
        n = len(text)
        while True:
            while pos < n and text[pos] in " \t\r\n,":
                pos += 1
            if pos >= n:
                yield Record(
                    name, line_of(pos), "", None, "not valid JSON: the array is not closed"
                )
                return
            if text[pos] == "]":
                rest = text[pos + 1 :].strip()
                if rest:
                    yield Record(
                        name,
                        line_of(pos + 1),
                        rest[:2000],
                        None,
                        "not valid JSON: text after the closing ]",
                    )
                return
            try:
                doc, end = decoder.raw_decode(text, pos)
            except (json.JSONDecodeError, RecursionError) as exc:
                yield Record(
                    name,
                    line_of(pos),
                    text[pos:][:2000],
                    None,
                    f"not valid JSON: {exc}; the rest of the array cannot be read",
                )
                return
            yield self._record(name, line_of(pos), doc, text[pos:end])
            pos = end

    @staticmethod
    def _record(name: str, line: int, doc: Any, raw: str | None = None) -> Record:
        raw = raw if raw is not None else json.dumps(doc, ensure_ascii=False, default=str)
        if not isinstance(doc, dict):
            return Record(name, line, raw, None, f"a {type(doc).__name__}, not a JSON object")
        return Record(name, line, raw, doc)


def _item_starts(text: str, pos: int, key: str, decoder: json.JSONDecoder) -> list[int] | None:
    """Where each item of the list under ``key`` starts, in the valid JSON object at ``pos``
    (so that a rejected item is reported at its own line, not the object's); None if not found."""
    ws = " \t\r\n"

    def skip(p: int, chars: str = ws) -> int:
        while p < len(text) and text[p] in chars:
            p += 1
        return p

    starts: list[int] | None = None
    p = skip(pos) + 1  # past "{"
    while True:
        p = skip(p, ws + ",")
        if p >= len(text) or text[p] == "}":
            return starts
        name, p = decoder.raw_decode(text, p)
        p = skip(skip(p) + 1)  # past ":"
        if name == key and text.startswith("[", p):
            starts, p = [], skip(p + 1)
            while not text.startswith("]", p):
                starts.append(p)
                _, p = decoder.raw_decode(text, p)
                p = skip(p, ws + ",")
            p += 1
        else:
            _, p = decoder.raw_decode(text, p)


# -- one row --------------------------------------------------------------------------------


class Row:
    """The parsed fields of one record, with checked accessors. An accessor that finds a bad
    value notes a reason (naming the field) and returns ``None``, so one pass over a record
    reports every problem it has; the framework rejects a record with any reason."""

    def __init__(self, record: Record) -> None:
        self.record = record
        self.fields: Mapping[str, Any] = record.fields or {}
        self.errors: list[tuple[str | None, str]] = []

    @property
    def where(self) -> str:
        return f"{self.record.file}:{self.record.line}"

    def error(self, field: str | None, message: str) -> None:
        self.errors.append((field, message))

    def get(self, key: str) -> Any:
        """The raw value of a column, or of a dotted path into a JSON document."""
        value: Any = self.fields
        for part in key.split("."):
            if not isinstance(value, Mapping):
                return None
            value = value.get(part)
        if isinstance(value, str):
            value = value.strip() or None
        return value

    def _bad(self, field: str | None, message: str) -> Any:
        """Note a problem; the accessor's value is then None."""
        self.error(field, message)
        return None

    def _absent(self, key: str, required: bool) -> Any:
        if required:
            self.error(key, "is empty (required)")
        return None

    def text(self, key: str, required: bool = False, max_len: int = 500) -> str | None:
        value = self.get(key)
        if value is None:
            return self._absent(key, required)
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            return self._bad(key, f"expected text, got {_quote(value)}")
        value = str(value)
        if len(value) > max_len:
            return self._bad(key, f"is {len(value)} characters long (at most {max_len})")
        if _CONTROL.search(value):
            return self._bad(key, f"{_quote(value)} holds control or replacement characters")
        return value

    def date(
        self, key: str, required: bool = False, formats: Sequence[str] = DATE_FORMATS
    ) -> dt.date | None:
        value = self.text(key, required, max_len=40)
        if value is None:
            return None
        for f in formats:
            try:
                day = dt.datetime.strptime(value, f).date()
            except ValueError:
                continue
            if FIRST_DAY <= day <= LAST_DAY:
                return day
            return self._bad(key, f"{_quote(value)} is out of range ({FIRST_DAY} to {LAST_DAY})")
        shown = " or ".join(
            f.replace("%Y", "YYYY").replace("%m", "MM").replace("%d", "DD") for f in formats
        )
        return self._bad(key, f"{_quote(value)} is not a date (expected {shown})")

    def datetime(
        self, key: str, zone: str, required: bool = False, formats: Sequence[str] = DATETIME_FORMATS
    ) -> dt.datetime | None:
        """A local date and time in ``zone`` (an ISO value with an offset keeps its offset)."""
        value = self.text(key, required, max_len=40)
        if value is None:
            return None
        parsed: dt.datetime | None = None
        try:
            parsed = dt.datetime.fromisoformat(value)
        except ValueError:
            for f in formats:
                try:
                    parsed = dt.datetime.strptime(value, f)
                    break
                except ValueError:
                    continue
        if parsed is None or not FIRST_DAY <= parsed.date() <= LAST_DAY:
            return self._bad(
                key,
                f"{_quote(value)} is not a date and time "
                "(expected YYYY-MM-DDTHH:MM or DD/MM/YYYY HH:MM)",
            )
        if parsed.tzinfo is not None:
            return parsed.astimezone(UTC)
        return parsed.replace(tzinfo=zoneinfo.ZoneInfo(zone)).astimezone(UTC)

    def integer(
        self, key: str, required: bool = False, low: int | None = None, high: int | None = None
    ) -> int | None:
        value = self.get(key)
        if value is None:
            return self._absent(key, required)
        try:
            if isinstance(value, bool) or isinstance(value, float) and not value.is_integer():
                raise ValueError
            number = int(value)
        except (TypeError, ValueError, OverflowError):
            return self._bad(key, f"{_quote(value)} is not a whole number")
        if (low is not None and number < low) or (high is not None and number > high):
            return self._bad(key, f"{number} is out of range ({low} to {high})")
        return number

    def money(self, key: str, required: bool = False, high: int = 10**9) -> decimal.Decimal | None:
        """An amount with at most two decimals; "£1,250.50" and "1250.5" are accepted."""
        value = self.text(key, required, max_len=30)
        if value is None:
            return None
        cleaned = value.replace(",", "").replace("£", "").replace("€", "").strip()
        try:
            amount = decimal.Decimal(cleaned)
            if not amount.is_finite() or amount.as_tuple().exponent < -2:  # type: ignore[operator]
                raise decimal.InvalidOperation
        except decimal.InvalidOperation:
            return self._bad(key, f"{_quote(value)} is not an amount (expected e.g. 1250.50)")
        if not 0 <= amount < high:
            return self._bad(key, f"{_quote(value)} is out of range (0 to {high})")
        return amount.quantize(decimal.Decimal("0.01"))

    def flag(self, key: str, required: bool = False) -> bool | None:
        value = self.get(key)
        if value is None:
            return self._absent(key, required)
        if isinstance(value, bool):
            return value
        text = str(value).strip().casefold()
        if text in TRUE:
            return True
        if text in FALSE:
            return False
        return self._bad(key, f"{_quote(value)} is not a yes/no flag (expected Y or N)")

    def code(self, key: str, codes: Mapping[str, str], required: bool = False) -> str | None:
        """A source code translated to the hub's code (compared without case or spaces)."""
        value = self.text(key, required, max_len=100)
        if value is None:
            return None
        hub_code = _normalised(codes).get(normalise(value))
        if hub_code is None:
            accepted = ", ".join(sorted(codes))
            return self._bad(key, f"{_quote(value)} is not a known code (expected {accepted})")
        return hub_code


def code_table(hub_codes: Iterable[str], **source_codes: str) -> dict[str, str]:
    """A code table for :meth:`Row.code`: every hub code as itself, plus the source system's own
    codes (``M="male"``); compared without case or spaces."""
    return {**{code: code for code in hub_codes}, **source_codes}


_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffd]")
_CODE_TABLES: dict[int, tuple[Mapping[str, str], dict[str, str]]] = {}


def _normalised(codes: Mapping[str, str]) -> dict[str, str]:
    """A code table keyed by normalised source code (built once per table)."""
    entry = _CODE_TABLES.get(id(codes))
    if entry is None or entry[0] is not codes:
        entry = (codes, {normalise(k): v for k, v in codes.items()})
        _CODE_TABLES[id(codes)] = entry
    return entry[1]


def _quote(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def local_midnight(day: dt.date, zone: str) -> dt.datetime:
    """The start of ``day`` in ``zone``, in UTC: the ``occurred_at`` of a date-only fact."""
    return dt.datetime.combine(day, dt.time(), zoneinfo.ZoneInfo(zone)).astimezone(UTC)


# -- events ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Emit:
    """One event a record stands for. ``entity`` names the fact within the source (e.g.
    ``nominal/N123/cohort-entry/2015-09-01``); the same entity with other content later
    corrects it. Everything that goes into the event's bytes must come from the record (never
    from today's date), so that the same record always gives the same bytes."""

    event_type: str
    entity: str
    subject: Mapping[str, Any]
    occurred_at: dt.datetime
    payload: Mapping[str, Any]
    effective_date: dt.date | None = None
    sensitivity: str = "standard"
    compartment: str | None = None
    consent_ref: str | None = None
    responsible_org: str | None = None
    correction_reason: str | None = None  # used when this turns out to correct an earlier event

    def fingerprint(self) -> str:
        """The content's hash (the subject aside: an identifier the source learns later does
        not correct the facts already published)."""
        content = {
            "event_type": self.event_type,
            "occurred_at": self.occurred_at.isoformat(),
            "effective_date": self.effective_date,
            "payload": self.payload,
            "options": [self.sensitivity, self.compartment, self.consent_ref, self.responsible_org],
        }
        text = json.dumps(content, sort_keys=True, default=str, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Connector:
    """A partner's file connector. ``map`` turns one row into its events (or notes errors on
    the row / raises :class:`RecordError`). ``fallback_encoding`` is used only for a file that is
    not UTF-8, and said in the summary; None makes such a file an error."""

    name: str
    agency: str
    source_system: str
    jurisdiction: str
    reader: Reader
    map: Callable[[Row], Iterable[Emit]]
    patterns: tuple[str, ...] = ("*.csv",)
    fallback_encoding: str | None = None
    correction_reason: str = "other"
    description: str = ""

    def run(
        self,
        path: str | Path,
        publisher: Publisher,
        ledger: Ledger | str | Path | None = None,
        **options: Any,
    ) -> Summary:
        """Publish one input file (``run_file``; ``options``: ``quarantine_dir``, ``encoding``,
        ``progress``). ``ledger``: a Ledger or its path; None keeps one in memory for this run
        only (a re-run then re-sends, and the router drops the duplicates)."""
        book = ledger if isinstance(ledger, Ledger) else Ledger(ledger or ":memory:")
        try:
            return run_file(self, path, publisher, book, **options)
        finally:
            if book is not ledger:
                book.close()


# -- the ledger -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Published:
    event_id: str
    entity: str
    fingerprint: str


class Ledger:
    """What this connector has published, per topic: event ids and, per entity, its latest
    event and fingerprint. SQLite, beside the connector; committed only after the broker has
    acknowledged the events (so it never claims what the broker does not have). One process
    uses a ledger at a time (it is read into memory once per topic)."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS published (topic TEXT NOT NULL, event_id TEXT NOT NULL,"
            " entity TEXT NOT NULL, fingerprint TEXT NOT NULL, file TEXT, line INTEGER,"
            " at TEXT NOT NULL, PRIMARY KEY (topic, event_id))"
        )
        self.db.commit()
        self._cache: dict[str, tuple[set[str], dict[str, Published]]] = {}

    def _load(self, topic: str) -> tuple[set[str], dict[str, Published]]:
        """The topic's ids and each entity's latest event, read once (a night's export asks
        about every one of them)."""
        if topic not in self._cache:
            ids: set[str] = set()
            latest: dict[str, Published] = {}
            rows = self.db.execute(
                "SELECT event_id, entity, fingerprint FROM published WHERE topic = ?"
                " ORDER BY rowid",
                (topic,),
            )
            for event_id, entity, fingerprint in rows:
                ids.add(event_id)
                latest[entity] = Published(event_id, entity, fingerprint)
            self._cache[topic] = (ids, latest)
        return self._cache[topic]

    def has(self, topic: str, event_id: str) -> bool:
        return event_id in self._load(topic)[0]

    def latest(self, topic: str, entity: str) -> Published | None:
        return self._load(topic)[1].get(entity)

    def add(self, topic: str, entries: Iterable[tuple[Published, str, int]]) -> None:
        entries = list(entries)
        at = dt.datetime.now(UTC).isoformat()
        self.db.executemany(
            "INSERT OR IGNORE INTO published VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(topic, p.event_id, p.entity, p.fingerprint, f, line, at) for p, f, line in entries],
        )
        self.db.commit()
        ids, latest = self._load(topic)
        for p, _, _ in entries:
            ids.add(p.event_id)
            latest[p.entity] = p

    def count(self, topic: str) -> int:
        return int(
            self.db.execute("SELECT count(*) FROM published WHERE topic = ?", (topic,)).fetchone()[
                0
            ]
        )

    def close(self) -> None:
        self.db.close()


# -- summary and quarantine -----------------------------------------------------------------


@dataclass
class Summary:
    """What one run did. ``read == published + rejected + skipped`` always: a record is
    published when at least one of its events was sent, skipped when all of them had been
    (or it stands for none), rejected when it went to the quarantine."""

    files: int = 0
    read: int = 0
    published: int = 0
    rejected: int = 0
    skipped: int = 0
    events: int = 0
    corrections: int = 0
    failed_files: int = 0
    quarantine: list[str] = field(default_factory=list)
    encodings: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def adds_up(self) -> bool:
        return self.read == self.published + self.rejected + self.skipped

    def __add__(self, other: Summary) -> Summary:
        return Summary(
            self.files + other.files,
            self.read + other.read,
            self.published + other.published,
            self.rejected + other.rejected,
            self.skipped + other.skipped,
            self.events + other.events,
            self.corrections + other.corrections,
            self.failed_files + other.failed_files,
            self.quarantine + other.quarantine,
            self.encodings + other.encodings,
            self.warnings + other.warnings,
        )

    def line(self) -> str:
        text = (
            f"read {self.read}, published {self.published}, rejected {self.rejected}, "
            f"skipped as already published {self.skipped}; {self.events} events sent "
            f"({self.corrections} corrections)"
        )
        if self.files != 1 or self.failed_files:
            text = f"{self.files} files ({self.failed_files} failed): " + text
        if self.quarantine:
            text += f"; quarantine: {', '.join(self.quarantine)}"
        return text

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


class Quarantine:
    """The JSON-lines file of one input's rejected records, created at the first rejection."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._out: io.TextIOWrapper | None = None
        self.count = 0

    def add(self, record: Record, reasons: Sequence[str], fields: Sequence[str | None]) -> None:
        if self._out is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._out = self.path.open("w", encoding="utf-8")
        entry = {
            "file": record.file,
            "line": record.line,
            "raw": record.raw,
            "fields": sorted({f for f in fields if f}),
            "reasons": [r[:MAX_REASON] for r in reasons],
        }
        self._out.write(json.dumps(entry, ensure_ascii=False) + "\n")
        self.count += 1

    def close(self) -> str | None:
        if self._out is None:
            return None
        self._out.close()
        return str(self.path)


def read_quarantine(path: str | Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


# -- processing -----------------------------------------------------------------------------

ProgressFn = Callable[[int, int], None]  # (records read so far, estimated total)


@dataclass
class _Pending:
    published: Published
    file: str
    line: int


class Processor:
    """Turns records into published events for one connector and publisher. ``process`` takes
    one record and returns how it ended ("published", "skipped" or "rejected"); ``commit``
    flushes the producer and records the batch in the ledger."""

    def __init__(
        self,
        connector: Connector,
        publisher: Publisher,
        ledger: Ledger,
        quarantine: Quarantine | None = None,
    ) -> None:
        if (publisher.agency, publisher.source_system) != (
            connector.agency,
            connector.source_system,
        ):
            raise InputError(
                f"connector {connector.name} publishes as {connector.agency}/"
                f"{connector.source_system}, the publisher is {publisher.agency}/"
                f"{publisher.source_system}"
            )
        self.connector = connector
        self.publisher = publisher
        self.ledger = ledger
        self.quarantine = quarantine
        self.topic = publisher.topic
        self.pending: dict[str, _Pending] = {}  # event_id -> not yet in the ledger
        self.pending_entity: dict[str, Published] = {}
        self.in_file: dict[str, tuple[str, int]] = {}  # entity -> (fingerprint, line)
        self.summary = Summary()

    def start_file(self, quarantine: Quarantine | None) -> None:
        self.quarantine = quarantine
        self.in_file.clear()

    def _latest(self, entity: str) -> Published | None:
        return self.pending_entity.get(entity) or self.ledger.latest(self.topic, entity)

    def _reject(self, record: Record, problems: Sequence[tuple[str | None, str]]) -> str:
        reasons = [f"{record.file}:{record.line}: {f + ': ' if f else ''}{m}" for f, m in problems]
        for reason in reasons:
            log.info("record_rejected", connector=self.connector.name, reason=reason[:200])
        if self.quarantine is None:
            raise InputError(reasons[0])
        self.quarantine.add(record, reasons, [f for f, _ in problems])
        self.summary.rejected += 1
        return "rejected"

    def process(self, record: Record) -> str:
        self.summary.read += 1
        if record.problem is not None:
            return self._reject(record, [(None, record.problem)])
        row = Row(record)
        try:
            emits = list(self.connector.map(row))
        except RecordError as exc:
            row.error(exc.field, exc.message)
            emits = []
        except Exception as exc:  # the top of the per-record loop: nothing may stop the file
            log.exception("connector_map_failed", connector=self.connector.name)
            row.error(
                None,
                f"internal error in the {self.connector.name} mapping: {type(exc).__name__}: {exc}",
            )
        if row.errors:
            return self._reject(record, row.errors)
        built: list[tuple[dict[str, Any] | None, Published]] = []
        problems: list[tuple[str | None, str]] = []
        for emit in emits:
            try:
                built.append(self._build(emit))
            except RecordError as exc:
                problems.append((exc.field, exc.message))
            except ValidationError as exc:
                problems.append((exc.field, str(exc)))
        fresh = [(e, p) for e, p in built if e is not None and not self._published(p.event_id)]
        for event, _ in fresh:  # what was published before was valid: check only what is new
            try:
                self.publisher.validate(event)
            except ValidationError as exc:
                problems.append((exc.field, str(exc)))
        if problems:
            return self._reject(record, problems)
        for event, p in fresh:
            self._send(event)
            self.pending[p.event_id] = _Pending(p, record.file, record.line)
            self.pending_entity[p.entity] = p
            self.summary.events += 1
            self.summary.corrections += bool(event["envelope"]["supersedes_event_id"])
        for _, p in built:
            self.in_file.setdefault(p.entity, (p.fingerprint, record.line))
        if fresh:
            self.summary.published += 1
            return "published"
        self.summary.skipped += 1
        return "skipped"

    def _published(self, event_id: str) -> bool:
        return event_id in self.pending or self.ledger.has(self.topic, event_id)

    def _build(self, emit: Emit) -> tuple[dict[str, Any] | None, Published]:
        """The event of ``emit``, or None when it is its entity's latest published version.
        The source key is ``<entity>#<fingerprint>``, and for a correction also ``<`` the id it
        supersedes (so that a value changed back later is a correction again, not the first
        event's id)."""
        entity = f"{emit.event_type}|{emit.entity}"
        fingerprint = emit.fingerprint()
        earlier = self.in_file.get(entity)
        if earlier is not None and earlier[0] != fingerprint:
            raise RecordError(
                None,
                f"duplicate: {emit.entity} ({emit.event_type}) is already at line {earlier[1]} "
                "of this file with other values; one of the two is wrong",
            )
        latest = self._latest(entity)
        if latest is not None and latest.fingerprint == fingerprint:
            return None, latest  # the entity's current version: published already
        supersedes = latest.event_id if latest else None
        source_key = f"{emit.entity}#{fingerprint}" + (f"<{supersedes}" if supersedes else "")
        event = self.publisher.build(
            emit.event_type,
            source_key=source_key,
            subject=emit.subject,
            occurred_at=emit.occurred_at,
            payload=emit.payload,
            effective_date=emit.effective_date,
            sensitivity=emit.sensitivity,
            compartment=emit.compartment,
            consent_ref=emit.consent_ref,
            responsible_org=emit.responsible_org,
            supersedes_event_id=supersedes,
            correction_reason=(emit.correction_reason or self.connector.correction_reason)
            if supersedes
            else None,
        )
        return event, Published(str(event["envelope"]["event_id"]), entity, fingerprint)

    def _send(self, event: dict[str, Any]) -> None:
        """``Publisher.publish`` for an event already validated (``publish`` would validate it
        twice more: the schema check is most of a connector's time on a large file)."""
        p = self.publisher
        sealed: list[tuple[str, bytes]] = []
        if p.fields is not None:  # field encryption on: sensitive values travel sealed
            event, sealed = p.fields.seal(event)
        envelope = event["envelope"]
        name = p.catalogue.name_for(envelope["event_type"])
        value = wire.frame(
            p.codec.schema_id(name), wire.encode_body(p.catalogue.parsed(name), event)
        )
        key = envelope["subject"]["local_id"].encode()
        p.sink.send(p.topic, key, value,
                    [("event_type", envelope["event_type"].encode()), *sealed])  # fmt: skip
        p.published += 1

    def commit(self) -> None:
        """Wait for the broker to acknowledge everything sent, then record it in the ledger."""
        if not self.pending:
            return
        self.publisher.flush()
        self.ledger.add(self.topic, [(p.published, p.file, p.line) for p in self.pending.values()])
        self.pending.clear()
        self.pending_entity.clear()


def quarantine_path(directory: Path, input_path: Path) -> Path:
    stamp = dt.datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    return directory / f"{input_path.name}.{stamp}.rejected.jsonl"


def run_file(
    connector: Connector,
    path: str | Path,
    publisher: Publisher,
    ledger: Ledger,
    *,
    quarantine_dir: str | Path | None = None,
    encoding: str | None = None,
    progress: ProgressFn | None = None,
    batch_size: int = BATCH_SIZE,
) -> Summary:
    """Process one input file. Rejected records go to ``quarantine_dir`` (default: a
    ``quarantine/`` folder beside the input). ``encoding`` forces one (e.g. ``cp1252``);
    otherwise UTF-8, or the connector's declared fallback. Raises ``InputError`` when the file
    cannot be read at all; the broker's failures are raised (``InfraError``), never swallowed."""
    path = Path(path)
    processor = Processor(connector, publisher, ledger)
    qdir = Path(quarantine_dir) if quarantine_dir else path.parent / "quarantine"
    return _run(processor, path, qdir, encoding, progress, batch_size)


def _run(
    processor: Processor,
    path: Path,
    qdir: Path,
    encoding: str | None,
    progress: ProgressFn | None,
    batch_size: int,
) -> Summary:
    connector = processor.connector
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if encoding:
        try:
            text, used = data.removeprefix(codecs.BOM_UTF8).decode(encoding), encoding
        except (UnicodeDecodeError, LookupError) as exc:
            raise InputError(f"{path.name}: not {encoding}: {exc}") from None
    else:
        text, used = decode(data, path.name, connector.fallback_encoding)
    before = processor.summary
    processor.summary = Summary(files=1, encodings=[f"{path.name}: {used}"])
    if used not in ("utf-8", "utf-8-sig"):
        processor.summary.warnings.append(f"{path.name}: read as {used}, not UTF-8")
    if isinstance(connector.reader, CsvReader):
        processor.summary.warnings += connector.reader.header(text, path.name)[2]
    quarantine = Quarantine(quarantine_path(qdir, path))
    processor.start_file(quarantine)
    total = max(1, text.count("\n"))
    log.info("connector_file_started", connector=connector.name, file=path.name, encoding=used)
    try:
        for record in connector.reader.records(text, path.name):
            processor.process(record)
            if processor.summary.read % batch_size == 0:
                processor.commit()
                if progress:
                    progress(processor.summary.read, total)
        processor.commit()
    finally:
        q = quarantine.close()
        if q:
            processor.summary.quarantine.append(q)
    summary = processor.summary
    processor.summary = before + summary
    if progress:
        progress(summary.read, summary.read)
    log.info(
        "connector_file_done",
        connector=connector.name,
        file=path.name,
        **{k: v for k, v in summary.as_dict().items() if isinstance(v, int)},
    )
    return summary


def watch(
    connector: Connector,
    directory: str | Path,
    publisher: Publisher,
    ledger: Ledger,
    should_stop: Callable[[], bool],
    *,
    encoding: str | None = None,
    poll_interval: float = 1.0,
    on_file: Callable[[Path, Summary | None, str | None], None] | None = None,
    progress: ProgressFn | None = None,
) -> Summary:
    """Process files dropped into ``directory`` (matching the connector's patterns; write them
    elsewhere and rename them in, or give them a ``.part`` name until complete) until
    ``should_stop()``. A processed file moves to ``done/``; one that cannot be read moves to
    ``failed/`` with ``<name>.error.txt`` beside it; rejected records go to ``quarantine/``.
    ``on_file(path, summary, error)`` is called after each file, in name order. A broker
    failure stops the loop (``InfraError``) and leaves the file where it is, for the next start
    (what was sent is sent again then, with the same ids, and the router drops the copies)."""
    directory = Path(directory)
    done, failed, qdir = directory / "done", directory / "failed", directory / "quarantine"
    for d in (done, failed, qdir):
        d.mkdir(parents=True, exist_ok=True)
    processor = Processor(connector, publisher, ledger)
    total = Summary()
    log.info("connector_watching", connector=connector.name, directory=str(directory))
    while not should_stop():
        files = sorted(
            {p for pattern in connector.patterns for p in directory.glob(pattern) if p.is_file()},
            key=lambda p: p.name,
        )
        for path in files:
            if should_stop():
                break
            if not path.exists():
                continue  # taken away since the listing
            try:
                summary = _run(processor, path, qdir, encoding, progress, BATCH_SIZE)
            except InputError as exc:
                target = _move(path, failed)
                target.with_name(target.name + ".error.txt").write_text(str(exc) + "\n")
                log.warning("connector_file_failed", file=path.name, error=str(exc))
                total = total + Summary(files=1, failed_files=1, warnings=[str(exc)])
                if on_file:
                    on_file(target, None, str(exc))
                continue
            target = _move(path, done)
            total = total + summary
            if on_file:
                on_file(target, summary, None)
        if not files:
            time.sleep(poll_interval)
    return total


def _move(path: Path, folder: Path) -> Path:
    target = folder / path.name
    if target.exists():
        target = folder / f"{path.stem}.{dt.datetime.now(UTC):%Y%m%dT%H%M%S%f}{path.suffix}"
    shutil.move(str(path), target)
    return target


# -- progress and wiring --------------------------------------------------------------------


def stderr_progress(every: int = 5000) -> ProgressFn:
    """A line on stderr every ``every`` records (a rich bar on a terminal: see
    :func:`default_progress`)."""
    last = [0]

    def show(read: int, total: int) -> None:
        if read - last[0] >= every or (read == total and read != last[0]):
            last[0] = read
            print(f"... {read} records read", file=sys.stderr, flush=True)

    return show


def default_progress() -> tuple[ProgressFn, Callable[[], None]]:
    """(progress function, stop): a rich progress bar when stderr is a terminal, else lines."""
    if not sys.stderr.isatty():
        return stderr_progress(), lambda: None
    from rich.progress import Progress

    bar = Progress(transient=True)
    task = bar.add_task("records", total=None)
    bar.start()

    def show(read: int, total: int) -> None:
        bar.update(task, completed=read, total=max(total, read))

    return show, bar.stop


def build_publisher(
    connector: Connector,
    bootstrap: str,
    registry_url: str,
    topic_prefix: str = "",
    sink: RecordSink | None = None,
    fields: Any = None,
) -> Publisher:
    """A Publisher on the real broker and registry for ``connector`` (or on ``sink``, e.g. a
    :class:`MemorySink` for a dry run); ``fields``, a ``hub.crypto.FieldCrypto``, seals the
    sensitive fields before they leave (field encryption on)."""
    from hub.adapters.kafka import SafeProducer, producer_config
    from hub.adapters.schema_registry import HttpSchemaRegistry
    from hub.serde.catalogue import Catalogue
    from hub.serde.codec import AvroCodec
    from hub.topics import Topics

    return Publisher(
        agency=connector.agency,
        source_system=connector.source_system,
        jurisdiction=connector.jurisdiction,
        codec=AvroCodec(Catalogue.load(), HttpSchemaRegistry(registry_url)),
        sink=sink or SafeProducer(producer_config(bootstrap)),
        topics=Topics(topic_prefix),
        fields=fields,
    )


class MemorySink:
    """A RecordSink that keeps what was sent, in memory: ``--dry-run``, and tests that check a
    connector's events without a broker."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes, Sequence[tuple[str, bytes]]]] = []

    def send(
        self, topic: str, key: bytes | None, value: bytes, headers: Sequence[tuple[str, bytes]] = ()
    ) -> None:
        self.sent.append((topic, key, value, headers))

    def flush(self, timeout: float = 60.0) -> None:
        return None


def default_state_dir(home: str | Path, connector: Connector) -> Path:
    """Where a connector keeps its ledger: ``$HUB_HOME/connectors/<name>/``."""
    return Path(home) / "connectors" / connector.name


__all__ = [
    "BATCH_SIZE",
    "Column",
    "Connector",
    "CsvReader",
    "Emit",
    "InputError",
    "JsonReader",
    "Ledger",
    "MemorySink",
    "Processor",
    "Quarantine",
    "Record",
    "RecordError",
    "Row",
    "Summary",
    "build_publisher",
    "code_table",
    "decode",
    "default_progress",
    "default_state_dir",
    "local_midnight",
    "read_quarantine",
    "run_file",
    "stderr_progress",
    "watch",
]
