"""Load and check ``policies/``: the agency registry and one file per agreement.

Every problem is one line naming the file and the path inside it, quoting what was found and
saying what would be accepted, e.g.::

    policies/mals.yaml: clauses[2].fields.notes: unknown rule 'redcat' (expected keep, drop,
    mask, generalise, pseudonymise, summarise)

:func:`collect` returns every problem it finds (``hub policy check``); :func:`load_agreements`
raises the first as a :class:`~hub.domain.errors.PolicyError`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from hub.domain.errors import PolicyError
from hub.policy.agreements import AgreementSet, Candidate, expand_event_types
from hub.policy.fields import (
    FieldNode,
    covers,
    event_fields,
    find,
    rule_problem,
    summary_problem,
)
from hub.policy.model import (
    AGENCY_ID,
    AGENCY_KINDS,
    AUDIENCE_ID,
    CLAUSE_ID,
    COMPARTMENT_ID,
    EFFECTS,
    RULES,
    Agency,
    Agreement,
    Clause,
    Conditions,
    Retention,
    SummarySpec,
    frozen_map,
)
from hub.serde.catalogue import Catalogue

DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "policies"
AGENCIES_FILE = "agencies.yaml"
AGREEMENT_ID = re.compile(r"[a-z0-9][a-z0-9-]*")
DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
RETENTION = re.compile(r"P(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)D)?")

AGENCIES_KEYS = {"version", "agencies"}
AGENCY_KEYS = {
    "name",
    "jurisdiction",
    "kind",
    "description",
    "audiences",
    "valid_from",
    "valid_to",
    "superseded_by",
}
AGREEMENT_KEYS = {
    "id",
    "title",
    "version",
    "jurisdiction",
    "owner",
    "parties",
    "legal_basis",
    "purpose",
    "valid_from",
    "valid_to",
    "retention",
    "description",
    "clauses",
}
CLAUSE_KEYS = {
    "id",
    "description",
    "effect",
    "event_types",
    "from_agencies",
    "to_audiences",
    "purpose",
    "legal_basis",
    "conditions",
    "compartment",
    "fields",
    "summaries",
    "retention",
    "consent_based",
    "consent_scope",
    "grants_identifiers",
}
CONDITION_KEYS = {
    "in_cohort",
    "open_referral",
    "supervisor",
    "mentor_assigned",
    "addressed_to",
    "where",
    "sensitivities",
    "any_of",
}
SUMMARY_KEYS = {"keep", "where", "text"}


# ---------------------------------------------------------------------------------------------
# YAML: no implicit dates (we parse them, with a clear error), booleans only true/false,
# duplicate keys refused.
# ---------------------------------------------------------------------------------------------


class _YamlLoader(yaml.SafeLoader):
    pass


_YamlLoader.yaml_implicit_resolvers = {
    first: [
        (tag, rx)
        for tag, rx in resolvers
        if tag not in ("tag:yaml.org,2002:timestamp", "tag:yaml.org,2002:bool")
    ]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)


class _DuplicateKey(yaml.YAMLError):
    pass


def _mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    out: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in out:
            raise _DuplicateKey(f"line {key_node.start_mark.line + 1}: duplicate key {key!r}")
        out[key] = loader.construct_object(value_node, deep=True)
    return out


_YamlLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


class _Bad(Exception):
    """One problem at ``path`` of the file being checked."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)


def _quote_list(items: Any) -> str:
    return ", ".join(str(i) for i in items)


# ---------------------------------------------------------------------------------------------
# Small typed readers
# ---------------------------------------------------------------------------------------------


def _keys(where: str, value: Any, allowed: set[str], required: tuple[str, ...] = ()) -> dict:
    if not isinstance(value, dict):
        raise _Bad(where, f"expected a mapping, found {type(value).__name__}")
    for key in value:
        if key not in allowed:
            raise _Bad(
                f"{where}.{key}" if where else str(key),
                f"unknown key {key!r} (expected {_quote_list(sorted(allowed))})",
            )
    for key in required:
        if value.get(key) is None:
            raise _Bad(f"{where}.{key}" if where else key, "is required")
    return value


def _text(where: str, value: Any, *, required: bool = True) -> str:
    if value is None and not required:
        return ""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise _Bad(where, f"expected text, found {value!r}")
    text = str(value).strip()
    if required and not text:
        raise _Bad(where, "must not be empty")
    return text


def _date(where: str, value: Any, *, required: bool = True) -> dt.date | None:
    if value is None:
        if required:
            raise _Bad(where, "is required (a date, YYYY-MM-DD)")
        return None
    text = str(value)
    if not DATE.fullmatch(text):
        raise _Bad(where, f"bad date {value!r} (expected YYYY-MM-DD)")
    try:
        return dt.date.fromisoformat(text)
    except ValueError as exc:
        raise _Bad(where, f"bad date {value!r} ({exc}; expected YYYY-MM-DD)") from None


def _bool(where: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Bad(where, f"expected true or false, found {value!r}")
    return value


def _list(where: str, value: Any) -> list[Any]:
    """A list, or one scalar taken as a list of one."""
    if value is None:
        return []
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        raise _Bad(where, "expected a list, found a mapping")
    return [value]


def _retention(where: str, value: Any) -> Retention | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return Retention(days=value)
    match = RETENTION.fullmatch(str(value))
    if not match or not any(match.groups()):
        raise _Bad(
            where,
            f"bad retention {value!r} (expected a duration like P2Y, P6M, P30D or a "
            "number of days)",
        )
    years, months, days = (int(g or 0) for g in match.groups())
    return Retention(years, months, days)


# ---------------------------------------------------------------------------------------------
# The loader
# ---------------------------------------------------------------------------------------------


class _PolicyLoader:
    def __init__(self, root: Path, catalogue: Catalogue) -> None:
        self.root = root
        self.catalogue = catalogue
        self.problems: list[str] = []
        self.raw: dict[str, Any] = {}
        self.agencies: dict[str, Agency] = {}
        self.audiences: dict[str, str] = {}
        self.agreements: list[Agreement] = []
        self.clause_ids: dict[str, str] = {}
        self.event_types = catalogue.event_types()
        self.jurisdictions = catalogue.reference("jurisdictions")
        self.scopes = catalogue.reference_list("consent_scopes")
        self.sensitivities = catalogue.reference("sensitivities")
        schemes = catalogue.reference_list("identifier_schemes")
        self.person_schemes = {c.code for c in schemes.codes if c.kind == "person"}
        self._trees: dict[str, dict[str, FieldNode]] = {}

    def display(self, path: Path) -> str:
        return f"{self.root.name}/{path.name}"

    def problem(self, file: str, bad: _Bad | str) -> None:
        self.problems.append(f"{file}: {bad}")

    def tree(self, event_type: str) -> dict[str, FieldNode]:
        tree = self._trees.get(event_type)
        if tree is None:
            tree = self._trees[event_type] = event_fields(self.catalogue, event_type)
        return tree

    def read(self, path: Path) -> Any:
        file = self.display(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            self.problem(file, f"cannot read: {exc.strerror}")
            return None
        except UnicodeDecodeError as exc:
            self.problem(file, f"not UTF-8 text: {exc.reason}")
            return None
        try:
            return yaml.load(text, Loader=_YamlLoader)  # noqa: S506 - a SafeLoader subclass
        except yaml.YAMLError as exc:
            reason = " ".join(str(exc).split())
            self.problem(file, f"not valid YAML: {reason}")
            return None

    # -- top level ---------------------------------------------------------------------------
    def load(self) -> None:
        if not self.root.is_dir():
            self.problems.append(f"{self.root}: policy directory not found")
            return
        agencies_path = self.root / AGENCIES_FILE
        if not agencies_path.is_file():
            self.problems.append(f"{self.display(agencies_path)}: not found")
            return
        self.load_agencies(agencies_path)
        for path in sorted(self.root.glob("*.yaml")):
            if path.name != AGENCIES_FILE:
                self.load_agreement(path)
        for path in sorted(self.root.glob("*.yml")):
            self.problem(self.display(path), "policy files end in .yaml (rename it)")

    # -- agencies ----------------------------------------------------------------------------
    def load_agencies(self, path: Path) -> None:
        file = self.display(path)
        doc = self.read(path)
        if doc is None:
            return
        self.raw["agencies"] = doc
        try:
            _keys("", doc, AGENCIES_KEYS, required=("agencies",))
            if not isinstance(doc["agencies"], dict) or not doc["agencies"]:
                raise _Bad("agencies", "expected a mapping of agency id to agency")
        except _Bad as bad:
            self.problem(file, bad)
            return
        for agency_id, body in doc["agencies"].items():
            try:
                agency = self.agency(f"agencies.{agency_id}", agency_id, body)
            except _Bad as bad:
                self.problem(file, bad)
                continue
            self.agencies[agency.id] = agency
        for agency in self.agencies.values():
            try:
                self.check_succession(agency)
            except _Bad as bad:
                self.problem(file, bad)

    def agency(self, where: str, agency_id: Any, body: Any) -> Agency:
        if not isinstance(agency_id, str) or not AGENCY_ID.fullmatch(agency_id):
            raise _Bad(where, f"bad agency id {agency_id!r} (expected lower case [a-z][a-z0-9_]*)")
        _keys(where, body, AGENCY_KEYS, required=("name", "jurisdiction", "kind"))
        jurisdiction = _text(f"{where}.jurisdiction", body["jurisdiction"])
        if jurisdiction not in self.jurisdictions:
            raise _Bad(
                f"{where}.jurisdiction",
                f"unknown jurisdiction {jurisdiction!r} "
                f"(expected {_quote_list(sorted(self.jurisdictions))})",
            )
        kind = _text(f"{where}.kind", body["kind"])
        if kind not in AGENCY_KINDS:
            raise _Bad(
                f"{where}.kind", f"unknown kind {kind!r} (expected {_quote_list(AGENCY_KINDS)})"
            )
        audiences_raw = body.get("audiences") or {}
        if not isinstance(audiences_raw, dict):
            raise _Bad(f"{where}.audiences", "expected a mapping of audience id to description")
        audiences: dict[str, str] = {}
        for audience, text in audiences_raw.items():
            at = f"{where}.audiences.{audience}"
            if not isinstance(audience, str) or not AUDIENCE_ID.fullmatch(audience):
                raise _Bad(
                    at,
                    f"bad audience id {audience!r} (expected lower case, e.g. "
                    f"{agency_id} or {agency_id}.mentor)",
                )
            if audience != agency_id and not audience.startswith(agency_id + "."):
                raise _Bad(
                    at, f"audience {audience!r} must be {agency_id!r} or start with '{agency_id}.'"
                )
            if audience in self.audiences:
                raise _Bad(
                    at, f"audience {audience!r} is also an audience of {self.audiences[audience]}"
                )
            audiences[audience] = _text(at, text)
        for audience in audiences:
            self.audiences[audience] = agency_id
        valid_from = _date(f"{where}.valid_from", body.get("valid_from"), required=False)
        valid_to = _date(f"{where}.valid_to", body.get("valid_to"), required=False)
        if valid_from and valid_to and valid_to < valid_from:
            raise _Bad(f"{where}.valid_to", f"{valid_to} is before valid_from {valid_from}")
        superseded = [
            _text(f"{where}.superseded_by", s)
            for s in _list(f"{where}.superseded_by", body.get("superseded_by"))
        ]
        if superseded and valid_to is None:
            raise _Bad(
                f"{where}.superseded_by",
                "a superseded agency needs valid_to (its last day in force)",
            )
        return Agency(
            id=agency_id,
            name=_text(f"{where}.name", body["name"]),
            jurisdiction=jurisdiction,
            kind=kind,
            audiences=frozen_map(audiences),
            valid_from=valid_from,
            valid_to=valid_to,
            superseded_by=tuple(superseded),
            description=_text(f"{where}.description", body.get("description"), required=False),
        )

    def check_succession(self, agency: Agency) -> None:
        where = f"agencies.{agency.id}.superseded_by"
        for successor in agency.superseded_by:
            other = self.agencies.get(successor)
            if other is None:
                raise _Bad(where, f"unknown agency {successor!r}")
            assert agency.valid_to is not None
            next_day = agency.valid_to + dt.timedelta(days=1)
            if not other.in_force(next_day):
                raise _Bad(
                    where,
                    f"{successor} is not in force on {next_day}, the day after {agency.id} ends",
                )

    # -- agreements --------------------------------------------------------------------------
    def load_agreement(self, path: Path) -> None:
        file = self.display(path)
        doc = self.read(path)
        if doc is None:
            return
        try:
            agreement_head = self.agreement_head(path, doc)
        except _Bad as bad:
            self.problem(file, bad)
            return
        self.raw.setdefault("agreements", {})[agreement_head["id"]] = doc
        clauses: list[Clause] = []
        raw_clauses = doc.get("clauses")
        if not isinstance(raw_clauses, list) or not raw_clauses:
            self.problem(file, _Bad("clauses", "expected a non-empty list of clauses"))
            return
        for i, raw in enumerate(raw_clauses):
            try:
                clauses.append(self.clause(f"clauses[{i}]", i, raw, agreement_head))
            except _Bad as bad:
                self.problem(file, bad)
        self.agreements.append(Agreement(**agreement_head, file=file, clauses=tuple(clauses)))

    def agreement_head(self, path: Path, doc: Any) -> dict[str, Any]:
        _keys(
            "",
            doc,
            AGREEMENT_KEYS,
            required=(
                "id",
                "title",
                "version",
                "jurisdiction",
                "owner",
                "parties",
                "legal_basis",
                "purpose",
                "valid_from",
                "clauses",
            ),
        )
        agreement_id = _text("id", doc["id"])
        if not AGREEMENT_ID.fullmatch(agreement_id):
            raise _Bad(
                "id",
                f"bad agreement id {agreement_id!r} (expected lower case letters, digits and '-')",
            )
        if agreement_id != path.stem:
            raise _Bad(
                "id",
                f"{agreement_id!r} does not match the file name (expected "
                f"{path.stem!r}, or rename the file {agreement_id}.yaml)",
            )
        jurisdiction = _text("jurisdiction", doc["jurisdiction"])
        if jurisdiction not in self.jurisdictions:
            raise _Bad(
                "jurisdiction",
                f"unknown jurisdiction {jurisdiction!r} (expected "
                f"{_quote_list(sorted(self.jurisdictions))})",
            )
        parties = []
        for i, party in enumerate(_list("parties", doc["parties"])):
            party = _text(f"parties[{i}]", party)
            agency = self.agencies.get(party)
            if agency is None:
                raise _Bad(
                    f"parties[{i}]",
                    f"unknown agency {party!r} (not in {self.root.name}/{AGENCIES_FILE})",
                )
            if agency.jurisdiction != jurisdiction:
                raise _Bad(
                    f"parties[{i}]",
                    f"{party} is in {agency.jurisdiction}, the agreement is {jurisdiction} "
                    "(person-level data stays inside its jurisdiction, DESIGN decision 1)",
                )
            parties.append(party)
        owner = _text("owner", doc["owner"])
        if owner not in parties:
            raise _Bad("owner", f"{owner!r} is not one of the parties")
        valid_from = _date("valid_from", doc["valid_from"])
        valid_to = _date("valid_to", doc.get("valid_to"), required=False)
        if valid_from and valid_to and valid_to < valid_from:
            raise _Bad("valid_to", f"{valid_to} is before valid_from {valid_from}")
        return {
            "id": agreement_id,
            "title": _text("title", doc["title"]),
            "version": _text("version", doc["version"]),
            "jurisdiction": jurisdiction,
            "parties": tuple(parties),
            "owner": owner,
            "legal_basis": _text("legal_basis", doc["legal_basis"]),
            "purpose": _text("purpose", doc["purpose"]),
            "valid_from": valid_from,
            "valid_to": valid_to,
            "retention": _retention("retention", doc.get("retention")),
            "description": _text("description", doc.get("description"), required=False),
        }

    # -- clauses -----------------------------------------------------------------------------
    def clause(self, where: str, index: int, raw: Any, head: dict[str, Any]) -> Clause:
        _keys(
            where,
            raw,
            CLAUSE_KEYS,
            required=(
                "id",
                "effect",
                "event_types",
                "from_agencies",
                "to_audiences",
                "description",
            ),
        )
        clause_id = _text(f"{where}.id", raw["id"])
        if not CLAUSE_ID.fullmatch(clause_id):
            raise _Bad(
                f"{where}.id",
                f"bad clause id {clause_id!r} (expected lower case letters, "
                "digits, '-', '_' and '.')",
            )
        if clause_id in self.clause_ids:
            raise _Bad(
                f"{where}.id",
                f"clause id {clause_id!r} is also used in {self.clause_ids[clause_id]}",
            )
        self.clause_ids[clause_id] = f"{self.root.name}/{head['id']}.yaml"
        effect = _text(f"{where}.effect", raw["effect"])
        if effect not in EFFECTS:
            raise _Bad(f"{where}.effect", f"unknown effect {effect!r} (expected permit or forbid)")

        patterns = [
            _text(f"{where}.event_types", t)
            for t in _list(f"{where}.event_types", raw["event_types"])
        ]
        if not patterns:
            raise _Bad(f"{where}.event_types", "expected at least one event type")
        event_types: list[str] = []
        for i, pattern in enumerate(patterns):
            found = expand_event_types([pattern], self.event_types)
            if not found:
                raise _Bad(
                    f"{where}.event_types[{i}]",
                    f"unknown event type {pattern!r} (not in the catalogue, schemas/events/)",
                )
            event_types += [t for t in found if t not in event_types]

        parties = head["parties"]
        sources = [
            _text(f"{where}.from_agencies", s)
            for s in _list(f"{where}.from_agencies", raw["from_agencies"])
        ]
        for i, source in enumerate(sources):
            if source == "*":
                continue
            if source not in self.agencies:
                raise _Bad(f"{where}.from_agencies[{i}]", f"unknown agency {source!r}")
            if source not in parties:
                raise _Bad(
                    f"{where}.from_agencies[{i}]",
                    f"{source} is not a party to {head['id']} (parties: {_quote_list(parties)})",
                )
        audiences = [
            _text(f"{where}.to_audiences", a)
            for a in _list(f"{where}.to_audiences", raw["to_audiences"])
        ]
        for i, audience in enumerate(audiences):
            if audience == "*":
                continue
            agency = self.audiences.get(audience)
            if agency is None:
                raise _Bad(
                    f"{where}.to_audiences[{i}]",
                    f"unknown audience {audience!r} "
                    f"(expected one of {_quote_list(sorted(self.audiences))})",
                )
            if agency not in parties:
                raise _Bad(
                    f"{where}.to_audiences[{i}]",
                    f"the agency of {audience} ({agency}) is not a party to {head['id']}",
                )
        if not sources or not audiences:
            raise _Bad(where, "from_agencies and to_audiences must not be empty")

        fields = self.field_rules(f"{where}.fields", raw.get("fields"), event_types, effect)
        summaries = self.summaries(f"{where}.summaries", raw.get("summaries"), fields, event_types)
        conditions = self.conditions(
            f"{where}.conditions", raw.get("conditions"), event_types, nested=False
        )
        compartment = None
        if raw.get("compartment") is not None:
            compartment = _text(f"{where}.compartment", raw["compartment"])
            if not COMPARTMENT_ID.fullmatch(compartment):
                raise _Bad(f"{where}.compartment", f"bad compartment {compartment!r}")

        consent_based = _bool(f"{where}.consent_based", raw.get("consent_based", False))
        consent_scope = None
        if raw.get("consent_scope") is not None:
            consent_scope = _text(f"{where}.consent_scope", raw["consent_scope"])
            code = self.scopes.get(consent_scope)
            if code is None:
                raise _Bad(
                    f"{where}.consent_scope",
                    f"unknown consent scope {consent_scope!r} "
                    f"(expected {_quote_list(sorted(self.scopes.code_set()))})",
                )
            if code.jurisdictions and head["jurisdiction"] not in code.jurisdictions:
                raise _Bad(
                    f"{where}.consent_scope",
                    f"{consent_scope} is a "
                    f"{_quote_list(code.jurisdictions)} scope, the agreement is "
                    f"{head['jurisdiction']}",
                )
        if consent_based and consent_scope is None:
            raise _Bad(f"{where}.consent_scope", "a consent-based clause names its consent scope")
        if consent_scope is not None and not consent_based:
            raise _Bad(
                f"{where}.consent_based",
                "a clause with a consent_scope must say consent_based: true",
            )

        grants = []
        for i, scheme in enumerate(
            _list(f"{where}.grants_identifiers", raw.get("grants_identifiers"))
        ):
            scheme = _text(f"{where}.grants_identifiers[{i}]", scheme)
            if scheme not in self.person_schemes:
                raise _Bad(
                    f"{where}.grants_identifiers[{i}]",
                    f"unknown person identifier scheme "
                    f"{scheme!r} (expected {_quote_list(sorted(self.person_schemes))})",
                )
            grants.append(scheme)

        retention = _retention(f"{where}.retention", raw.get("retention"))
        if effect == "permit" and retention is None and head["retention"] is None:
            raise _Bad(
                f"{where}.retention", "a permit clause needs a retention (here or on the agreement)"
            )
        if effect == "forbid":
            for key in (
                "consent_based",
                "consent_scope",
                "grants_identifiers",
                "summaries",
                "retention",
            ):
                if raw.get(key) not in (None, False, [], {}):
                    raise _Bad(f"{where}.{key}", "applies to permit clauses only")

        return Clause(
            id=clause_id,
            agreement_id=head["id"],
            effect=effect,
            description=_text(f"{where}.description", raw["description"]),
            event_types=tuple(patterns),
            from_agencies=tuple(sources),
            to_audiences=tuple(audiences),
            purpose=_text(f"{where}.purpose", raw.get("purpose") or head["purpose"]),
            legal_basis=_text(
                f"{where}.legal_basis", raw.get("legal_basis") or head["legal_basis"]
            ),
            conditions=conditions,
            compartment=compartment,
            fields=frozen_map(fields),
            summaries=frozen_map(summaries),
            retention=retention or head["retention"],
            consent_based=consent_based,
            consent_scope=consent_scope,
            grants_identifiers=tuple(grants),
            index=index,
        )

    def field_rules(
        self, where: str, raw: Any, event_types: list[str], effect: str
    ) -> dict[str, str]:
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            raise _Bad(where, "expected a mapping of field path to rule")
        rules: dict[str, str] = {}
        for path, rule in raw.items():
            at = f"{where}.{path}"
            if not isinstance(rule, str) or rule not in RULES:
                raise _Bad(at, f"unknown rule {rule!r} (expected {_quote_list(RULES)})")
            if path == "*":
                if effect == "forbid":
                    raise _Bad(
                        at,
                        "a forbid clause names the fields it withholds (leave fields "
                        "out to forbid the whole event)",
                    )
                if rule not in ("keep", "drop"):
                    raise _Bad(at, f"the default rule is keep or drop, not {rule!r}")
                rules[path] = rule
                continue
            if not isinstance(path, str):
                raise _Bad(at, "field paths are text")
            if effect == "forbid" and rule != "drop":
                raise _Bad(at, f"a forbid clause only drops fields, not {rule!r}")
            found = False
            for event_type in event_types:
                node = find(self.tree(event_type), path)
                if node is None:
                    continue
                found = True
                problem = rule_problem(node, rule)
                if problem:
                    raise _Bad(at, f"{event_type}: {problem}")
            if not found:
                raise _Bad(
                    at,
                    f"unknown field {path!r} (not a payload field of "
                    f"{_quote_list(event_types[:4])}{' ...' if len(event_types) > 4 else ''})",
                )
            rules[path] = rule
        for path in rules:
            parent = path.rpartition(".")[0]
            while parent:
                if parent in rules and rules[parent] != "keep":
                    raise _Bad(
                        f"{where}.{path}",
                        f"{parent} is {rules[parent]!r}; rules for its "
                        "sub-fields need it kept (keep, or leave it out)",
                    )
                parent = parent.rpartition(".")[0]
        return rules

    def summaries(
        self, where: str, raw: Any, rules: dict[str, str], event_types: list[str]
    ) -> dict[str, SummarySpec]:
        specs: dict[str, SummarySpec] = {}
        if raw is not None:
            if not isinstance(raw, dict):
                raise _Bad(where, "expected a mapping of field path to summary")
            for path, body in raw.items():
                at = f"{where}.{path}"
                if rules.get(path) != "summarise":
                    raise _Bad(
                        at, f"{path} is not summarised by this clause (fields.{path}: summarise)"
                    )
                _keys(at, body, SUMMARY_KEYS)
                keep = tuple(_text(f"{at}.keep", k) for k in _list(f"{at}.keep", body.get("keep")))
                where_raw = body.get("where") or {}
                if not isinstance(where_raw, dict):
                    raise _Bad(f"{at}.where", "expected a mapping of sub-field to values")
                where_items = tuple(
                    (str(k), tuple(_list(f"{at}.where.{k}", v))) for k, v in where_raw.items()
                )
                text = body.get("text")
                if text is not None:
                    text = _text(f"{at}.text", text)
                specs[path] = SummarySpec(keep, where_items, text)
        for path, rule in rules.items():
            if rule != "summarise":
                continue
            for event_type in event_types:
                node = find(self.tree(event_type), path)
                if node is None:
                    continue
                problem = summary_problem(node, specs.get(path))
                if problem:
                    at = (
                        f"{where}.{path}"
                        if path in specs
                        else (f"{where.rpartition('.')[0]}.fields.{path}")
                    )
                    raise _Bad(at, f"{event_type}: {problem}")
        return specs

    def conditions(self, where: str, raw: Any, event_types: list[str], nested: bool) -> Conditions:
        if raw is None:
            return Conditions()
        _keys(where, raw, CONDITION_KEYS - ({"any_of"} if nested else set()))
        values: dict[str, Any] = {}

        def every_event_type_has(
            at: str, path: str, check: Callable[[FieldNode], bool], expected: str
        ) -> None:
            for event_type in event_types:
                node = find(self.tree(event_type), path)
                if node is None:
                    raise _Bad(
                        at,
                        f"{event_type} has no field {path!r} (a condition's fields "
                        "must exist in every event type of the clause)",
                    )
                if not check(node):
                    raise _Bad(
                        at, f"{event_type}: {path} is {node.describe()}, expected {expected}"
                    )

        for key in ("in_cohort", "mentor_assigned"):
            if key in raw:
                values[key] = _bool(f"{where}.{key}", raw[key])
        if "open_referral" in raw:
            value = raw["open_referral"]
            value = "to_audience" if value is True else value
            if value not in ("to_audience", "from_audience"):
                raise _Bad(
                    f"{where}.open_referral",
                    f"expected to_audience, from_audience or true, found {value!r}",
                )
            values["open_referral"] = value
        if "supervisor" in raw:
            bodies = [
                _text(f"{where}.supervisor", s)
                for s in _list(f"{where}.supervisor", raw["supervisor"])
            ]
            for body in bodies:
                if body != "audience" and body not in self.agencies:
                    raise _Bad(
                        f"{where}.supervisor",
                        f"unknown agency {body!r} (or 'audience': the audience's agency)",
                    )
            values["supervisor"] = tuple(bodies)
        if "addressed_to" in raw:
            paths = [
                _text(f"{where}.addressed_to", p)
                for p in _list(f"{where}.addressed_to", raw["addressed_to"])
            ]
            for path in paths:
                every_event_type_has(
                    f"{where}.addressed_to",
                    path,
                    lambda n: n.scalar == "string",
                    "an agency id (text)",
                )
            values["addressed_to"] = tuple(paths)
        if "where" in raw:
            body = raw["where"]
            if not isinstance(body, dict) or not body:
                raise _Bad(f"{where}.where", "expected a mapping of payload field to values")
            items = []
            for path, allowed in body.items():
                at = f"{where}.where.{path}"
                every_event_type_has(
                    at, str(path), lambda n: n.scalar is not None, "a code, text, number or boolean"
                )
                allowed_list = _list(at, allowed)
                if not allowed_list:
                    raise _Bad(at, "expected at least one value")
                items.append((str(path), tuple(allowed_list)))
            values["where"] = tuple(items)
        if "sensitivities" in raw:
            found = [
                _text(f"{where}.sensitivities", s)
                for s in _list(f"{where}.sensitivities", raw["sensitivities"])
            ]
            for s in found:
                if s not in self.sensitivities:
                    raise _Bad(
                        f"{where}.sensitivities",
                        f"unknown sensitivity {s!r} (expected "
                        f"{_quote_list(sorted(self.sensitivities))})",
                    )
            values["sensitivities"] = tuple(found)
        if "any_of" in raw:
            options = raw["any_of"]
            if not isinstance(options, list) or len(options) < 2:
                raise _Bad(f"{where}.any_of", "expected a list of at least two condition sets")
            values["any_of"] = tuple(
                self.conditions(f"{where}.any_of[{i}]", option, event_types, nested=True)
                for i, option in enumerate(options)
            )
        return Conditions(**values)

    # -- digest ------------------------------------------------------------------------------
    def digest(self) -> str:
        text = json.dumps(
            self.raw, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
        )
        return hashlib.sha256(text.encode("utf-8")).hexdigest()


def collect(
    root: Path | None = None, catalogue: Catalogue | None = None
) -> tuple[AgreementSet | None, list[str]]:
    """Load ``root`` (default: the repository's ``policies/``); return the agreement set (None
    when there are problems) and every problem found."""
    root = Path(root) if root is not None else DEFAULT_ROOT
    catalogue = catalogue or _default_catalogue()
    loader = _PolicyLoader(root, catalogue)
    loader.load()
    if loader.problems:
        return None, loader.problems
    agreements = AgreementSet(
        loader.agencies, loader.agreements, catalogue, loader.digest(), root=root
    )
    problems = overlap_problems(agreements)
    if problems:
        return None, problems
    return agreements, []


def overlap_problems(agreements: AgreementSet) -> list[str]:
    """Permit clauses that can match the same event and audience must be nested: one shares
    everything the other does (in the same or a more revealing form). A delivery is made under
    one clause, the widest; with nested permits, removing a clause can never widen what an
    audience receives."""
    problems: dict[tuple[str, str], str] = {}
    for (event_type, source, audience), candidates in agreements.entries():
        permits = [c for c in candidates if c.clause.effect == "permit"]
        for i, x in enumerate(permits):
            for y in permits[i + 1 :]:
                pair = (x.clause.id, y.clause.id)
                if pair in problems or x.clause.compartment != y.clause.compartment:
                    continue
                if not _overlap(x.agreement, y.agreement):
                    continue
                if _nested(x, y) or _nested(y, x):
                    continue
                problems[pair] = (
                    f"{x.agreement.file}: clauses[{x.clause.index}]: {x.clause.id} and "
                    f"{y.clause.id} both permit {event_type} from {source} to {audience} but "
                    "neither shares everything the other does (make one's fields and granted "
                    "identifiers contain the other's, or split the event types: a delivery is "
                    "made under one clause)"
                )
    return list(problems.values())


def _nested(big: Candidate, small: Candidate) -> bool:
    return covers(big.plan, small.plan) and set(small.clause.grants_identifiers) <= set(
        big.clause.grants_identifiers
    )


def _overlap(a: Agreement, b: Agreement) -> bool:
    return (a.valid_to is None or b.valid_from <= a.valid_to) and (
        b.valid_to is None or a.valid_from <= b.valid_to
    )


def load_agreements(root: Path | None = None, catalogue: Catalogue | None = None) -> AgreementSet:
    """Load and check ``policies/``; raise :class:`PolicyError` with the first problem."""
    agreements, problems = collect(root, catalogue)
    if problems:
        more = (
            f" (and {len(problems) - 1} more; run 'hub policy check')" if len(problems) > 1 else ""
        )
        raise PolicyError(problems[0] + more)
    assert agreements is not None
    return agreements


_CATALOGUE: list[Catalogue] = []


def _default_catalogue() -> Catalogue:
    if not _CATALOGUE:
        _CATALOGUE.append(Catalogue.load())
    return _CATALOGUE[0]


def parse_retention(value: Any) -> Retention | None:
    """``P2Y``/``P6M``/``P30D`` or a day count (for tools and tests)."""
    try:
        return _retention("retention", value)
    except _Bad as bad:
        raise PolicyError(str(bad)) from None


__all__ = ["collect", "load_agreements", "parse_retention", "DEFAULT_ROOT"]
