"""Kafka principals and ACLs for the secure broker (RELIABILITY.md A7, B.5): ``hub agencies
provision`` and ``--revoke``.

One SCRAM-SHA-512 principal per agency (its id) and one per hub service (``hub-router``,
``hub-audit``, ``hub-web``, ``hub-view-<audience>``, ``hub-sink-<audience>``), each with only what
it needs; the broker's ``StandardAuthorizer`` denies everything else:

- an agency writes ``ingest.<agency>``, reads ``deliver.<audience>`` for its own audiences, and
  uses consumer groups named ``<agency>.<anything>``; nothing else, so it can neither join a
  view's or the router's group nor use the router's ``transactional.id``;
- the router reads every ``ingest.<agency>`` with its group, writes ``*.dlq``, ``deliver.*``,
  ``hub.audit`` and ``hub.identity``, under its ``transactional.id`` prefix;
- the audit materialiser reads ``hub.audit``; the portal (and the auditors' CLI) writes access
  records to ``hub.audit``;
- each view (and sink connector) reads its ``deliver.<audience>`` with its own group.

``provision`` makes the broker match the plan: it creates missing users and ACLs, deletes the
hub's own ACLs that the plan no longer has, and touches no principal the hub did not create.
Running it twice changes nothing. A revoked agency stays revoked (``HUB_HOME/security/revoked``)
until ``--restore``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialAlteration,
    UserScramCredentialDeletion,
    UserScramCredentialUpsertion,
)

from hub.adapters.kafka_security import ADMIN, Credentials, security_dir
from hub.domain.errors import InfraError, InputError
from hub.topics import Topics

log = structlog.get_logger(__name__)

ROUTER = "hub-router"
AUDIT = "hub-audit"
WEB = "hub-web"
AUDIT_GROUP = "hub-audit-materialiser"  # hub.adapters.audit_consumer (assign only)
# Sink connectors that read an audience's deliveries as a hub service: audience → group suffix.
SINKS: Mapping[str, str] = {"mals": "mals-sink"}
SCRAM_ITERATIONS = 8192


@dataclass(frozen=True, order=True)
class Grant:
    """One ALLOW ACL: ``principal`` may ``operation`` on a resource (any host)."""

    principal: str
    resource: str  # topic | group | transactional_id | cluster
    name: str
    pattern: str  # literal | prefixed
    operation: str  # read | write | idempotent_write


def view_principal(audience: str) -> str:
    return f"hub-view-{audience}"


def sink_principal(audience: str) -> str:
    return f"hub-sink-{audience}"


def plan(agencies: Sequence[tuple[str, Sequence[str]]], topics: Topics) -> dict[str, set[Grant]]:
    """Every principal the hub needs and its ACLs, from the agency registry: (id, audiences)."""
    p = topics.prefix
    grants: dict[str, set[Grant]] = {}

    def allow(who: str, resource: str, name: str, op: str, pattern: str = "literal") -> None:
        grants.setdefault(who, set()).add(Grant(who, resource, name, pattern, op))

    audiences = sorted(a for _, auds in agencies for a in auds)
    for agency, own in agencies:
        allow(agency, "topic", topics.ingest(agency), "write")
        allow(agency, "cluster", "kafka-cluster", "idempotent_write")
        for audience in own:
            allow(agency, "topic", topics.deliver(audience), "read")
        allow(agency, "group", f"{p}{agency}.", "read", "prefixed")

        allow(ROUTER, "topic", topics.ingest(agency), "read")
        allow(ROUTER, "topic", topics.dlq(agency), "write")
    for audience in audiences:
        allow(ROUTER, "topic", topics.deliver(audience), "write")
        viewer = view_principal(audience)
        allow(viewer, "topic", topics.deliver(audience), "read")
        allow(viewer, "group", f"{p}hub-view-{audience}", "read")
        allow(viewer, "group", f"{p}hub-view-{audience}-rebuild", "read")
    for audience, group in SINKS.items():
        if audience in audiences:
            allow(sink_principal(audience), "topic", topics.deliver(audience), "read")
            allow(sink_principal(audience), "group", f"{p}{group}", "read")
    for name in (topics.audit, topics.identity):
        allow(ROUTER, "topic", name, "write")
    allow(ROUTER, "group", f"{p}hub-router", "read")
    allow(ROUTER, "transactional_id", f"{p}hub-router-", "write", "prefixed")
    allow(ROUTER, "cluster", "kafka-cluster", "idempotent_write")
    allow(AUDIT, "topic", topics.audit, "read")
    allow(AUDIT, "group", AUDIT_GROUP, "read")
    allow(WEB, "topic", topics.audit, "write")
    allow(WEB, "cluster", "kafka-cluster", "idempotent_write")
    return grants


# -- the broker side ---------------------------------------------------------------------------

_RESOURCE = {
    "topic": ResourceType.TOPIC,
    "group": ResourceType.GROUP,
    "transactional_id": ResourceType.TRANSACTIONAL_ID,
    "cluster": ResourceType.BROKER,  # librdkafka's name for the Cluster resource
}
_PATTERN = {"literal": ResourcePatternType.LITERAL, "prefixed": ResourcePatternType.PREFIXED}
_OPERATION = {
    "read": AclOperation.READ,
    "write": AclOperation.WRITE,
    "idempotent_write": AclOperation.IDEMPOTENT_WRITE,
}


def _binding(grant: Grant) -> AclBinding:
    return AclBinding(
        _RESOURCE[grant.resource], grant.name, _PATTERN[grant.pattern],
        f"User:{grant.principal}", "*", _OPERATION[grant.operation], AclPermissionType.ALLOW,
    )  # fmt: skip


def _grant(binding: AclBinding) -> Grant | None:
    """The grant an ACL on the broker expresses, or None for one the hub never creates."""
    resources = {v: k for k, v in _RESOURCE.items()}
    patterns = {v: k for k, v in _PATTERN.items()}
    operations = {v: k for k, v in _OPERATION.items()}
    if (
        binding.permission_type != AclPermissionType.ALLOW
        or binding.host != "*"
        or binding.restype not in resources
        or binding.resource_pattern_type not in patterns
        or binding.operation not in operations
        or not binding.principal.startswith("User:")
    ):
        return None
    return Grant(
        binding.principal.removeprefix("User:"), resources[binding.restype], binding.name,
        patterns[binding.resource_pattern_type], operations[binding.operation],
    )  # fmt: skip


def _principal_filter(principal: str | None) -> AclBindingFilter:
    """Every ACL (of ``principal``); None matches anything (the stubs say str)."""
    return AclBindingFilter(
        ResourceType.ANY, None, ResourcePatternType.ANY,  # type: ignore[arg-type]
        None if principal is None else f"User:{principal}", None,  # type: ignore[arg-type]
        AclOperation.ANY, AclPermissionType.ANY,
    )  # fmt: skip


def _wait(futures: Mapping[Any, Any] | Iterable[Any], what: str, timeout: float) -> list[Any]:
    results = []
    for future in futures.values() if isinstance(futures, Mapping) else futures:
        try:
            results.append(future.result(timeout))
        except KafkaException as exc:
            raise InfraError(f"{what} failed: {exc.args[0].str()}") from exc
    return results


@dataclass
class ProvisionReport:
    users_created: list[str] = field(default_factory=list)
    acls_created: int = 0
    acls_deleted: int = 0
    acls_kept: int = 0
    revoked: list[str] = field(default_factory=list)


def revoked_path(home: Path) -> Path:
    return security_dir(home) / "revoked"


def revoked_agencies(home: Path) -> set[str]:
    try:
        return {line.strip() for line in revoked_path(home).read_text().splitlines() if line}
    except FileNotFoundError:
        return set()


def _write_revoked(home: Path, names: set[str]) -> None:
    revoked_path(home).parent.mkdir(parents=True, exist_ok=True)
    revoked_path(home).write_text("".join(f"{n}\n" for n in sorted(names)))


class AclAdmin:
    """Provisioning through the admin client of a super user (``hub-admin``)."""

    def __init__(self, config: Mapping[str, Any], home: Path, timeout: float = 30.0) -> None:
        self.admin = AdminClient(dict(config))
        self.home = home
        self.timeout = timeout

    def bindings(self, principal: str | None = None) -> list[AclBinding]:
        acl_filter = _principal_filter(principal)
        future = self.admin.describe_acls(acl_filter, request_timeout=self.timeout)
        return list(_wait([future], "describe_acls", self.timeout)[0])

    def scram_users(self, users: Iterable[str]) -> set[str]:
        """Those of ``users`` that have a SCRAM-SHA-512 credential on the broker."""
        wanted = sorted(set(users))
        if not wanted:
            return set()
        found = set()
        futures = self.admin.describe_user_scram_credentials(wanted, request_timeout=self.timeout)
        assert isinstance(futures, dict)  # one future per user when users are named
        for user, future in futures.items():
            try:
                description = future.result(self.timeout)
            except KafkaException as exc:
                if exc.args[0].code() == KafkaError.RESOURCE_NOT_FOUND:
                    continue
                raise InfraError(f"describe_user_scram_credentials failed: {exc}") from exc
            if any(
                info.mechanism == ScramMechanism.SCRAM_SHA_512
                for info in description.scram_credential_infos
            ):
                found.add(user)
        return found

    def provision(
        self, agencies: Sequence[tuple[str, Sequence[str]]], topics: Topics
    ) -> ProvisionReport:
        wanted = plan(agencies, topics)
        for agency in revoked_agencies(self.home):  # only its own principal: the hub's services
            wanted.pop(agency, None)  # keep routing to and from it
        credentials = Credentials(self.home)
        report = ProvisionReport()

        # Principals the hub created that the plan no longer has (an agency left the registry).
        for gone in sorted(set(credentials.passwords) - set(wanted) - {ADMIN}):
            self._revoke_principal(gone, credentials)
            report.revoked.append(gone)

        on_broker = self.scram_users(wanted)
        upserts: list[UserScramCredentialAlteration] = []
        for principal in sorted(wanted):
            password, created = credentials.ensure(principal)
            if created or principal not in on_broker:
                upserts.append(
                    UserScramCredentialUpsertion(
                        principal,
                        ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, SCRAM_ITERATIONS),
                        password.encode(),
                    )
                )
                report.users_created.append(principal)
        credentials.save()  # before the broker has them: a password is never lost
        if upserts:
            _wait(
                self.admin.alter_user_scram_credentials(upserts, request_timeout=self.timeout),
                "alter_user_scram_credentials",
                self.timeout,
            )

        managed = set(wanted) | set(credentials.passwords) - {ADMIN}
        existing: dict[Grant, AclBinding] = {}
        for binding in self.bindings():
            grant = _grant(binding)
            if grant is not None and grant.principal in managed:
                existing[grant] = binding
        desired = set().union(*wanted.values()) if wanted else set()
        missing = sorted(desired - set(existing))
        stale = [existing[g] for g in sorted(set(existing) - desired)]
        if missing:
            bindings = [_binding(g) for g in missing]
            _wait(
                self.admin.create_acls(bindings, request_timeout=self.timeout),
                "create_acls",
                self.timeout,
            )
        if stale:
            filters = [self._exact(b) for b in stale]
            _wait(
                self.admin.delete_acls(filters, request_timeout=self.timeout),
                "delete_acls",
                self.timeout,
            )
        report.acls_created, report.acls_deleted = len(missing), len(stale)
        report.acls_kept = len(desired) - len(missing)
        log.info(
            "kafka_acls_provisioned", principals=len(wanted), users_created=len(upserts),
            acls_created=len(missing), acls_deleted=len(stale), revoked=report.revoked,
        )  # fmt: skip
        return report

    @staticmethod
    def _exact(binding: AclBinding) -> AclBindingFilter:
        return AclBindingFilter(
            binding.restype, binding.name, binding.resource_pattern_type, binding.principal,
            binding.host, binding.operation, binding.permission_type,
        )  # fmt: skip

    def _revoke_principal(self, principal: str, credentials: Credentials) -> int:
        if principal == ADMIN:
            raise InputError(f"{ADMIN} is the broker's own principal and cannot be revoked")
        deleted = _wait(
            self.admin.delete_acls([_principal_filter(principal)], request_timeout=self.timeout),
            "delete_acls",
            self.timeout,
        )
        if principal in self.scram_users([principal]):
            deletion = UserScramCredentialDeletion(principal, ScramMechanism.SCRAM_SHA_512)
            _wait(
                self.admin.alter_user_scram_credentials([deletion], request_timeout=self.timeout),
                "alter_user_scram_credentials",
                self.timeout,
            )
        credentials.remove(principal)
        credentials.save()
        count = sum(len(d) for d in deleted)
        log.warning("kafka_principal_revoked", principal=principal, acls_deleted=count)
        return count

    def revoke(self, agency: str, known: Iterable[str]) -> int:
        """Delete the agency's SCRAM user and every ACL of its principal; it stays revoked until
        ``restore``. Returns the number of ACLs deleted."""
        if agency not in set(known):
            raise InputError(f"--revoke {agency!r}: not an agency of policies/agencies.yaml")
        _write_revoked(self.home, revoked_agencies(self.home) | {agency})
        return self._revoke_principal(agency, Credentials(self.home))

    def restore(self, agency: str) -> None:
        """Let the next ``provision`` give a revoked agency a new password and its ACLs again."""
        _write_revoked(self.home, revoked_agencies(self.home) - {agency})
