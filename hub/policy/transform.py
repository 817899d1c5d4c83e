"""``apply(event, decision, keys, state) -> dict``: the record one audience receives.

Same schema as the event. Withheld fields are null (their values are never copied into the
output), transformed fields follow their rule, the subject is the audience's own local id or an
audience-specific pseudonym, and ``disclosure`` says why the audience received it. Kept values
are the event's own objects, not copies (one copy per audience cost the router for nothing):
treat the record as read-only, or copy what you change (``FieldCrypto.seal`` does).

Field rules:

- ``keep``: as is; ``drop``: null.
- ``mask``: text of up to 24 characters keeps its last 2 characters, the rest becomes ``*``;
  longer text becomes ``[withheld]``.
- ``generalise``: a date becomes the first of its month, a timestamp 00:00Z on the first of its
  month; an integer is rounded down to a multiple of 10, a float to a whole number, money to the
  nearest 1,000; a number held as text becomes a band of ten (``20-29``), a UK postcode its
  outward code (``L32``), other text ``[generalised]``; an Address keeps only ``area`` and
  ``country``, a Contact only ``organisation`` and ``role``.
- ``pseudonymise``: keyed HMAC-SHA256 of the text with the audience's own key, as hex.
- ``summarise``: what the clause's summary says (:class:`~hub.policy.model.SummarySpec`).
"""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import hmac
import re
from collections.abc import Mapping
from typing import Any

from hub.domain.errors import PolicyError
from hub.policy.engine import Decision
from hub.policy.fields import GENERALISABLE_RECORDS, PlanItem
from hub.policy.model import SummarySpec
from hub.policy.state import PolicyState

PSEUDONYM_SCHEME = "hub_pseudonym"
MASK_MAX = 24
WITHHELD_TEXT = "[withheld]"
GENERALISED_TEXT = "[generalised]"
_POSTCODE = re.compile(r"([A-Z]{1,2}[0-9][0-9A-Z]?)\s*[0-9][A-Z]{2}")
_NUMBER = re.compile(r"-?\d+")
_MONEY_STEP = decimal.Decimal(1000)
_CENTS = decimal.Decimal("0.01")


class PseudonymKeys:
    """Per-audience HMAC keys derived from one master secret: the same subject gets a different,
    stable pseudonym in each audience, and nobody without the master can link them."""

    def __init__(self, master: bytes) -> None:
        if not isinstance(master, bytes) or len(master) < 16:
            raise PolicyError("the pseudonym master secret must be at least 16 bytes")
        self._master = master
        self._keys: dict[str, bytes] = {}

    def key(self, audience: str) -> bytes:
        key = self._keys.get(audience)
        if key is None:
            key = hmac.new(
                self._master, b"hub.pseudonym.v1\x00" + audience.encode(), hashlib.sha256
            ).digest()
            self._keys[audience] = key
        return key

    def pseudonym(self, audience: str, hub_subject_id: str) -> str:
        """The audience's pseudonym for a hub subject (hex)."""
        return hmac.new(
            self.key(audience), b"subject\x00" + hub_subject_id.encode(), hashlib.sha256
        ).hexdigest()

    def value(self, audience: str, text: str) -> str:
        """The audience's pseudonym for a field value such as a referral or mentor id (hex)."""
        return hmac.new(
            self.key(audience), b"value\x00" + text.encode(), hashlib.sha256
        ).hexdigest()


def apply(
    event: Mapping[str, Any], decision: Decision, keys: PseudonymKeys, state: PolicyState
) -> dict[str, Any]:
    """The record to deliver to ``decision.audience`` (see the module docs)."""
    if not decision.permitted:
        raise PolicyError(f"cannot apply a {decision.effect} decision ({decision.reason})")
    envelope = dict(event["envelope"])
    envelope["subject"] = _subject(envelope, decision, keys, state)
    if decision.audience_agency != envelope.get("source_agency"):
        envelope["consent_ref"] = None  # the source's own record id; meaningless elsewhere
    record: dict[str, Any] = {"envelope": envelope}
    ctx = _Ctx(decision, keys)
    for name, item in decision.plan:
        record[name] = _transform(event.get(name), item, ctx)
    record["disclosure"] = {
        "audience": decision.audience,
        "agreement_id": decision.agreement_id,
        "agreement_version": decision.agreement_version,
        "clause_id": decision.clause_id,
        "purpose": decision.purpose,
        "legal_basis": decision.legal_basis,
        "consent_based": decision.consent_based,
        "withheld": decision.withheld,
        "transformed": [
            {"field": path, "rule": rule, "clause_id": decision.clause_id}
            for path, rule in decision.transformed
        ],
        "retention_until": decision.retention_until,
    }
    return record


def _subject(
    envelope: Mapping[str, Any], decision: Decision, keys: PseudonymKeys, state: PolicyState
) -> dict[str, Any]:
    source = envelope["subject"]
    granted = set(decision.grants_identifiers)
    identifiers = [
        {"scheme": i["scheme"], "value": i["value"]}
        for i in source.get("identifiers") or ()
        if i["scheme"] in granted
    ]
    if not decision.person_level:  # a run, an extract, an organisation: not a person
        return {
            "local_id": source["local_id"],
            "local_id_scheme": source["local_id_scheme"],
            "identifiers": identifiers,
            "hub_subject_id": None,
        }
    if decision.subject is None or decision.audience_agency is None:
        raise PolicyError("a permit decision for a person carries the subject and agency")
    own = state.local_identifier_for(decision.subject, decision.audience_agency)
    if own is not None:
        scheme, local_id = own
    else:
        scheme, local_id = PSEUDONYM_SCHEME, keys.pseudonym(decision.audience, decision.subject)
    return {
        "local_id": local_id,
        "local_id_scheme": scheme,
        "identifiers": identifiers,
        "hub_subject_id": None,
    }


class _Ctx:
    __slots__ = ("audience", "keys")

    def __init__(self, decision: Decision, keys: PseudonymKeys) -> None:
        self.audience = decision.audience
        self.keys = keys


def _transform(value: Any, item: PlanItem, ctx: _Ctx) -> Any:
    if value is None or item.rule == "drop":
        return None
    node = item.node
    if item.children is not None:
        if node.is_array:
            return [_container(v, item.children, ctx) for v in value]
        return _container(value, item.children, ctx)
    rule = item.rule
    if rule == "keep":
        return value  # shared with the event, not copied (see the module docs)
    if rule == "summarise":
        return _summarise(value, item)
    if node.is_array:
        return [_scalar(rule, v, item, ctx) for v in value]
    return _scalar(rule, value, item, ctx)


def _container(value: Any, children: tuple[tuple[str, PlanItem], ...], ctx: _Ctx) -> Any:
    if value is None:
        return None
    return {name: _transform(value.get(name), item, ctx) for name, item in children}


def _scalar(rule: str, value: Any, item: PlanItem, ctx: _Ctx) -> Any:
    if value is None:
        return None
    if rule == "mask":
        return mask(str(value))
    if rule == "pseudonymise":
        return ctx.keys.value(ctx.audience, str(value))
    if rule == "generalise":
        if item.node.record is not None:
            kept = GENERALISABLE_RECORDS[item.node.record]
            return {
                name: (value.get(name) if name in kept else None) for name in item.node.children
            }
        return generalise(value)
    raise PolicyError(f"unknown rule {rule!r}")


def mask(text: str) -> str:
    if len(text) > MASK_MAX:
        return WITHHELD_TEXT
    return "*" * max(len(text) - 2, 0) + text[-2:] if len(text) > 2 else "*" * len(text)


def generalise(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        utc = value.astimezone(dt.UTC)
        return dt.datetime(utc.year, utc.month, 1, tzinfo=dt.UTC)
    if isinstance(value, dt.date):
        return value.replace(day=1)
    if isinstance(value, bool):
        raise PolicyError("booleans cannot be generalised")
    if isinstance(value, int):
        return value - value % 10
    if isinstance(value, float):
        return float(round(value))
    if isinstance(value, decimal.Decimal):
        return ((value / _MONEY_STEP).quantize(decimal.Decimal(1)) * _MONEY_STEP).quantize(_CENTS)
    if isinstance(value, str):
        text = value.strip()
        if _NUMBER.fullmatch(text):
            low = int(text) - int(text) % 10
            return f"{low}-{low + 9}"
        postcode = _POSTCODE.fullmatch(text.upper())
        if postcode:
            return postcode.group(1)
        return GENERALISED_TEXT
    raise PolicyError(f"cannot generalise a {type(value).__name__}")


def _matches(value: Mapping[str, Any], spec: SummarySpec) -> bool:
    return all(value.get(name) in allowed for name, allowed in spec.where)


def _summarise(value: Any, item: PlanItem) -> Any:
    spec = item.summary or SummarySpec()
    node = item.node
    if spec.text is not None or node.record is None:
        text = spec.text if spec.text is not None else "{count} items"
        if node.is_array:
            return [text.replace("{count}", str(len(value)))]
        return text
    keep = set(spec.keep)

    def one(v: Mapping[str, Any]) -> dict[str, Any]:
        return {name: (v.get(name) if name in keep else None) for name in node.children}

    if node.is_array:
        return [one(v) for v in value if v is not None and _matches(v, spec)]
    return one(value) if _matches(value, spec) else None
