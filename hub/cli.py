"""The ``hub`` command line: a thin shell over ``hub.bootstrap``.

Exit codes: 0 ok, 1 error, 2 usage, 3 integrity failure.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pydantic
import structlog
import typer

from hub import bootstrap, logsetup
from hub.domain.errors import HubError, InfraError

log = structlog.get_logger(__name__)
app = typer.Typer(
    no_args_is_help=True, add_completion=False, help="The reducing-reoffending data-sharing hub."
)
broker_app = typer.Typer(no_args_is_help=True, help="The local Kafka broker (KRaft, single node).")
registry_app = typer.Typer(no_args_is_help=True, help="The Confluent-compatible schema registry.")
schemas_app = typer.Typer(no_args_is_help=True, help="The Avro event catalogue in schemas/.")
router_app = typer.Typer(no_args_is_help=True, help="The policy router.")
audit_app = typer.Typer(no_args_is_help=True, help="The tamper-evident audit trail.")
policy_app = typer.Typer(no_args_is_help=True, help="The information-sharing agreements.")
view_app = typer.Typer(no_args_is_help=True, help="Audience views kept current from deliver.*.")
bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks (figures, never pass/fail).")
connector_app = typer.Typer(no_args_is_help=True, help="Partner connectors.")
connector_run_app = typer.Typer(no_args_is_help=True, help="Run a partner connector.")
connector_app.add_typer(connector_run_app, name="run")
app.add_typer(connector_app, name="connector")
app.add_typer(broker_app, name="broker")
app.add_typer(policy_app, name="policy")
app.add_typer(view_app, name="view")
app.add_typer(bench_app, name="bench")
app.add_typer(registry_app, name="registry")
app.add_typer(schemas_app, name="schemas")
app.add_typer(router_app, name="router")
app.add_typer(audit_app, name="audit")
identity_app = typer.Typer(no_args_is_help=True, help="Who is who: candidates, links, unlinks.")
app.add_typer(identity_app, name="identity")


# -- broker ------------------------------------------------------------------------------------


def _progress_printer():  # type: ignore[no-untyped-def]
    from rich.console import Console

    console = Console(stderr=True)

    def show(count: int, artifact: str) -> None:
        console.print(f"[dim]downloaded {count:3d}[/dim] {artifact}", highlight=False)

    return show


@broker_app.command("fetch")
def broker_fetch() -> None:
    """Resolve Apache Kafka's jars through Maven into the cache (once)."""
    from hub.adapters import broker

    s = bootstrap.settings()
    if broker.jars_ready(s):
        typer.echo(f"Kafka {s.broker.kafka_version} jars already cached in {broker.jars_dir(s)}")
        return
    typer.echo(f"fetching Apache Kafka {s.broker.kafka_version} from Maven Central...", err=True)
    path = broker.fetch_jars(s, _progress_printer())
    typer.echo(f"Kafka {s.broker.kafka_version} jars cached in {path}")


@broker_app.command("start")
def broker_start(
    secure: bool = typer.Option(
        False, "--secure", help="SASL_SSL (SCRAM-SHA-512) and ACLs only; no plaintext listener"
    ),
) -> None:
    """Start the local broker (idempotent); returns once it answers a metadata request."""
    from hub.adapters import broker

    s = bootstrap.settings()
    if s.kafka_bootstrap:
        from hub.adapters.kafka import security_config

        if not broker.answers_metadata(s.kafka_bootstrap, timeout=10, security=security_config()):
            raise InfraError(f"HUB_KAFKA_BOOTSTRAP={s.kafka_bootstrap} does not answer")
        typer.echo(f"using the existing cluster at {s.kafka_bootstrap} (HUB_KAFKA_BOOTSTRAP)")
        return
    local = broker.LocalBroker(s, secure=secure or None)
    status = local.start(_progress_printer())
    typer.echo(f"broker {status.describe()} [{local.label}]")
    if local.secure:
        from hub.adapters.kafka_security import ca_path, credentials_path

        typer.echo(
            f"CA for clients: {ca_path(s.home)}; hub-admin's password: {credentials_path(s.home)}"
        )


@broker_app.command("tls")
def broker_tls(
    out: Path = typer.Option(..., "--out", help="directory for ca.pem, ca.key and broker.pem"),
    host: list[str] = typer.Option(..., "--host", help="a name the broker is reached by"),
    owner: int = typer.Option(None, "--owner", help="uid of the broker, to own its key"),
) -> None:
    """Create the hub's CA and a broker certificate for HOST (a broker of your own, e.g. the
    docker-compose one); idempotent. Give clients ca.pem (HUB_KAFKA_SECURITY__CA_FILE)."""
    import os

    from hub.adapters.tls import ensure_broker_tls

    files = ensure_broker_tls(out, tuple(host))
    if owner is not None:
        os.chown(files.broker_keystore, owner, -1)
    typer.echo(f"CA {files.ca_cert}; broker key and certificate {files.broker_keystore}")


@broker_app.command("stop")
def broker_stop() -> None:
    """Stop the local broker cleanly."""
    from hub.adapters import broker

    stopped = broker.LocalBroker(bootstrap.settings()).stop()
    typer.echo("broker stopped" if stopped else "broker was not running")


@broker_app.command("status")
def broker_status() -> None:
    """Say whether the local broker runs and answers; exit 1 when it does not."""
    from hub.adapters import broker

    status = broker.LocalBroker(bootstrap.settings()).status()
    typer.echo(f"broker {status.describe()}")
    if not status.answering:
        raise typer.Exit(1)


@broker_app.command("logs")
def broker_logs(lines: int = typer.Option(50, "--lines", "-n", help="how many lines")) -> None:
    """Print the end of the local broker's log."""
    from hub.adapters import broker

    for line in broker.LocalBroker(bootstrap.settings()).logs(lines):
        typer.echo(line)


# -- agencies: Kafka principals and ACLs -------------------------------------------------------

agencies_app = typer.Typer(
    no_args_is_help=True, help="Kafka principals and ACLs per agency and hub service."
)
app.add_typer(agencies_app, name="agencies")


@agencies_app.command("provision")
def agencies_provision(
    revoke: str = typer.Option(
        None, "--revoke", help="delete AGENCY's user and ACLs now; it stays revoked"
    ),
    restore: str = typer.Option(None, "--restore", help="provision a revoked AGENCY again"),
) -> None:
    """Create a SCRAM principal per agency and hub service and exactly the ACLs each needs,
    from policies/agencies.yaml (idempotent); passwords go to HUB_HOME/security/."""
    from hub.adapters.kafka_security import credentials_path

    s = bootstrap.settings()
    if s.kafka_security.mode != "sasl_ssl":
        raise InfraError(
            "hub agencies provision needs the secure broker: HUB_KAFKA_SECURITY__MODE=sasl_ssl "
            "(and `hub broker start --secure` for the local one)"
        )
    agencies = bootstrap.agency_registry()
    admin = bootstrap.acl_admin(s)
    if revoke:
        deleted = admin.revoke(revoke, [a for a, _ in agencies])
        typer.echo(f"revoked {revoke}: SCRAM user deleted, {deleted} ACLs deleted")
        return
    if restore:
        admin.restore(restore)
    report = admin.provision(agencies, bootstrap.topics(s))
    typer.echo(
        f"{len(report.users_created)} users created, {report.acls_created} ACLs created, "
        f"{report.acls_deleted} deleted, {report.acls_kept} unchanged"
        + (f"; revoked {', '.join(report.revoked)}" if report.revoked else "")
        + f"; passwords in {credentials_path(s.home)}"
    )


# -- registry ----------------------------------------------------------------------------------


@registry_app.command("serve")
def registry_serve(
    host: str = typer.Option(None, "--host", help="address to listen on [default: 127.0.0.1]"),
    port: int = typer.Option(None, "--port", help="port to listen on [default: 18081]"),
) -> None:
    """Serve the Confluent-compatible schema registry from the hub database."""
    from hub.adapters.registry_server import serve

    s = bootstrap.settings()
    s.home.mkdir(parents=True, exist_ok=True)
    serve(s.hub_database_url, host or s.registry.host, port or s.registry.port)


# -- schemas -----------------------------------------------------------------------------------


def _catalogue(root: Path | None):  # type: ignore[no-untyped-def]
    from hub.serde.catalogue import Catalogue

    return Catalogue.load(root)


@schemas_app.command("list")
def schemas_list(root: Path = typer.Option(None, "--schemas", help="catalogue directory")) -> None:
    """List the event types of the catalogue."""
    from rich.console import Console
    from rich.table import Table

    catalogue = _catalogue(root)
    table = Table("event type", "Avro name (subject)", "required", "sensitive")
    for name in catalogue.names():
        table.add_row(
            catalogue.event_type_for(name), name,
            ", ".join(catalogue.required_fields(name)), ", ".join(catalogue.sensitive_fields(name)),
        )  # fmt: skip
    Console().print(table)


@schemas_app.command("register")
def schemas_register(
    root: Path = typer.Option(None, "--schemas", help="catalogue directory"),
) -> None:
    """Register every schema of the catalogue with the schema registry (record name strategy)."""
    from hub import schematool
    from hub.adapters.schema_registry import HttpSchemaRegistry

    s = bootstrap.settings()
    ids = schematool.register(_catalogue(root), HttpSchemaRegistry(s.schema_registry_url))
    typer.echo(f"registered {len(ids)} schemas with {s.schema_registry_url}")


@schemas_app.command("check")
def schemas_check(
    root: Path = typer.Option(None, "--schemas", help="catalogue directory"),
    against: Path = typer.Option(
        None, "--against", help="compare with this copy of the catalogue instead of the registry"
    ),
) -> None:
    """Exit 1 on an amplification risk or a change incompatible with the registered version."""
    from hub import schematool
    from hub.adapters.schema_registry import HttpSchemaRegistry

    s = bootstrap.settings()
    registry = None if against else HttpSchemaRegistry(s.schema_registry_url)
    report = schematool.check(_catalogue(root), registry=registry, against=against)
    for problem in report.problems:
        typer.secho(problem, fg=typer.colors.RED, err=True)
    if not report.ok:
        raise typer.Exit(1)
    where = against or s.schema_registry_url
    typer.echo(f"{report.checked} schemas checked against {where}: compatible")


# -- init and router ---------------------------------------------------------------------------


@app.command("init")
def init() -> None:
    """Create the state directory, keys, database tables and topics; register the schemas."""
    s = bootstrap.settings()
    result = bootstrap.init(s)
    typer.echo(
        f"hub initialised in {result['home']}: {result['schemas']} schemas registered, "
        f"{result['topics_created']} topics created"
    )


@router_app.command("run")
def router_run(
    slot: int = typer.Option(0, help="router slot: transactional.id hub-router-<slot>"),
) -> None:
    """Route ingest.* to deliver.* and hub.audit, exactly once, until SIGTERM."""
    s = bootstrap.settings()
    router, bus = bootstrap.build_router(s, slot)
    log.info(
        "router_started", slot=slot, kafka_security=bootstrap.kafka_mode(s),
        audiences=len(router.audiences),
    )  # fmt: skip
    try:
        router.run(bus, _stop_on_signals())
    finally:
        bus.close()
    stats = router.stats
    typer.echo(
        f"routed {stats.routed}, delivered {stats.delivered}, rejected {stats.rejected}, "
        f"duplicates {stats.duplicates}, aborted batches {stats.aborted}"
    )


# -- audit -------------------------------------------------------------------------------------


def _service_starting(service: str, s, **context: object) -> None:  # type: ignore[no-untyped-def]
    """The line that starts a service names its Kafka security: SASL_SSL, or plaintext as
    development only (RELIABILITY.md AZ-8)."""
    log.info(f"{service}_starting", kafka_security=bootstrap.kafka_mode(s), **context)


def _stop_on_signals():  # type: ignore[no-untyped-def]
    """A ``should_stop`` callable that turns true on SIGTERM or SIGINT."""
    import signal

    stopping = {"now": False}

    def stop(*_: object) -> None:
        stopping["now"] = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    return lambda: stopping["now"]


@audit_app.command("run")
def audit_run(
    checkpoint_every: int = typer.Option(1000, help="sign a checkpoint every N entries"),
    checkpoint_seconds: float = typer.Option(5.0, help="and the head after T seconds"),
    until_idle: float = typer.Option(None, help="stop after this many idle seconds"),
) -> None:
    """Append hub.audit to the hash-chained trail, signing checkpoints."""
    from hub.adapters.audit_consumer import run_materialiser
    from hub.adapters.audit_store import open_audit_store
    from hub.audit.checkpoint import load_signer
    from hub.audit.commands import keys_dir

    s = bootstrap.settings()
    _service_starting("audit_materialiser", s)
    worker = run_materialiser(
        bootstrap=s.bootstrap_servers,
        topic=bootstrap.topics(s).audit,
        store=open_audit_store(s.hub_database_url),
        signer=load_signer(keys_dir(s.home)),
        should_stop=_stop_on_signals(),
        checkpoint_every=checkpoint_every,
        checkpoint_interval_s=checkpoint_seconds,
        idle_stop_s=until_idle,
    )
    result = worker.result
    typer.echo(f"appended {result.appended}, rejected {result.rejected}, skipped {result.skipped}")


@audit_app.command("verify")
def audit_verify(
    witness: Path = typer.Option(None, "--witness", help="a checkpoint exported earlier"),
    public_key: list[Path] = typer.Option(
        None, "--public-key", help="the auditor's copy of the public key (repeatable)"
    ),
) -> None:
    """Re-walk the chain and the signatures; exit 3 on any break."""
    from hub.adapters.audit_store import open_audit_store
    from hub.audit.commands import default_public_key, verify_trail

    s = bootstrap.settings()
    keys = list(public_key or []) or [default_public_key(s.home)]
    report = verify_trail(open_audit_store(s.hub_database_url), keys, witness)
    typer.echo(report.summary())
    for note in report.notes:
        typer.echo(f"note: {note}")
    report.raise_if_broken()


@audit_app.command("checkpoint")
def audit_checkpoint(
    export: Path = typer.Option(..., "--export", help="write the latest signed head here"),
) -> None:
    """Export the latest signed checkpoint for an outside witness."""
    from hub.adapters.audit_store import open_audit_store
    from hub.audit.commands import export_checkpoint

    cp = export_checkpoint(open_audit_store(bootstrap.settings().hub_database_url), export)
    typer.echo(f"checkpoint of {cp.size} entries written to {export}")


@audit_app.command("public-key")
def audit_public_key() -> None:
    """Print the audit signing key's public half (PEM), for auditors to keep."""
    from hub.audit.checkpoint import export_public_key
    from hub.audit.commands import keys_dir

    typer.echo(export_public_key(keys_dir(bootstrap.settings().home)), nl=False)


def _audit_subject_ref(s, subject: str) -> str:  # type: ignore[no-untyped-def]
    """The audit pseudonym of the subject an auditor names (AGENCY:LOCAL_ID, hs-..., or itself)."""
    from hub.adapters.policy_store import SqlPolicyState
    from hub.audit import query
    from hub.policy import PseudonymKeys

    return query.resolve_subject(subject, query.SubjectSources(
        keys=lambda: PseudonymKeys(bootstrap.pseudonym_master(s)),
        state=lambda: SqlPolicyState(bootstrap.engine_for(s.hub_database_url)),
        agencies=lambda: {a.id: a.jurisdiction for a in bootstrap.agreements().agencies()},
        schemes=lambda: [c.code for c in bootstrap.catalogue().reference_list(
            "identifier_schemes").codes if c.kind == "person"],
    ))  # fmt: skip


def _audited_queries(s, actor: str, justification: str | None):  # type: ignore[no-untyped-def]
    """Runs auditor queries, writing each to hub.audit before its result is shown."""
    from hub.adapters.kafka import SafeProducer, producer_config
    from hub.audit import query

    producer = SafeProducer(producer_config(s.bootstrap_servers, **{"message.timeout.ms": 5000}))
    return query.AuditedQueries(producer, bootstrap.topics(s).audit, actor, justification)


@audit_app.command("search")
def audit_search(
    subject: str = typer.Option(
        None, "--subject", help="police:MP-0042, AGENCY:SCHEME:ID, hs-... or the audit pseudonym"
    ),
    agency: str = typer.Option(None, "--agency", help="as source or recipient (mals: mals.*)"),
    audience: str = typer.Option(None, "--audience", help="e.g. police.iom"),
    agreement: str = typer.Option(None, "--agreement", help="agreement id"),
    clause: str = typer.Option(None, "--clause", help="clause id"),
    kind: str = typer.Option(None, "--kind", help="delivered, decided, rejected, retracted..."),
    decision: str = typer.Option(None, "--decision", help="permit or deny (decided entries)"),
    since: str = typer.Option(None, "--since", help="from this day or ISO time (UTC)"),
    until: str = typer.Option(None, "--until", help="before this time; a day counts whole"),
    limit: int = typer.Option(100, "--limit", help="at most this many entries"),
    csv_file: Path = typer.Option(None, "--csv", help="write every column to this CSV file"),
    actor: str = typer.Option(None, "--actor", help="who asks (default: the OS user)"),
    justification: str = typer.Option(None, "--justification", help="why (kept on the trail)"),
) -> None:
    """Search the trail by subject, agency, agreement, clause, decision, time (audited)."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from hub.adapters.audit_store import open_audit_store
    from hub.audit import query, reports

    s = bootstrap.settings()
    subject_ref = None
    if subject:
        subject_ref = _audit_subject_ref(s, subject)
    filters = reports.SearchFilters(
        subject_ref=subject_ref, agency=agency, audience=audience, agreement_id=agreement,
        clause_id=clause, kind=kind, decision=decision,
        since=query.parse_since(since) if since else None,
        until=query.parse_when(until, "--until") if until else None, limit=limit,
    )  # fmt: skip
    store = open_audit_store(s.hub_database_url)
    auditor = _audited_queries(s, actor or query.default_actor(), justification)
    result = auditor.run(
        "audit search", {**filters.recorded(), "output": "csv" if csv_file else "table"},
        lambda: reports.search(store, filters), subject_ref=subject_ref,
    )  # fmt: skip
    more = f" (more match: narrow the filters or raise --limit {limit})" if result.truncated else ""
    if csv_file:
        rows = [reports.entry_row(stored) for stored in result.entries]
        csv_file.write_text(reports.to_csv((reports.ENTRY_COLUMNS, rows)), encoding="utf-8")
        typer.echo(f"{len(rows)} entries written to {csv_file}{more}")
        return
    columns, rows = reports.search_table(result)
    table = Table(*columns)
    for row in rows:
        table.add_row(*(Text(cell) for cell in row))
    Console().print(table)
    typer.echo(f"{len(rows)} entries{more}")


@audit_app.command("disclosure-report")
def audit_disclosure_report(
    subject: str = typer.Option(
        ..., "--subject", help="police:MP-0042, AGENCY:SCHEME:ID, hs-... or the audit pseudonym"
    ),
    as_of: str = typer.Option(
        None, "--as-of", help="what was held before this time; a day counts whole"
    ),
    agency: str = typer.Option(None, "--agency", help="only deliveries to this agency"),
    html_file: Path = typer.Option(None, "--html", help="write a printable HTML report here"),
    csv_file: Path = typer.Option(None, "--csv", help="write the entries to this CSV file"),
    actor: str = typer.Option(None, "--actor", help="who asks (default: the OS user)"),
    justification: str = typer.Option(None, "--justification", help="why (kept on the trail)"),
) -> None:
    """One subject's disclosures: who got which fields, when, under which clause (audited)."""
    from datetime import UTC, datetime

    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from hub.adapters.audit_store import open_audit_store
    from hub.audit import query, reports

    s = bootstrap.settings()
    subject_ref = _audit_subject_ref(s, subject)
    instant = query.parse_when(as_of, "--as-of") if as_of else None
    store = open_audit_store(s.hub_database_url)
    who = actor or query.default_actor()
    auditor = _audited_queries(s, who, justification)
    outputs = [name for name, path in (("html", html_file), ("csv", csv_file)) if path]
    report = auditor.run(
        "audit disclosure-report",
        {"as_of": instant, "agency": agency, "output": ",".join(outputs) or "table"},
        lambda: reports.disclosure_report(
            store, subject_ref, subject=subject, as_of=instant, agency=agency
        ),
        subject_ref=subject_ref,
    )
    console = Console()
    for title, (columns, rows) in (
        ("Recipients", reports.disclosure_summary(report)),
        (
            "Deliveries, retractions and corrections",
            reports.disclosure_table(report, reports.DISCLOSURE_BRIEF),
        ),
    ):
        table = Table(*columns, title=title)
        for row in rows:
            table.add_row(*(Text(cell) for cell in row))
        console.print(table)
    if html_file:
        page = reports.disclosure_html(report, generated_by=who, generated_at=datetime.now(UTC))
        html_file.write_text(page, encoding="utf-8")
        typer.echo(f"written {html_file}")
    if csv_file:
        csv_file.write_text(reports.to_csv(reports.disclosure_table(report)), encoding="utf-8")
        typer.echo(f"written {csv_file}")


@audit_app.command("denials")
def audit_denials(
    since: str = typer.Option(None, "--since", help="from this day or ISO time (UTC)"),
    until: str = typer.Option(None, "--until", help="before this time; a day counts whole"),
    agency: str = typer.Option(None, "--agency", help="as source or recipient"),
    csv_file: Path = typer.Option(None, "--csv", help="write them to this CSV file"),
    actor: str = typer.Option(None, "--actor", help="who asks (default: the OS user)"),
    justification: str = typer.Option(None, "--justification", help="why (kept on the trail)"),
) -> None:
    """Deny decisions and DLQ rejections, with their reasons (audited)."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from hub.adapters.audit_store import open_audit_store
    from hub.audit import query, reports

    s = bootstrap.settings()
    start = query.parse_since(since) if since else None
    end = query.parse_when(until, "--until") if until else None
    store = open_audit_store(s.hub_database_url)
    auditor = _audited_queries(s, actor or query.default_actor(), justification)
    found = auditor.run(
        "audit denials",
        {"since": start, "until": end, "agency": agency, "output": "csv" if csv_file else "table"},
        lambda: reports.denials(store, since=start, until=end, agency=agency),
    )
    data = reports.denials_table(found)
    if csv_file:
        csv_file.write_text(reports.to_csv(data), encoding="utf-8")
        typer.echo(f"{len(found)} denials and rejections written to {csv_file}")
        return
    table = Table(*data[0])
    for row in data[1]:
        table.add_row(*(Text(cell) for cell in row))
    Console().print(table)
    typer.echo(f"{len(found)} denials and rejections")


@audit_app.command("sharing")
def audit_sharing(
    by: str = typer.Option("month", "--by", help="month, quarter or year"),
    since: str = typer.Option(None, "--since", help="from this day or ISO time (UTC)"),
    until: str = typer.Option(None, "--until", help="before this time; a day counts whole"),
    agency: str = typer.Option(None, "--agency", help="as source or recipient"),
    csv_file: Path = typer.Option(None, "--csv", help="write the pairs to this CSV file"),
    actor: str = typer.Option(None, "--actor", help="who asks (default: the OS user)"),
    justification: str = typer.Option(None, "--justification", help="why (kept on the trail)"),
) -> None:
    """Deliveries per source agency -> audience pair per month: sharing over time (audited)."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from hub.adapters.audit_store import open_audit_store
    from hub.audit import query, reports

    s = bootstrap.settings()
    start = query.parse_since(since) if since else None
    end = query.parse_when(until, "--until") if until else None
    store = open_audit_store(s.hub_database_url)
    auditor = _audited_queries(s, actor or query.default_actor(), justification)
    rows = auditor.run(
        "audit sharing",
        {"by": by, "since": start, "until": end, "agency": agency,
         "output": "csv" if csv_file else "table"},
        lambda: reports.sharing(store, by=by, since=start, until=end, agency=agency),
    )  # fmt: skip
    if csv_file:
        csv_file.write_text(reports.to_csv(reports.sharing_table(rows)), encoding="utf-8")
        typer.echo(f"{len(rows)} rows written to {csv_file}")
        return
    console = Console()
    for title, (columns, cells) in (
        ("Deliveries per partner pair", reports.sharing_table(rows)),
        ("All partners", reports.sharing_totals(rows)),
    ):
        table = Table(*columns, title=title)
        for row in cells:
            table.add_row(*(Text(cell) for cell in row))
        console.print(table)


# -- policy ------------------------------------------------------------------------------------


@policy_app.command("check")
def policy_check(
    root: Path = typer.Option(None, "--policies", help="agreements directory"),
) -> None:
    """Validate agencies.yaml and every agreement; exit 1 naming each problem."""
    from hub import policytool

    problems = policytool.check(root)
    for problem in problems:
        typer.secho(problem, fg=typer.colors.RED, err=True)
    if problems:
        raise typer.Exit(1)
    typer.echo("policies: ok")


@policy_app.command("explain")
def policy_explain(
    event: Path = typer.Argument(..., help="an event as JSON (envelope and payload)"),
    audience: str = typer.Option(..., "--audience", help="e.g. mals, mals.mentor, police.iom"),
) -> None:
    """For one event and audience: each field kept, dropped or transformed, and by which clause."""
    from hub import policytool

    cat = bootstrap.catalogue()
    agreement_set = bootstrap.agreements(cat)
    record = policytool.event_from_json(event, cat)
    decision, rows = policytool.explain(record, audience, agreement_set)
    typer.echo(policytool.explain_text(decision, rows))


@policy_app.command("matrix")
def policy_matrix(
    by: str = typer.Option("data_class", help="data_class or event_type"),
    html: Path = typer.Option(None, "--html", help="also write the matrix as an HTML page"),
) -> None:
    """Who may see what, rendered from the agreements."""
    from hub import policytool

    agreement_set = bootstrap.agreements()
    typer.echo(policytool.matrix_text(agreement_set, by))
    if html:
        html.write_text(policytool.matrix_html(agreement_set, by), encoding="utf-8")
        typer.echo(f"written {html}")


@policy_app.command("diff")
def policy_diff(
    before: Path = typer.Argument(..., help="the agreements directory as it is"),
    after: Path = typer.Argument(..., help="the agreements directory as proposed"),
) -> None:
    """What a change to the agreements would newly share or stop sharing."""
    from hub import policytool
    from hub.policy import load_agreements

    cat = bootstrap.catalogue()
    rows = policytool.diff(load_agreements(before, cat), load_agreements(after, cat))
    typer.echo(policytool.diff_text(rows))


# -- views -------------------------------------------------------------------------------------


def _view_db(audience: str, db: str | None) -> str:
    return db or f"sqlite:///{bootstrap.settings().home / 'views' / (audience + '.db')}"


@view_app.command("run")
def view_run(
    audience: str = typer.Option(..., "--audience", help="whose view, e.g. mals"),
    db: str = typer.Option(None, "--db", help="database URL [default: SQLite under HUB_HOME]"),
    instance_id: str = typer.Option(None, "--instance-id", help="static group membership id"),
    batch_size: int = typer.Option(1000, "--batch-size"),
) -> None:
    """Keep an audience's database current from deliver.<audience>, exactly once."""
    from hub.adapters.view_consumer import main_run

    _service_starting("view", bootstrap.settings(), audience=audience)
    stats = main_run(
        bootstrap.settings(), audience, _view_db(audience, db), instance_id=instance_id,
        batch_size=batch_size,
    )  # fmt: skip
    typer.echo(str(stats))


@view_app.command("rebuild")
def view_rebuild(
    audience: str = typer.Option(..., "--audience"),
    db: str = typer.Option(None, "--db", help="database URL [default: SQLite under HUB_HOME]"),
    batch_size: int = typer.Option(5000, "--batch-size"),
) -> None:
    """Empty the view and replay deliver.<audience> from the beginning."""
    from hub.adapters.view_consumer import main_rebuild

    stats = main_rebuild(
        bootstrap.settings(), audience, _view_db(audience, db), batch_size=batch_size
    )
    typer.echo(str(stats))


@view_app.command("purge")
def view_purge(
    audience: str = typer.Option(..., "--audience"),
    db: str = typer.Option(None, "--db", help="database URL [default: SQLite under HUB_HOME]"),
) -> None:
    """Delete the rows past their clause's retention date; one retention_purge audit entry."""
    import getpass

    purged = bootstrap.purge_view(
        bootstrap.settings(), audience, _view_db(audience, db), actor=getpass.getuser()
    )
    typer.echo(f"purged {purged.rows} rows of {purged.subjects} subjects (as of {purged.as_of})")


# -- keys and erasure (field-level encryption, crypto-shredding) ------------------------------

keys_app = typer.Typer(no_args_is_help=True, help="Field-encryption keys (KEK, DEKs).")
subject_app = typer.Typer(no_args_is_help=True, help="People the hub holds data about.")
app.add_typer(keys_app, name="keys")
app.add_typer(subject_app, name="subject")


@keys_app.command("rotate")
def keys_rotate() -> None:
    """A new KEK version: new DEKs are wrapped by it; the old versions still unwrap theirs."""
    version = bootstrap.rotate_kek(bootstrap.settings())
    typer.echo(f"KEK version {version} is current")


@subject_app.command("erase")
def subject_erase(
    subject_ids: list[str] = typer.Argument(..., help="hub subject id(s); merged ids too"),
    justification: str = typer.Option(..., "--justification", help="why (kept in the audit)"),
) -> None:
    """Crypto-shred a person: destroy their keys, delete their view rows, audit it."""
    import getpass

    if not justification.strip():
        raise typer.BadParameter("must not be empty", param_hint="--justification")
    done = bootstrap.erase_subjects(
        bootstrap.settings(), subject_ids, justification, actor=getpass.getuser()
    )
    typer.echo(f"erased: {done.keys_destroyed} keys destroyed, {done.retractions} retractions to "
               f"{', '.join(done.audiences) or 'no audience'}")  # fmt: skip


# -- identity ----------------------------------------------------------------------------------


def _identity_publisher(s, agency: str):  # type: ignore[no-untyped-def]
    from hub.adapters.kafka import SafeProducer, producer_config
    from hub.publisher import Publisher

    agreements = bootstrap.agreements()
    if not agreements.has_agency(agency):
        raise typer.BadParameter(
            f"{agency!r} is not in policies/agencies.yaml", param_hint="--agency"
        )
    return Publisher(
        agency=agency, source_system="hub-identity",
        jurisdiction=agreements.agency(agency).jurisdiction, codec=bootstrap.codec(s),
        sink=SafeProducer(producer_config(s.bootstrap_servers)), topics=bootstrap.topics(s),
    )  # fmt: skip


def _identity_records(s):  # type: ignore[no-untyped-def]
    from hub.adapters.identity_topic import read_records

    return read_records(s.bootstrap_servers, bootstrap.topics(s).identity, bootstrap.codec(s))


def _now():  # type: ignore[no-untyped-def]
    import datetime as dt

    return dt.datetime.now(dt.UTC).replace(microsecond=0)


@identity_app.command("candidates")
def identity_candidates() -> None:
    """Open candidate pairs (same date of birth, similar names): confirm or reject each."""
    from hub.identitytool import open_candidates

    proposals = open_candidates(_identity_records(bootstrap.settings()))
    for p in proposals:
        score = f"{p.similarity:.2f}" if p.similarity is not None else "-"
        typer.echo(f"{p.candidate_id}  {'|'.join(p.left)}  ~  {'|'.join(p.right)}  name {score}")
    typer.echo(f"{len(proposals)} open candidate(s)")


def _decide(candidate: str, agency: str, by: str, reason: str | None, confirm: bool) -> None:
    from hub.adapters.identity_topic import append
    from hub.identitytool import decide

    s = bootstrap.settings()
    publisher = _identity_publisher(s, agency)
    topic = bootstrap.topics(s).identity
    decision = decide(
        _identity_records(s), candidate, confirm=confirm, publisher=publisher,
        append=lambda r: append(s.bootstrap_servers, topic, publisher.codec, r), by=by,
        reason=reason, now=_now(),
    )  # fmt: skip
    link = decision["link_event_id"]
    typer.echo(f"{decision['decision']}: {candidate}" + (f" (link event {link})" if link else ""))


@identity_app.command("confirm")
def identity_confirm(
    candidate: str = typer.Argument(..., help="candidate id (hub identity candidates)"),
    agency: str = typer.Option(..., "--agency", help="the deciding user's agency"),
    by: str = typer.Option(..., "--by", help="the deciding user"),
    reason: str = typer.Option(None, "--reason"),
) -> None:
    """The two records are one person: publish the link; the router merges and views follow."""
    _decide(candidate, agency, by, reason, confirm=True)


@identity_app.command("reject")
def identity_reject(
    candidate: str = typer.Argument(...),
    agency: str = typer.Option(..., "--agency"),
    by: str = typer.Option(..., "--by"),
    reason: str = typer.Option(None, "--reason"),
) -> None:
    """The two records are different people: record the decision (nothing is linked)."""
    _decide(candidate, agency, by, reason, confirm=False)


@identity_app.command("link")
def identity_link(
    scheme: str = typer.Option(..., "--scheme"),
    value: str = typer.Option(..., "--id"),
    to_scheme: str = typer.Option(..., "--to-scheme"),
    to_value: str = typer.Option(..., "--to-id"),
    agency: str = typer.Option(..., "--agency"),
    by: str = typer.Option(..., "--by"),
    reason: str = typer.Option(None, "--reason"),
) -> None:
    """Two identifiers are one person (a person.identifier_linked the router applies)."""
    from hub.identitytool import link_event

    s = bootstrap.settings()
    publisher = _identity_publisher(s, agency)
    now = _now()
    record = link_event(
        publisher, by=by, left=(scheme, value), right=(to_scheme, to_value), reason=reason,
        key=f"{scheme}:{value}|{to_scheme}:{to_value}|{now.isoformat()}", now=now,
    )  # fmt: skip
    publisher.flush()
    typer.echo(f"link event {record['envelope']['event_id']}")


@identity_app.command("unlink")
def identity_unlink(
    agency: str = typer.Option(..., "--agency"),
    by: str = typer.Option(..., "--by"),
    reason: str = typer.Option("mislinked_record", "--reason", help="a correction_reasons code"),
    scheme: str = typer.Option(None, "--scheme", help="identifier linked to the wrong person"),
    value: str = typer.Option(None, "--id"),
    event: str = typer.Option(None, "--event", help="event attached to the wrong person"),
    relinked: str = typer.Option(None, "--relinked-local-id"),
    notes: str = typer.Option(None, "--notes"),
) -> None:
    """A wrong link (S8): split the subject, or retract an event from everyone who got it."""
    from hub.identitytool import unlink_event

    s = bootstrap.settings()
    publisher = _identity_publisher(s, agency)
    identifier = (scheme, value) if scheme and value else None
    record = unlink_event(
        publisher, by=by, reason=reason, identifier=identifier, event_id=event,
        relinked_local_id=relinked, notes=notes, now=_now(),
    )  # fmt: skip
    publisher.flush()
    typer.echo(f"unlink event {record['envelope']['event_id']}")


# -- benchmarks --------------------------------------------------------------------------------


def _print_figures(figures: dict) -> None:  # type: ignore[type-arg]
    for key, value in figures.items():
        typer.echo(
            f"{key:>32}: {value:,.1f}" if isinstance(value, float) else f"{key:>32}: {value}"
        )


@bench_app.command("audit")
def bench_audit(n: int = typer.Option(100_000, "--n", help="entries")) -> None:
    """Audit entries appended per second by the materialiser and verified per second."""
    from hub.adapters.audit_store import open_audit_store
    from hub.audit.bench import bench_audit as run

    _print_figures(run(n, open_store=open_audit_store))


@bench_app.command("view")
def bench_view(
    n: int = typer.Option(20_000, "--n", help="deliveries"),
    db: str = typer.Option(None, "--db", help="a scratch database URL (it is emptied)"),
    batch_size: int = typer.Option(1000, "--batch-size"),
) -> None:
    """Deliveries applied per second, exactly once, beside a plain bulk upsert of the same rows."""
    import tempfile

    from hub.adapters.view_bench import bench_view as run

    url = db or f"sqlite:///{tempfile.mkdtemp(prefix='hub-bench-view-')}/view.db"
    _print_figures(run(n, url, batch_size=batch_size))


# -- demo and router benchmark -----------------------------------------------------------------


@app.command("demo")
def demo(
    size: int = typer.Option(
        240, "--size", help="people in Knowsley (a quarter as many each in The Hague and Turin)"
    ),
    seed: int = typer.Option(20150302, "--seed", help="seed of the fictional data"),
    serve: bool = typer.Option(True, "--serve/--no-serve", help="then run the portal until Ctrl-C"),
    port: int = typer.Option(8080, "--port", help="the portal's port"),
) -> None:
    """The whole hub on fictional data through the real broker: each partner's export through its
    connector, route, audit, six audience views; then what each audience got, what was withheld
    and why; then the portal with demo sign-ins (--no-serve stops after the report). Leaves the
    broker running (hub broker stop)."""
    from hub import demo as the_demo

    code = the_demo.main(size=size, seed=seed, serve=serve, port=port)
    if code:
        raise typer.Exit(code)


@bench_app.command("router")
def bench_router(
    n: int = typer.Option(20_000, "--n", help="events pre-loaded per run (throughput)"),
    repeats: int = typer.Option(3, "--repeats", help="interleaved (baseline, router) pairs per k"),
    rate: float = typer.Option(50.0, "--rate", help="events/s in the latency phase (0: skip it)"),
    seconds: float = typer.Option(10.0, "--seconds", help="timed length of the latency phase"),
    warmup: float = typer.Option(2.0, "--warmup", help="untimed start of the latency phase"),
) -> None:
    """Router events/s and end-to-end p50/p99 latency through the broker with 3 and 5 audiences,
    beside a no-policy transactional baseline measured in the same run."""
    from hub.adapters.router_bench import main_bench

    main_bench(
        bootstrap.settings(), build_router=bootstrap.build_router, init=bootstrap.init,
        echo=typer.echo, n=n, repeats=repeats, rate=rate, seconds=seconds, warmup_s=warmup,
    )  # fmt: skip


# -- web ---------------------------------------------------------------------------------------

web_app = typer.Typer(no_args_is_help=True, help="The practitioners' portal.")
app.add_typer(web_app, name="web")


@web_app.command("serve")
def web_serve(
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8080, "--port"),
    views: str = typer.Option(
        None, "--views", help="view database URL with {audience} [default: SQLite under HUB_HOME]"
    ),
    users_db: str = typer.Option(None, "--users-db", help="[default: HUB_HOME/web/users.db]"),
    secure_cookies: bool = typer.Option(False, "--secure-cookies", help="behind TLS"),
) -> None:
    """Serve the portal (server-rendered pages) with uvicorn."""
    import uvicorn

    from hub.web import WebConfig, create_app

    config = WebConfig.from_settings(
        bootstrap.settings(), views_url=views, users_url=users_db, secure_cookies=secure_cookies
    )
    _service_starting("web", bootstrap.settings(), host=host, port=port)
    # no access log: it would write query strings (subject ids, search terms) to the log
    uvicorn.run(create_app(config), host=host, port=port, server_header=False, log_config=None,
                access_log=False)  # fmt: skip


@web_app.command("add-user")
def web_add_user(
    name: str = typer.Argument(..., help="user name"),
    audience: str = typer.Option(..., "--audience", help="whose view, e.g. police.iom"),
    role: str = typer.Option(..., "--role", help="practitioner, mentor or auditor"),
    mentor_id: str = typer.Option(None, "--mentor-id", help="a mentor's id at their charity"),
    password_stdin: bool = typer.Option(False, "--password-stdin", help="read the password"),
    users_db: str = typer.Option(None, "--users-db", help="[default: HUB_HOME/web/users.db]"),
) -> None:
    """Add a portal user; the password is prompted for (or read from standard input)."""
    from hub.domain.errors import InputError
    from hub.web import WebConfig
    from hub.web.users import open_user_store

    known = bootstrap.agreements().audiences()
    if audience not in known and not (role == "auditor" and audience == "hub"):
        raise InputError(f"--audience {audience!r} (expected one of {', '.join(known)})")
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    config = WebConfig.from_settings(bootstrap.settings(), users_url=users_db)
    user = open_user_store(config.users_url).add(name, audience, role, password, mentor_id)
    typer.echo(f"added {user.username} ({user.role}, {user.audience})")


# -- HTTP ingest -------------------------------------------------------------------------------

ingest_app = typer.Typer(no_args_is_help=True, help="The HTTP ingest API (partners without Kafka).")
app.add_typer(ingest_app, name="ingest")


def _ingest_tokens(tokens_db: str | None):  # type: ignore[no-untyped-def]
    from connectors.http_ingest.tokens import open_token_store

    url = tokens_db or f"sqlite:///{bootstrap.settings().home / 'ingest' / 'tokens.db'}"
    return open_token_store(url)


def _known_agency(agency: str) -> str:
    from hub.domain.errors import InputError

    known = sorted(a.id for a in bootstrap.agreements().agencies())
    if agency not in known:
        raise InputError(f"agency {agency!r} is not in policies/agencies.yaml "
                         f"(expected one of: {', '.join(known)})")  # fmt: skip
    return agency


@ingest_app.command("serve")
def ingest_serve(
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8090, "--port"),
    tokens_db: str = typer.Option(None, "--tokens-db", help="[default: HUB_HOME/ingest/tokens.db]"),
) -> None:
    """Serve POST /v1/events and /v1/events/batch; 202 only once the broker acknowledged."""
    from connectors.http_ingest.app import IngestConfig, serve

    s = bootstrap.settings()
    codec = bootstrap.codec(s)
    codec.register_all()
    jurisdictions = {a.id: a.jurisdiction for a in bootstrap.agreements(codec.catalogue).agencies()}
    config = IngestConfig(s.bootstrap_servers, bootstrap.topics(s), jurisdictions,
                          fields=bootstrap.field_crypto(s, codec.catalogue))  # fmt: skip
    _service_starting("ingest_api", s, host=host, port=port)
    serve(config, _ingest_tokens(tokens_db), codec, host, port)


@ingest_app.command("add-token")
def ingest_add_token(
    agency: str = typer.Argument(..., help="the agency the token writes as, e.g. probation_crc"),
    tokens_db: str = typer.Option(None, "--tokens-db", help="[default: HUB_HOME/ingest/tokens.db]"),
) -> None:
    """Make the agency's bearer token (replacing its old one); it is shown once, stored hashed."""
    token = _ingest_tokens(tokens_db).issue(_known_agency(agency))
    typer.echo(token)


@ingest_app.command("revoke-token")
def ingest_revoke_token(
    agency: str = typer.Argument(...),
    tokens_db: str = typer.Option(None, "--tokens-db", help="[default: HUB_HOME/ingest/tokens.db]"),
) -> None:
    """Remove the agency's token: its requests are refused from now on."""
    if not _ingest_tokens(tokens_db).revoke(agency):
        raise HubError(f"agency {agency!r} has no ingest token")
    typer.echo(f"revoked the token of {agency}")


@ingest_app.command("tokens")
def ingest_tokens(
    tokens_db: str = typer.Option(None, "--tokens-db", help="[default: HUB_HOME/ingest/tokens.db]"),
) -> None:
    """List the agencies that hold a token (fingerprint and date, never the token)."""
    for info in _ingest_tokens(tokens_db).list():
        typer.echo(f"{info.agency:<20} {info.fingerprint}  {info.created_at:%Y-%m-%d %H:%M}")


# -- connectors --------------------------------------------------------------------------------


@connector_run_app.command("mals-sink")
def connector_mals_sink(
    db: str = typer.Option(..., "--db", help="MALS' client database URL"),
    once: bool = typer.Option(False, "--once", help="stop at the end of deliver.mals"),
) -> None:
    """Write referrals delivered to MALS into MALS' own referrals table (minimum dataset)."""
    from connectors.mals.sink import run_sink

    s = bootstrap.settings()
    _service_starting("connector_mals_sink", s)
    result = run_sink(db, s.bootstrap_servers, s.schema_registry_url, s.topic_prefix, once=once,
                      fields=bootstrap.field_crypto(s))  # fmt: skip
    typer.echo(str(result))


@connector_run_app.command("mals-source")
def connector_mals_source(
    db: str = typer.Option(..., "--db", help="MALS' client database URL"),
    once: bool = typer.Option(False, "--once", help="stop when the outbox is empty"),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="queue failed rows again"),
) -> None:
    """Publish what MALS staff record (sessions, LCP, outcomes, consent) from the outbox."""
    from connectors.mals.source import run_source

    s = bootstrap.settings()
    _service_starting("connector_mals_source", s)
    result = run_source(
        db, s.bootstrap_servers, s.schema_registry_url, s.topic_prefix, once=once,
        retry=retry_failed,
    )  # fmt: skip
    typer.echo(str(result))


def _file_connector_command(name: str):  # type: ignore[no-untyped-def]
    def run(
        inputs: list[Path] = typer.Option(None, "--input", help="an export (repeatable)"),
        watch: Path = typer.Option(None, "--watch", help="a drop folder, until SIGTERM"),
        encoding: str = typer.Option(None, "--encoding", help="e.g. cp1252 for a non-UTF-8 file"),
        ledger: Path = typer.Option(None, "--ledger", help="default: HUB_HOME/connectors/NAME/"),
        quarantine: Path = typer.Option(None, "--quarantine", help="default: beside the input"),
        dry_run: bool = typer.Option(False, "--dry-run", help="check and count, send nothing"),
    ) -> None:
        from connectors.framework import (
            Ledger,
            MemorySink,
            build_publisher,
            default_progress,
            default_state_dir,
            run_file,
        )
        from connectors.mals.entry import stop_on_signals

        if bool(inputs) == bool(watch):
            raise typer.BadParameter("give --input FILE (one or more) or --watch DIR")
        s = bootstrap.settings()
        spec = _connector(name)
        if not dry_run:
            _service_starting(f"connector_{name.replace('-', '_')}", s)
        fields = None if dry_run else bootstrap.field_crypto(s)  # sealed when encryption is on
        publisher = build_publisher(spec, s.bootstrap_servers, s.schema_registry_url,
                                    s.topic_prefix, MemorySink() if dry_run else None,
                                    fields=fields)  # fmt: skip
        state = default_state_dir(s.home, spec)
        book = Ledger(":memory:" if dry_run else ledger or state / "ledger.sqlite")
        try:
            if watch:
                from connectors.framework import watch as watch_folder

                def report(path: Path, summary, error: str | None) -> None:  # type: ignore[no-untyped-def]
                    typer.echo(f"{path.name}: {error or summary.line()}", err=bool(error))

                total = watch_folder(spec, watch, publisher, book, stop_on_signals(),
                                     encoding=encoding, on_file=report)  # fmt: skip
                typer.echo(f"{name}: {total.line()}")
                return
            for path in inputs:
                progress, stop_progress = default_progress()
                try:
                    summary = run_file(spec, path, publisher, book, quarantine_dir=quarantine,
                                       encoding=encoding, progress=progress)  # fmt: skip
                finally:
                    stop_progress()
                for warning in summary.warnings:
                    typer.secho(f"warning: {warning}", fg=typer.colors.YELLOW, err=True)
                typer.echo(f"{path.name}: {summary.line()}{' (dry run)' if dry_run else ''}")
        finally:
            book.close()

    run.__doc__ = f"Publish {name} exports (see its MAPPING.md), or watch a drop folder."
    return run


def _connector(name: str):  # type: ignore[no-untyped-def]
    from connectors import connector

    return connector(name)


def _register_file_connectors() -> None:
    """One ``hub connector run <partner>`` per entry of ``connectors.PARTNERS``."""
    from connectors import PARTNERS

    for name in PARTNERS:
        connector_run_app.command(name)(_file_connector_command(name))


_register_file_connectors()


def main() -> None:
    try:
        logsetup.configure(bootstrap.settings().log_level)
        app()
    except pydantic.ValidationError as exc:
        problems = "; ".join(
            f"HUB_{'__'.join(str(p) for p in e['loc']).upper()}: {e['msg']}" for e in exc.errors()
        )
        typer.secho(f"error: configuration: {problems}", fg=typer.colors.RED, err=True)
        sys.exit(2)
    except HubError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
