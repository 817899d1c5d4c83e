"""AZ-1 to AZ-8 of RELIABILITY.md B.5 against a real secure broker.

One broker for the module, started with ``hub broker start --secure`` on free ports in its own
HUB_HOME (SASL_SSL with SCRAM-SHA-512 only, the hub's CA, the KRaft StandardAuthorizer), with every
topic of the hub created by ``hub-admin`` and the principals and ACLs made by ``hub agencies
provision`` from policies/agencies.yaml. The expected permissions are worked out here from
agencies.yaml itself, not from the code that provisions them.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicCollection,
    TopicPartition,
)
from confluent_kafka.admin import (
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
    ResourcePatternType,
    ResourceType,
    ScramMechanism,
    UserScramCredentialDeletion,
)

from hub import bootstrap
from hub.adapters import kafka as kafka_clients
from hub.adapters.acl import AclAdmin
from hub.adapters.broker import LocalBroker
from hub.adapters.kafka import DeliveryFailed, SafeProducer, producer_config
from hub.adapters.kafka_security import Credentials, ca_path, client_security
from hub.adapters.tls import new_ca
from hub.publisher import Publisher
from hub.settings import BrokerSettings, KafkaSecuritySettings, RouterSettings, Settings
from hub.topics import Topics
from tests.conftest import REPO, free_port
from tests.factory import EventFactory
from tests.hubtest import run_router_until_idle

pytestmark = pytest.mark.kafka

HUB = str(Path(sys.executable).with_name("hub"))
AGENCIES = yaml.safe_load((REPO / "policies" / "agencies.yaml").read_text())["agencies"]
OPERATIONS = ("produce", "consume-assign", "consume-subscribe", "describe", "create", "delete",
              "alter-configs")  # fmt: skip
AUTH_ERRORS = {KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.CLUSTER_AUTHORIZATION_FAILED}
REAUTH_MS = 8000  # clients re-authenticate after about 7 s (AZ-7)


@dataclass
class Secure:
    settings: Settings  # hub-admin's
    env: dict[str, str]
    broker: LocalBroker
    topics: list[str]
    provision_output: str

    @property
    def bootstrap(self) -> str:
        return self.broker.bootstrap

    def config(self, principal: str, **extra: Any) -> dict[str, Any]:
        """A client configuration for ``principal`` with its password from the credentials file."""
        return {
            "bootstrap.servers": self.bootstrap,
            **client_security(self.settings, username=principal),
            "log_level": 2,  # the authorisation failures are the point: keep stderr quiet
            **extra,
        }

    def admin(self) -> AdminClient:
        return AdminClient(self.config("hub-admin"))


def hub(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([HUB, *args], env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secure]:
    home = tmp_path_factory.mktemp("secure-home")
    port, controller = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    env.update(
        HUB_HOME=str(home), HUB_BROKER__PORT=str(port), HUB_BROKER__CONTROLLER_PORT=str(controller),
        HUB_BROKER__MAX_REAUTH_MS=str(REAUTH_MS), HUB_KAFKA_SECURITY__MODE="sasl_ssl",
    )  # fmt: skip
    settings = Settings(
        home=home,
        broker=BrokerSettings(port=port, controller_port=controller, max_reauth_ms=REAUTH_MS),
        kafka_security=KafkaSecuritySettings(mode="sasl_ssl"),
    )
    broker = LocalBroker(settings)
    started = hub(env, "broker", "start", "--secure")
    try:
        assert started.returncode == 0, started.stderr
        assert "SASL_SSL" in started.stdout and "StandardAuthorizer" in started.stdout
        plan = bootstrap.topic_plan(settings, bootstrap.agreements())
        admin = AdminClient(
            {"bootstrap.servers": broker.bootstrap, **client_security(settings)}
        )
        for future in admin.create_topics(
            [NewTopic(name, parts, 1) for name, parts in plan.items()], operation_timeout=30
        ).values():
            future.result(30)
        provisioned = hub(env, "agencies", "provision")
        assert provisioned.returncode == 0, provisioned.stderr
        yield Secure(settings, env, broker, sorted(plan), provisioned.stdout)
    finally:
        broker.stop()


@contextlib.contextmanager
def process_security(config: dict[str, Any]) -> Iterator[None]:
    """Make the clients the hub builds in this process authenticate with ``config`` (what
    ``hub.bootstrap.settings()`` does for a service), then put the previous setting back."""
    previous = kafka_clients._security
    kafka_clients.use_security(lambda: config)
    try:
        yield
    finally:
        kafka_clients.use_security(previous)


def security_only(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k not in ("bootstrap.servers", "log_level")}


# -- the expected permissions, from agencies.yaml -----------------------------------------------


def expected(agency: str, operation: str, topics: Topics) -> set[str]:
    audiences = {topics.deliver(a) for a in AGENCIES[agency]["audiences"]}
    own = topics.ingest(agency)
    return {
        "produce": {own},
        "consume-assign": audiences,
        "consume-subscribe": audiences,
        "describe": {own} | audiences,
    }.get(operation, set())


# -- AZ-1: the ACL matrix ---------------------------------------------------------------------


def _futures(futures: dict[Any, Any], name: Any = lambda key: key) -> dict[str, Any]:
    """topic → True (allowed) or the error code of each admin future."""
    results: dict[str, Any] = {}
    for key, future in futures.items():
        try:
            future.result(30)
            results[name(key)] = True
        except KafkaException as exc:
            results[name(key)] = exc.args[0].code()
    return results


def _consume(consumer: Consumer, topics: set[str], budget_s: float = 15.0) -> dict[str, Any]:
    """topic → True once a record of it arrived, or its first error code; returns when every one
    of ``topics`` has an outcome (and whatever else came by then)."""
    results: dict[str, Any] = {}
    deadline = time.monotonic() + budget_s
    while not topics <= set(results) and time.monotonic() < deadline:
        for message in consumer.consume(500, 0.2):
            error = message.error()
            if message.topic() is None:
                continue
            if error is None:
                results.setdefault(message.topic(), True)
            else:
                results.setdefault(message.topic(), error.code())
    return results


RETRIABLE = {KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_NOT_AVAILABLE,
             KafkaError.COORDINATOR_LOAD_IN_PROGRESS}  # fmt: skip


def _committed(consumer: Consumer, partitions: list[TopicPartition]) -> list[TopicPartition]:
    """The group's committed offsets, waiting out a coordinator that is still starting (the first
    group of a fresh broker creates __consumer_offsets)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            return list(consumer.committed(partitions, timeout=10))
        except KafkaException as exc:
            if exc.args[0].code() not in RETRIABLE or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def check_principal(secure: Secure, agency: str) -> dict[tuple[str, str], Any]:
    """Every operation of ``agency`` on every topic: (operation, topic) → True or error code."""
    topics = secure.topics
    outcome: dict[tuple[str, str], Any] = {}
    admin = AdminClient(secure.config(agency))

    def record(operation: str, results: dict[str, Any]) -> None:
        for topic in topics:
            outcome[(operation, topic)] = results.get(topic, "no answer")

    record("describe", _futures(admin.describe_topics(TopicCollection(topics))))
    record("create", _futures(admin.create_topics(
        [NewTopic(t, 1, 1) for t in topics], validate_only=True, request_timeout=15)))
    record("delete", _futures(admin.delete_topics(topics, request_timeout=15)))
    retention = ConfigEntry("retention.ms", "604800000",
                            incremental_operation=AlterConfigOpType.SET)
    record("alter-configs", _futures(
        admin.incremental_alter_configs(
            [ConfigResource(ResourceType.TOPIC, t, incremental_configs=[retention])
             for t in topics], validate_only=True, request_timeout=15),
        name=lambda resource: resource.name,
    ))  # fmt: skip

    produced: dict[str, Any] = {}
    producer = Producer(secure.config(agency, **{
        "enable.idempotence": True, "acks": "all", "message.timeout.ms": 10_000}))  # fmt: skip

    def delivered(err: KafkaError | None, msg: Any) -> None:
        produced[msg.topic()] = True if err is None else err.code()

    for topic in topics:
        producer.produce(topic, value=b"", key=agency.encode(), partition=0, on_delivery=delivered)
    assert producer.flush(20) == 0
    record("produce", produced)

    consumer = Consumer(secure.config(agency, **{
        "group.id": f"{agency}.az1-assign", "enable.auto.commit": False,
        "isolation.level": "read_committed"}))  # fmt: skip
    # A topic the principal may not describe gives an assigned consumer no metadata, so no fetch
    # and no error event: ask for the group's committed offsets of those partitions (what an
    # assigned consumer does to find where to start), which the broker refuses per topic.
    visible = set(consumer.list_topics(timeout=10).topics) & set(topics)
    consumer.assign([TopicPartition(t, 0, 0) for t in topics])
    assigned = _consume(consumer, visible)
    hidden = [TopicPartition(t, 0) for t in sorted(set(topics) - visible)]
    for tp in _committed(consumer, hidden) if hidden else []:
        assigned.setdefault(tp.topic, tp.error.code() if tp.error else "offsets but no record")
    consumer.close()
    record("consume-assign", assigned)

    consumer = Consumer(secure.config(agency, **{
        "group.id": f"{agency}.az1-subscribe", "enable.auto.commit": False,
        "isolation.level": "read_committed", "auto.offset.reset": "earliest"}))  # fmt: skip
    consumer.subscribe(topics)
    record("consume-subscribe", _consume(consumer, set(topics)))
    consumer.close()
    return outcome


def test_az1_each_agency_can_do_exactly_what_agencies_yaml_provisions(secure: Secure) -> None:
    topics = Topics()
    # One record on partition 0 of each delivery topic, so an allowed read is seen to succeed.
    producer = Producer(secure.config("hub-admin"))
    for topic in secure.topics:
        if topic.startswith("deliver."):
            producer.produce(topic, value=b"az1", partition=0)
    assert producer.flush(20) == 0

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = pool.map(lambda agency: check_principal(secure, agency), sorted(AGENCIES))
        outcomes = dict(zip(sorted(AGENCIES), results, strict=True))

    checks, unexpected_success, wrong_denial = 0, [], []
    for agency, outcome in outcomes.items():
        for operation in OPERATIONS:
            allowed = expected(agency, operation, topics)
            for topic in secure.topics:
                checks += 1
                result = outcome[(operation, topic)]
                if topic in allowed and result is not True:
                    wrong_denial.append((agency, operation, topic, result))
                elif topic not in allowed and result not in AUTH_ERRORS:
                    unexpected_success.append((agency, operation, topic, result))
    print(f"AZ-1: {checks} checks ({len(outcomes)} agencies x {len(secure.topics)} topics x "
          f"{len(OPERATIONS)} operations)")  # fmt: skip
    assert checks == len(AGENCIES) * len(secure.topics) * len(OPERATIONS)
    assert not unexpected_success, unexpected_success[:10]
    assert not wrong_denial, wrong_denial[:10]
    # the topics are all still there (no delete went through)
    assert set(secure.topics) <= set(secure.admin().list_topics(timeout=10).topics)


def test_provisioning_twice_changes_nothing(secure: Secure) -> None:
    # agencies, router, audit, web, a view per audience, the MALS sink
    principals = len(AGENCIES) + 3 + sum(len(a["audiences"]) for a in AGENCIES.values()) + 1
    assert secure.provision_output.startswith(f"{principals} users created, "), (
        secure.provision_output
    )
    assert " 0 unchanged" in secure.provision_output
    again = hub(secure.env, "agencies", "provision")
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("0 users created, 0 ACLs created, 0 deleted"), again.stdout
    credentials = Credentials(secure.settings.home)
    assert credentials.path.stat().st_mode & 0o777 == 0o600
    assert set(AGENCIES) <= set(credentials.passwords)


# -- AZ-2: group hijack ---------------------------------------------------------------------------


def _join(consumer: Consumer, topics: list[str], until: float = 20.0) -> KafkaError | None:
    """Poll until the consumer has an assignment (None) or reports an error (returned)."""
    consumer.subscribe(topics)
    deadline = time.monotonic() + until
    while time.monotonic() < deadline:
        message = consumer.poll(0.2)
        if message is not None and message.error() is not None:
            return message.error()
        if consumer.assignment():
            return None
    raise AssertionError(f"no assignment and no error after {until}s")


def test_az2_an_agency_cannot_join_a_view_group_or_the_router_group(secure: Secure) -> None:
    view = Consumer(secure.config("hub-view-mals", **{
        "group.id": "hub-view-mals", "enable.auto.commit": False}))  # fmt: skip
    try:
        assert _join(view, ["deliver.mals"]) is None
        assert len(view.assignment()) == 3
        # police reads deliver.police, and tries the MALS view's group, the router's and MALS's
        for group in ("hub-view-mals", "hub-router", "mals.reader"):
            thief = Consumer(secure.config("police", **{
                "group.id": group, "enable.auto.commit": False}))  # fmt: skip
            try:
                error = _join(thief, ["deliver.police"])
                assert error is not None and error.code() == KafkaError.GROUP_AUTHORIZATION_FAILED
            finally:
                thief.close()
        for _ in range(10):  # the view keeps all its partitions
            view.poll(0.1)
        assert len(view.assignment()) == 3
    finally:
        view.close()


# -- AZ-3: transactional.id hijack ---------------------------------------------------------------


def test_az3_an_agency_cannot_use_the_routers_transactional_id(secure: Secure) -> None:
    router = Producer(secure.config("hub-router", **{"transactional.id": "hub-router-0"}))
    router.init_transactions(30)
    router.begin_transaction()
    router.produce("hub.identity", value=b"az3", key=b"az3")

    hijacker = Producer(secure.config("police", **{"transactional.id": "hub-router-0"}))
    with pytest.raises(KafkaException) as caught:
        hijacker.init_transactions(15)
    assert caught.value.args[0].code() == KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED

    router.commit_transaction(30)  # not fenced: the router's transaction still commits
    reader = Consumer(secure.config("hub-admin", **{
        "group.id": "az3-check", "isolation.level": "read_committed",
        "enable.auto.commit": False}))  # fmt: skip
    try:
        parts = secure.admin().list_topics("hub.identity", timeout=10).topics["hub.identity"]
        reader.assign([TopicPartition("hub.identity", p, OFFSET_BEGINNING)
                       for p in parts.partitions])  # fmt: skip
        values = [m.value() for m in _drain(reader, until=lambda got: b"az3" in got)]
    finally:
        reader.close()
    assert values.count(b"az3") == 1


def _drain(consumer: Consumer, until: Any, budget_s: float = 20.0) -> list[Any]:
    got: list[Any] = []
    deadline = time.monotonic() + budget_s
    while time.monotonic() < deadline and not until([m.value() for m in got]):
        got += [m for m in consumer.consume(500, 0.3) if m.error() is None]
    return got


# -- AZ-4: authentication failures --------------------------------------------------------------


def _attempt(config: dict[str, Any], timeout: float = 2.0) -> tuple[bool, list[KafkaError]]:
    """(metadata returned, errors reported) for one connection attempt."""
    errors: list[KafkaError] = []
    producer = Producer({**config, "error_cb": errors.append, "log_level": 0})
    try:
        metadata = producer.list_topics(timeout=timeout)
        answered = bool(metadata.brokers)
    except KafkaException:
        answered = False
    producer.poll(0.3)
    return answered, errors


def _connects(config: dict[str, Any]) -> bool:
    return _attempt(config, timeout=15)[0]


def test_az4_connections_without_valid_credentials_or_trust_fail(
    secure: Secure, tmp_path: Path
) -> None:
    good = secure.config("police")
    other_ca = tmp_path / "other-ca.pem"
    other_ca.write_bytes(new_ca("not the hub")[0])
    tls_only = {k: v for k, v in good.items() if not k.startswith("sasl.")}
    port = secure.settings.broker.port
    controller = f"127.0.0.1:{secure.settings.broker.controller_port}"
    log_before = secure.broker.log_path.read_text(errors="replace").count("Failed authentication")
    cases = {
        "no credentials": (tls_only | {"security.protocol": "SSL"}, None),
        "wrong password": (good | {"sasl.password": "not-the-password"}, "_AUTHENTICATION"),
        "unknown user": (good | {"sasl.username": "nobody"}, "_AUTHENTICATION"),
        "untrusted CA": (good | {"ssl.ca.location": str(other_ca)}, "certificate verify failed"),
        # the broker's certificate names 127.0.0.1 only
        "hostname mismatch": (good | {"bootstrap.servers": f"localhost:{port}"},
                              "certificate verify failed"),
        "plaintext on the client port": ({"bootstrap.servers": secure.bootstrap}, None),
        "plaintext on the controller port": ({"bootstrap.servers": controller}, None),
        "controller port without PLAIN": (good | {"bootstrap.servers": controller}, None),
    }  # fmt: skip
    with ThreadPoolExecutor(max_workers=len(cases)) as pool:
        results = pool.map(lambda c: _attempt(c, 4.0), [c for c, _ in cases.values()])
        attempts = dict(zip(cases, results, strict=True))
    for case, (_, reason) in cases.items():
        answered, errors = attempts[case]
        assert not answered, f"{case}: the broker answered"
        if reason:
            text = " ".join(f"{e.name()} {e.str()}" for e in errors)
            assert reason in text, f"{case}: {text}"
    assert _connects(good), "the control case (valid credentials) must connect"
    failures = secure.broker.log_path.read_text(errors="replace").count("Failed authentication")
    assert failures >= log_before + 2  # the broker logged the wrong password and unknown user


# -- AZ-5: agency spoofing ---------------------------------------------------------------------


def test_az5_police_credentials_cannot_publish_as_probation(
    secure: Secure, registry_url: str, codec: Any, tmp_path: Path
) -> None:
    def user(name: str) -> KafkaSecuritySettings:
        return KafkaSecuritySettings(
            mode="sasl_ssl", username=name, ca_file=ca_path(secure.settings.home),
            password=Credentials(secure.settings.home).get(name),
        )  # fmt: skip

    settings = Settings(
        home=tmp_path / "router-home", kafka_bootstrap=secure.bootstrap, registry_url=registry_url,
        router=RouterSettings(transaction_timeout_ms=15_000, session_timeout_ms=6_000),
        kafka_security=user("hub-router"),
    )  # fmt: skip
    with process_security(security_only(secure.config("hub-admin"))):
        bootstrap.init(settings)
    police = security_only(secure.config("police"))
    publisher = Publisher(
        agency="probation_crc", source_system="ndelius", jurisdiction="UK-ENG", codec=codec,
        sink=SafeProducer(producer_config(secure.bootstrap, **police, **{
            "message.timeout.ms": 10_000})), topics=Topics(),
    )  # fmt: skip
    factory = EventFactory(codec.catalogue, seed=5)
    record = factory.event(publisher, "custody.released", key="az5", local_id="AZ5")
    assert record["envelope"]["source_agency"] == "probation_crc"
    publisher.publish(record)  # to ingest.probation_crc, which police may not write
    with pytest.raises(DeliveryFailed, match="uthoriz"):
        publisher.flush()
    publisher.topic = Topics().ingest("police")  # its own topic, someone else's name
    event_id = publisher.publish(record)
    publisher.flush()

    with process_security(client_security(settings)):  # what `hub router run` does
        stats = run_router_until_idle(settings, idle_s=2.0)
    assert stats.delivered == 0
    value = codec.encode(record)
    dlq = read_topic(secure, Topics().dlq("police"))
    (rejected,) = [m for m in dlq if m.value() == value]
    assert dict(rejected.headers())["hub.error.reason"] == b"source_mismatch"
    entries = [json.loads(m.value()) for m in read_topic(secure, Topics().audit)]
    origin = dict(rejected.headers() or [])
    (entry,) = [e for e in entries if e["kind"] == "rejected" and (
        e["details"]["topic"], str(e["details"]["partition"]), str(e["details"]["offset"])) == (
        origin["hub.error.topic"].decode(), origin["hub.error.partition"].decode(),
        origin["hub.error.offset"].decode())]  # fmt: skip
    assert entry["reason"] == "source_mismatch"
    assert not [e for e in entries if e.get("event_id") == event_id and e["kind"] != "rejected"]


def read_topic(secure: Secure, topic: str) -> list[Any]:
    """Every committed record of ``topic``, read as hub-admin."""
    admin = secure.admin()
    partitions = admin.list_topics(topic, timeout=10).topics[topic].partitions
    consumer = Consumer(secure.config("hub-admin", **{
        "group.id": "az-reader", "isolation.level": "read_committed",
        "enable.auto.commit": False}))  # fmt: skip
    try:
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), 10)[1]
                for p in partitions}  # fmt: skip
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        got: list[Any] = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            positions = {tp.partition: tp.offset for tp in consumer.position(
                [TopicPartition(topic, p) for p in partitions])}  # fmt: skip
            if all(positions[p] >= end for p, end in ends.items() if end > 0):
                return got
            got += [m for m in consumer.consume(500, 0.3) if m.error() is None]
        raise AssertionError(f"could not read {topic} to its end")
    finally:
        consumer.close()


# -- AZ-6: metadata ----------------------------------------------------------------------------


def test_az6_each_agency_lists_only_the_topics_it_may_describe(secure: Secure) -> None:
    topics = Topics()
    for agency in sorted(AGENCIES):
        listed = AdminClient(secure.config(agency)).list_topics(timeout=10).topics
        assert set(listed) == expected(agency, "describe", topics), agency


# -- AZ-7: revocation --------------------------------------------------------------------------


def _send(producer: Producer, topic: str) -> Any:
    """Produce one record and wait for its outcome: True or the error code."""
    outcome: list[Any] = []
    try:
        producer.produce(topic, value=b"", on_delivery=lambda e, m: outcome.append(e))
    except KafkaException as exc:  # refused before sending (the topic's metadata says so)
        return exc.args[0].code()
    producer.flush(15)
    assert outcome, "no delivery report"
    return True if outcome[0] is None else outcome[0].code()


def test_az7_revocation_cuts_a_principal_off_while_others_carry_on(secure: Secure) -> None:
    topics = Topics()
    config = {"message.timeout.ms": 3_000, "enable.idempotence": True, "acks": "all"}
    unknown = Producer(secure.config("drug_service", **config))
    narrowed = Producer(secure.config("kmbc", **config))
    bystander = Producer(secure.config("gmp", **config))
    for producer, agency in ((unknown, "drug_service"), (narrowed, "kmbc"), (bystander, "gmp")):
        assert _send(producer, topics.ingest(agency)) is True

    admin = secure.admin()
    # an ACL removed: kmbc's write on ingest.kmbc
    write_acl = AclBindingFilter(ResourceType.TOPIC, topics.ingest("kmbc"),
                                 ResourcePatternType.LITERAL, "User:kmbc", "*",
                                 AclOperation.WRITE, AclPermissionType.ALLOW)  # fmt: skip
    (deleted,) = [f.result(15) for f in admin.delete_acls([write_acl]).values()]
    assert len(deleted) == 1
    # a SCRAM user deleted (its ACLs left in place): its open connection must re-authenticate
    deletion = UserScramCredentialDeletion("drug_service", ScramMechanism.SCRAM_SHA_512)
    for future in admin.alter_user_scram_credentials([deletion]).values():
        future.result(15)

    deadline = time.monotonic() + 30
    cut_off = {"kmbc": False, "drug_service": False}
    while not all(cut_off.values()):
        assert time.monotonic() < deadline, f"still allowed after 30 s: {cut_off}"
        if not cut_off["kmbc"]:
            cut_off["kmbc"] = _send(narrowed, topics.ingest("kmbc")) in AUTH_ERRORS
        if not cut_off["drug_service"]:
            cut_off["drug_service"] = _send(unknown, topics.ingest("drug_service")) is not True
        assert _send(bystander, topics.ingest("gmp")) is True  # others unaffected
    assert not _attempt(secure.config("drug_service"))[0]

    # `--revoke`: the user and every ACL of the agency go, and provisioning leaves it revoked
    ljmu = secure.config("ljmu")
    assert _connects(ljmu)
    revoke = hub(secure.env, "agencies", "provision", "--revoke", "ljmu")
    assert revoke.returncode == 0, revoke.stderr
    assert "ljmu" not in Credentials(secure.settings.home).passwords
    acls = AclAdmin(secure.config("hub-admin"), secure.settings.home)
    assert not acls.bindings("ljmu")
    again = acls.provision(bootstrap.agency_registry(), topics)  # repairs kmbc and drug_service
    assert (again.users_created, again.acls_created, again.acls_deleted) == (["drug_service"], 1, 0)
    assert _send(Producer(secure.config("kmbc", **config)), topics.ingest("kmbc")) is True
    assert _connects(secure.config("drug_service"))
    assert not _attempt(ljmu)[0]  # still revoked
    acls.restore("ljmu")
    assert acls.provision(bootstrap.agency_registry(), topics).users_created == ["ljmu"]
    assert _connects(secure.config("ljmu"))
    for producer in (unknown, narrowed, bystander):
        producer.flush(1)


# -- AZ-8: secure start-up ---------------------------------------------------------------------


def _listening_ports(pid: int) -> set[int]:
    """The TCP ports process ``pid`` listens on (from /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    ports = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def _speaks_plaintext_kafka(port: int) -> bool:
    """True when ``port`` answers a plaintext ApiVersions v0 request like a Kafka broker."""
    request = struct.pack(">hhih", 18, 0, 4242, -1)
    with socket.create_connection(("127.0.0.1", port), timeout=3) as sock:
        sock.sendall(struct.pack(">i", len(request)) + request)
        try:
            answer = sock.recv(8)
        except (TimeoutError, ConnectionError):
            return False
    return len(answer) == 8 and struct.unpack(">i", answer[4:8])[0] == 4242


def test_az8_no_plaintext_listener_is_bound(secure: Secure, kafka_bootstrap: str) -> None:
    pid = secure.broker.status().pid
    assert pid is not None
    ports = _listening_ports(pid)
    assert {secure.settings.broker.port, secure.settings.broker.controller_port} <= ports
    assert not [port for port in ports if _speaks_plaintext_kafka(port)]
    # the probe does recognise a plaintext broker: the session's development broker
    host, _, plain_port = kafka_bootstrap.rpartition(":")
    if host in ("127.0.0.1", "localhost"):
        assert _speaks_plaintext_kafka(int(plain_port))
    config = secure.broker.config_path.read_text()
    assert "PLAINTEXT" not in config.replace("SASL_SSL", "")
    assert "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer" in config
    assert "allow.everyone.if.no.acl.found=false" in config
    assert "super.users=User:hub-admin\n" in config
    assert secure.broker.config_path.stat().st_mode & 0o777 == 0o600


def test_az8_a_service_logs_its_security_mode(secure: Secure, tmp_path: Path) -> None:
    env = secure.env | {"HUB_KAFKA_SECURITY__USERNAME": "hub-view-mals"}
    db = f"sqlite:///{tmp_path / 'view.db'}"
    proc = subprocess.Popen([HUB, "view", "run", "--audience", "mals", "--db", db], env=env,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert proc.stderr is not None
        first = json.loads(proc.stderr.readline())
    finally:
        proc.terminate()
        proc.wait(30)
    assert first["event"] == "view_starting"
    assert first["kafka_security"] == "SASL_SSL (SCRAM-SHA-512, principal hub-view-mals)"
