"""Payload fields of an event type, as a tree, and the field plan a clause gives them.

A clause's ``fields`` map names payload fields by dotted path (``conditions.named_associates``:
through records and lists of records, as in the catalogue). :func:`build_plan` turns it into a
:class:`PlanItem` per top-level payload field:

- a field named by the clause gets that rule;
- a field not named gets the clause's ``*`` rule (``drop`` when there is none);
- a record (or list of records) with named sub-fields is kept as a container; its sub-fields not
  named inherit the container's own rule when it is named ``keep`` (or inherited ``keep`` from
  ``*``), and are dropped otherwise.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from hub.policy.model import SummarySpec
from hub.serde.catalogue import Catalogue

_PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}
_LOGICAL = {"date": "date", "timestamp-millis": "timestamp", "decimal": "decimal"}
_NUMBERS = {"int", "long", "float", "double", "decimal"}
GENERALISABLE_RECORDS = {"Address": ("area", "country"), "Contact": ("organisation", "role")}


@dataclass(frozen=True)
class FieldNode:
    """One field: a scalar (``scalar`` set), a record (``record`` set, ``children``) or a list of
    either (``is_array``)."""

    name: str
    path: str
    is_array: bool = False
    scalar: str | None = None  # string, int, long, float, double, boolean, bytes, date, ...
    record: str | None = None  # short record name, e.g. Address
    children: Mapping[str, FieldNode] = field(default_factory=dict)

    def describe(self) -> str:
        inner = self.record or self.scalar or "?"
        return f"list of {inner}" if self.is_array else inner


def _full(name: str, ns: str | None) -> str:
    return name if "." in name or not ns else f"{ns}.{name}"


def event_fields(catalogue: Catalogue, event_type: str) -> dict[str, FieldNode]:
    """The payload fields of ``event_type`` (envelope and disclosure excluded), in schema order."""
    schema = catalogue.schema(event_type)
    named: dict[str, tuple[str, Any, str | None]] = {}  # full name -> (kind, definition, ns)

    def node(name: str, path: str, t: Any, ns: str | None, is_array: bool = False) -> FieldNode:
        if isinstance(t, list):
            branches = [b for b in t if b != "null"]
            t = branches[0] if len(branches) == 1 else "union"
        if isinstance(t, str):
            if t in _PRIMITIVES or t == "union":
                return FieldNode(name, path, is_array, scalar=t)
            kind, definition, dns = named[_full(t, ns)]
            return (
                node(name, path, definition, dns, is_array)
                if kind != "record"
                else (_record(name, path, definition, dns, is_array, register=False))
            )
        kind = t.get("type")
        if kind in ("record", "error"):
            return _record(name, path, t, ns, is_array, register=True)
        if kind in ("enum", "fixed"):
            named[_full(t["name"], t.get("namespace") or ns)] = ("scalar", t, ns)
            return FieldNode(name, path, is_array, scalar=kind)
        if kind == "array":
            return node(name, path, t["items"], ns, is_array=True)
        if kind == "map":
            return FieldNode(name, path, is_array, scalar="map")
        logical = t.get("logicalType")
        if logical in _LOGICAL:
            return FieldNode(name, path, is_array, scalar=_LOGICAL[logical])
        return node(name, path, kind, ns, is_array)

    def _record(
        name: str, path: str, t: dict[str, Any], ns: str | None, is_array: bool, register: bool
    ) -> FieldNode:
        full = _full(t["name"], t.get("namespace") or ns)
        inner_ns = full.rpartition(".")[0] or None
        if register:
            named[full] = ("record", t, ns)
        children = {
            f["name"]: node(f["name"], f"{path}.{f['name']}", f["type"], inner_ns)
            for f in t.get("fields", [])
        }
        return FieldNode(name, path, is_array, record=full.rpartition(".")[2], children=children)

    out: dict[str, FieldNode] = {}
    for f in schema["fields"]:
        n = node(f["name"], f["name"], f["type"], "hub.events")
        if f["name"] == "envelope":
            continue  # defines the envelope's named types; never a payload field
        if f["name"] != "disclosure":
            out[f["name"]] = n
    return out


def find(tree: Mapping[str, FieldNode], path: str) -> FieldNode | None:
    head, _, rest = path.partition(".")
    node = tree.get(head)
    if node is None or not rest:
        return node
    return find(node.children, rest)


def walk(tree: Mapping[str, FieldNode]) -> Iterator[FieldNode]:
    for node in tree.values():
        yield node
        yield from walk(node.children)


def rule_problem(node: FieldNode, rule: str) -> str | None:
    """Why ``rule`` cannot apply to ``node`` (None: it can)."""
    if rule in ("keep", "drop"):
        return None
    if rule in ("mask", "pseudonymise"):
        if node.scalar == "string":
            return None
        return f"{rule} applies to text fields only ({node.path} is {node.describe()})"
    if rule == "generalise":
        if node.scalar in _NUMBERS | {"date", "timestamp", "string"}:
            return None
        if node.record in GENERALISABLE_RECORDS:
            return None
        return (
            f"generalise applies to dates, timestamps, numbers, text, Address and Contact "
            f"({node.path} is {node.describe()})"
        )
    if rule == "summarise":
        if node.scalar == "string" or node.record is not None:
            return None
        return (
            f"summarise applies to text, lists of text and records ({node.path} is "
            f"{node.describe()})"
        )
    return f"unknown rule {rule!r}"


def summary_problem(node: FieldNode, spec: SummarySpec | None) -> str | None:
    """Why ``spec`` cannot summarise ``node`` (None: it can)."""
    if spec is None:
        if node.record is not None and "summary" not in node.children:
            return f"summarise of {node.path} needs summaries.{node.path}.keep"
        if node.scalar == "string" and not node.is_array:
            return f"summarise of {node.path} needs summaries.{node.path}.text"
        return None
    if spec.text is not None:
        if node.scalar != "string" or spec.keep or spec.where:
            return f"summaries.{node.path}: text applies alone, to text or a list of text"
        return None
    if node.record is None:
        return f"summaries.{node.path}: keep and where apply to records ({node.describe()})"
    for name in spec.keep:
        if name not in node.children:
            return f"summaries.{node.path}.keep: {name!r} is not a field of {node.record}"
    for name, _ in spec.where:
        child = node.children.get(name)
        if child is None or child.scalar is None or child.is_array:
            return f"summaries.{node.path}.where: {name!r} is not a single-valued field of " + (
                node.record or "?"
            )
    return None


def default_summary(node: FieldNode) -> SummarySpec:
    if node.record is not None:
        return SummarySpec(keep=("summary",))
    return SummarySpec(text="{count} items")


# ---------------------------------------------------------------------------------------------
# Plans
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlanItem:
    """How one field is delivered. ``children`` is set for a kept container with sub-rules."""

    rule: str
    node: FieldNode = field(compare=False, repr=False)
    children: tuple[tuple[str, PlanItem], ...] | None = None
    summary: SummarySpec | None = None


Plan = tuple[tuple[str, PlanItem], ...]


def build_plan(
    tree: Mapping[str, FieldNode],
    rules: Mapping[str, str],
    summaries: Mapping[str, SummarySpec],
) -> Plan:
    return _level(tree, rules, summaries, "", rules.get("*", "drop"))


def _level(
    nodes: Mapping[str, FieldNode],
    rules: Mapping[str, str],
    summaries: Mapping[str, SummarySpec],
    prefix: str,
    default: str,
) -> Plan:
    out: list[tuple[str, PlanItem]] = []
    for name, node in nodes.items():
        path = prefix + name
        explicit = rules.get(path)
        effective = explicit or default
        if node.children and any(p.startswith(path + ".") for p in rules):
            inherited = "keep" if effective == "keep" else "drop"
            children = _level(node.children, rules, summaries, path + ".", inherited)
            out.append((name, PlanItem("keep", node, children)))
        else:
            spec = None
            if effective == "summarise":
                spec = summaries.get(path) or default_summary(node)
            out.append((name, PlanItem(effective, node, None, spec)))
    return tuple(out)


def flatten(plan: Plan, prefix: str = "") -> dict[str, str]:
    """Path -> rule for every top-level field and every sub-field of a container with sub-rules."""
    out: dict[str, str] = {}
    for name, item in plan:
        out[prefix + name] = item.rule
        if item.children is not None:
            out.update(flatten(item.children, f"{prefix}{name}."))
    return out


def summaries_of(plan: Plan, prefix: str = "") -> dict[str, SummarySpec]:
    out: dict[str, SummarySpec] = {}
    for name, item in plan:
        if item.summary is not None:
            out[prefix + name] = item.summary
        if item.children is not None:
            out.update(summaries_of(item.children, f"{prefix}{name}."))
    return out


def has_placeholders(plan: Plan) -> bool:
    for _, item in plan:
        if item.summary is not None and item.summary.resolved("a", "b") is not item.summary:
            return True
        if item.children is not None and has_placeholders(item.children):
            return True
    return False


def resolve_placeholders(plan: Plan, audience: str, agency: str) -> Plan:
    out = []
    for name, item in plan:
        if item.summary is not None:
            item = replace(item, summary=item.summary.resolved(audience, agency))
        if item.children is not None:
            item = replace(item, children=resolve_placeholders(item.children, audience, agency))
        out.append((name, item))
    return tuple(out)


def withhold(plan: Plan, path: str) -> Plan:
    """``plan`` with the field at ``path`` dropped (a field-level forbid). A container delivered
    in a generalised form that would still show the field is dropped whole."""
    head, _, rest = path.partition(".")
    out: list[tuple[str, PlanItem]] = []
    for name, item in plan:
        if name == head:
            item = _withhold_item(item, rest)
        out.append((name, item))
    return tuple(out)


def _withhold_item(item: PlanItem, rest: str) -> PlanItem:
    if item.rule == "drop":
        return item
    if not rest:
        return PlanItem("drop", item.node)
    child = rest.partition(".")[0]
    if item.children is not None:
        return replace(item, children=withhold(item.children, rest))
    if item.rule == "keep":
        children = tuple((n, PlanItem("keep", c)) for n, c in item.node.children.items())
        return replace(item, children=withhold(children, rest))
    if item.rule == "summarise" and item.summary is not None and item.summary.keep:
        if "." in rest:
            return PlanItem("drop", item.node)
        keep = tuple(k for k in item.summary.keep if k != child)
        return replace(item, summary=replace(item.summary, keep=keep))
    if item.rule == "generalise" and child not in GENERALISABLE_RECORDS.get(
        item.node.record or "", ()
    ):
        return item
    return PlanItem("drop", item.node)


# ---------------------------------------------------------------------------------------------
# Comparing plans: openness and nesting
# ---------------------------------------------------------------------------------------------

OPENNESS = {"drop": 0, "pseudonymise": 1, "mask": 2, "generalise": 2, "summarise": 2, "keep": 3}


def leaves(plan: Plan, prefix: str = "") -> dict[str, PlanItem]:
    """Path -> item for every field a plan treats as a whole (containers with sub-rules are
    replaced by their sub-fields)."""
    out: dict[str, PlanItem] = {}
    for name, item in plan:
        if item.children is not None:
            out.update(leaves(item.children, f"{prefix}{name}."))
        else:
            out[prefix + name] = item
    return out


def openness(plan: Plan) -> int:
    """How much a plan reveals: the tie-breaker that picks the widest of several permits."""
    return sum(OPENNESS[item.rule] for item in leaves(plan).values())


def _effective(found: dict[str, PlanItem], path: str) -> PlanItem | None:
    while path:
        if path in found:
            return found[path]
        path = path.rpartition(".")[0]
    return None


def _within(small: PlanItem | None, big: PlanItem | None) -> bool:
    if small is None or small.rule == "drop":
        return True
    if big is None:
        return False
    return big.rule == "keep" or (small.rule == big.rule and small.summary == big.summary)


def covers(big: Plan, small: Plan) -> bool:
    """True when everything ``small`` delivers, ``big`` delivers too, in the same or a more
    revealing form (keep covers every transform; a transform covers only itself)."""
    a, b = leaves(small), leaves(big)
    return all(_within(_effective(a, p), _effective(b, p)) for p in set(a) | set(b))
