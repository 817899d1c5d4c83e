"""The auditors' pages: the audit trail's reports in the portal, for the auditor role only.

Search, a subject's disclosure report (and "what did agency X know at time T"), denials and DLQ
rejections, and sharing over time; each as a page, as CSV (``format=csv``) and as a printable
page (``format=print``). The reports are :mod:`hub.audit.reports`' and the recording is
:class:`hub.audit.query.AuditedQueries`' (the CLI's own): every answer is computed, its
``auditor_query`` entry (component ``web``) acknowledged by the broker, and only then shown; no
acknowledgement, no answer (503). Pages hold what the trail holds: metadata, field names and
hashes, never a shared value.

Subjects are named as in ``hub audit``: ``police:MP-0042``, ``AGENCY:SCHEME:ID``, a hub subject
id (``hs-…``) or the 64-hex audit pseudonym, resolved through the policy state.

This module does not use ``from __future__ import annotations``: FastAPI reads the route
annotations at runtime.
"""

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated
from urllib.parse import parse_qsl, urlencode

from fastapi import Depends, FastAPI, Query, Request
from fastapi.responses import Response

from hub.audit import query, reports
from hub.audit.entry import KINDS, TEXT_MAX, format_at
from hub.domain.errors import InfraError, InputError
from hub.web.audit import AccessRecorder
from hub.web.config import WebConfig
from hub.web.users import User

COMPONENT = "web"
FORMATS = ("html", "csv", "print")
FIELD_MAX = 200

Text = Annotated[str, Query(max_length=FIELD_MAX)]
Justification = Annotated[str, Query(max_length=TEXT_MAX)]


@dataclass
class AuditorDesk:
    """What the auditor pages read: the stored trail, and how a named subject becomes its
    audit pseudonym."""

    store: reports.EntryQuery
    resolve: Callable[[str], str]
    close: Callable[[], None] = lambda: None


def open_desk(config: WebConfig) -> AuditorDesk:
    """The hub database's trail and policy state, and the pseudonym key under ``HUB_HOME``."""
    from hub import bootstrap
    from hub.adapters.audit_store import open_audit_store
    from hub.adapters.policy_store import SqlPolicyState
    from hub.policy import PseudonymKeys

    if not config.hub_database_url:
        raise InfraError("the portal has no hub database configured for the auditor pages")
    key_path = config.home / "keys" / "pseudonym.key"

    def keys() -> PseudonymKeys:
        if not key_path.exists():
            raise InfraError(f"{key_path} does not exist; run `hub init` first")
        return PseudonymKeys(key_path.read_bytes())

    store = open_audit_store(config.hub_database_url)
    sources = query.SubjectSources(
        keys=keys,
        state=lambda: SqlPolicyState(bootstrap.engine_for(config.hub_database_url)),
        agencies=lambda: {a.id: a.jurisdiction for a in bootstrap.agreements().agencies()},
        schemes=lambda: [c.code for c in bootstrap.catalogue().reference_list(
            "identifier_schemes").codes if c.kind == "person"],
    )  # fmt: skip
    return AuditorDesk(store, lambda text: query.resolve_subject(text, sources), store.close)


class DeskHolder:
    """Opens the desk on the first auditor request (a portal without auditors never needs the
    hub database)."""

    def __init__(self, factory: Callable[[], AuditorDesk]) -> None:
        self._factory = factory
        self._desk: AuditorDesk | None = None
        self._lock = threading.Lock()

    def get(self) -> AuditorDesk:
        with self._lock:
            if self._desk is None:
                self._desk = self._factory()
            return self._desk

    def close(self) -> None:
        with self._lock:
            desk, self._desk = self._desk, None
        if desk is not None:
            desk.close()


def _time(text: str, name: str, *, start: bool = False) -> datetime | None:
    text = text.strip()
    if not text:
        return None
    return query.parse_since(text, name) if start else query.parse_when(text, name)


def _format(value: str) -> str:
    if value not in FORMATS:
        raise InputError(f"format {value!r} (expected one of {', '.join(FORMATS)})")
    return value


def _csv(name: str, data: reports.Table) -> Response:
    return Response(
        reports.to_csv(data),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}.csv"'},
    )


@dataclass(frozen=True)
class Section:
    title: str
    table: reports.Table
    anchor: str


def add_auditor_routes(
    app: FastAPI,
    *,
    auditor: Callable[..., User],
    render: Callable[..., Response],
    trail: AccessRecorder,
    desk: DeskHolder,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> None:
    """The ``/auditor`` pages; ``auditor`` is the dependency that admits the auditor role only."""
    AuditorUser = Annotated[User, Depends(auditor)]

    def audited(user: User, justification: str) -> query.AuditedQueries:
        return query.AuditedQueries(
            trail.query_sink(), trail.topic, user.username, justification.strip() or None,
            timeout_s=trail.timeout_s, component=COMPONENT,
        )  # fmt: skip

    def show(
        request: Request,
        user: User,
        *,
        title: str,
        filename: str,
        output: str,
        sections: list[Section],
        facts: Mapping[str, str],
        csv_table: reports.Table,
        note: str = "",
    ) -> Response:
        if output == "csv":
            return _csv(filename, csv_table)
        page = "auditor_print.html" if output == "print" else f"auditor_{filename}.html"
        query_string = request.url.query
        return render(
            request, page, title=title, sections=sections, facts=facts, note=note,
            params=request.query_params, generated_at=format_at(now()),
            generated_by=user.username, kinds=sorted(KINDS),
            csv_link=f"{request.url.path}?{_with_format(query_string, 'csv')}",
            print_link=f"{request.url.path}?{_with_format(query_string, 'print')}",
        )  # fmt: skip

    @app.get("/auditor")
    def auditor_home(request: Request, user: AuditorUser) -> Response:
        return render(request, "auditor.html", kinds=sorted(KINDS))

    @app.get("/auditor/search")
    def auditor_search(
        request: Request,
        user: AuditorUser,
        subject: Text = "",
        agency: Text = "",
        audience: Text = "",
        agreement: Text = "",
        clause: Text = "",
        kind: Text = "",
        decision: Text = "",
        since: Text = "",
        until: Text = "",
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        justification: Justification = "",
        format: Text = "html",  # noqa: A002 - the query parameter's name
    ) -> Response:
        if not request.url.query:
            return render(request, "auditor_search.html", title="Search the audit trail",
                          params={}, kinds=sorted(KINDS), sections=[])  # fmt: skip
        output = _format(format)
        subject_ref = desk.get().resolve(subject) if subject.strip() else None
        filters = reports.SearchFilters(
            subject_ref=subject_ref, agency=agency or None, audience=audience or None,
            agreement_id=agreement or None, clause_id=clause or None, kind=kind or None,
            decision=decision or None, since=_time(since, "since", start=True),
            until=_time(until, "until"), limit=limit,
        )  # fmt: skip
        store = desk.get().store
        result = audited(user, justification).run(
            "web audit search", {**filters.recorded(), "output": output},
            lambda: reports.search(store, filters), subject_ref=subject_ref,
        )  # fmt: skip
        more = "More entries match: narrow the filters or raise the limit." * result.truncated
        rows = [reports.entry_row(stored) for stored in result.entries]
        return show(
            request, user, title="Search the audit trail", filename="search", output=output,
            sections=[Section(f"Entries ({len(rows)})", reports.search_table(result), "entries")],
            facts={"Subject": subject, "Audit pseudonym": subject_ref or ""},
            csv_table=(reports.ENTRY_COLUMNS, rows), note=more,
        )  # fmt: skip

    @app.get("/auditor/disclosure")
    def auditor_disclosure(
        request: Request,
        user: AuditorUser,
        subject: Text = "",
        as_of: Text = "",
        agency: Text = "",
        justification: Justification = "",
        format: Text = "html",  # noqa: A002 - the query parameter's name
    ) -> Response:
        if not request.url.query:
            return render(request, "auditor_disclosure.html", title="Disclosure report",
                          params={}, sections=[])  # fmt: skip
        if not subject.strip():
            raise InputError("a disclosure report needs a subject (e.g. police:MP-0042)")
        output = _format(format)
        subject_ref = desk.get().resolve(subject)
        instant = _time(as_of, "as of")
        store = desk.get().store
        report = audited(user, justification).run(
            "web audit disclosure-report",
            {"as_of": instant, "agency": agency, "output": output},
            lambda: reports.disclosure_report(
                store, subject_ref, subject=subject.strip(), as_of=instant, agency=agency or None
            ),
            subject_ref=subject_ref,
        )
        scope = (
            f"what {agency or 'every agency'} held before {format_at(instant)}"
            if instant
            else "every delivery on the trail, with what became of it"
        )
        return show(
            request, user, title="Disclosure report", filename="disclosure", output=output,
            sections=[
                Section("Recipients", reports.disclosure_summary(report), "recipients"),
                Section("Deliveries, retractions and corrections",
                        reports.disclosure_table(report, reports.DISCLOSURE_BRIEF), "entries"),
            ],
            facts={
                "Subject": report.subject, "Audit pseudonym": report.subject_ref,
                "Scope": scope, "Audience of agency": agency or "every agency",
                "Audit trail": f"{report.trail_size} entries, head {report.trail_head}",
            },
            csv_table=reports.disclosure_table(report),
        )  # fmt: skip

    @app.get("/auditor/denials")
    def auditor_denials(
        request: Request,
        user: AuditorUser,
        since: Text = "",
        until: Text = "",
        agency: Text = "",
        justification: Justification = "",
        format: Text = "html",  # noqa: A002 - the query parameter's name
    ) -> Response:
        if not request.url.query:
            return render(request, "auditor_denials.html", title="Denials and rejections",
                          params={}, sections=[])  # fmt: skip
        output = _format(format)
        start, end = _time(since, "since", start=True), _time(until, "until")
        store = desk.get().store
        found = audited(user, justification).run(
            "web audit denials",
            {"since": start, "until": end, "agency": agency, "output": output},
            lambda: reports.denials(store, since=start, until=end, agency=agency or None),
        )
        data = reports.denials_table(found)
        return show(
            request, user, title="Denials and rejections", filename="denials", output=output,
            sections=[Section(f"Deny decisions and DLQ rejections ({len(found)})", data,
                              "entries")],
            facts={"Agency": agency or "every agency"}, csv_table=data,
        )  # fmt: skip

    @app.get("/auditor/sharing")
    def auditor_sharing(
        request: Request,
        user: AuditorUser,
        by: Text = "month",
        since: Text = "",
        until: Text = "",
        agency: Text = "",
        justification: Justification = "",
        format: Text = "html",  # noqa: A002 - the query parameter's name
    ) -> Response:
        if not request.url.query:
            return render(request, "auditor_sharing.html", title="Sharing over time",
                          params={}, sections=[])  # fmt: skip
        output = _format(format)
        start, end = _time(since, "since", start=True), _time(until, "until")
        store = desk.get().store
        rows = audited(user, justification).run(
            "web audit sharing",
            {"by": by, "since": start, "until": end, "agency": agency, "output": output},
            lambda: reports.sharing(store, by=by, since=start, until=end, agency=agency or None),
        )
        pairs = reports.sharing_table(rows)
        return show(
            request, user, title="Sharing over time", filename="sharing", output=output,
            sections=[
                Section("All partners", reports.sharing_totals(rows), "totals"),
                Section("Deliveries per partner pair", pairs, "pairs"),
            ],
            facts={"Per": by, "Agency": agency or "every agency"}, csv_table=pairs,
        )  # fmt: skip


def _with_format(query_string: str, output: str) -> str:
    pairs = [(k, v) for k, v in parse_qsl(query_string, keep_blank_values=True) if k != "format"]
    return urlencode([*pairs, ("format", output)])
