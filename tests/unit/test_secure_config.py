"""The secure broker's configuration (RELIABILITY.md B.7), the clients' security keys and the ACL
plan, without starting a broker (tests/integration/test_secure_broker.py runs them for real)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from hub import bootstrap
from hub.adapters import kafka as kafka_clients
from hub.adapters.acl import ROUTER, plan
from hub.adapters.broker import LocalBroker
from hub.adapters.kafka_security import Credentials, client_security, mode_label
from hub.domain.errors import InfraError
from hub.settings import KafkaSecuritySettings, Settings
from hub.topics import Topics


def secure_settings(home: Path, **security: object) -> Settings:
    return Settings(home=home, kafka_security=KafkaSecuritySettings(mode="sasl_ssl", **security))


def properties(broker: LocalBroker) -> dict[str, str]:
    lines = broker.config_path.read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def test_secure_broker_binds_no_plaintext_listener_and_denies_by_default(tmp_path: Path) -> None:
    broker = LocalBroker(secure_settings(tmp_path), secure=True)
    broker._write_config()
    props = properties(broker)
    protocols = dict(p.split(":") for p in props["listener.security.protocol.map"].split(","))
    listeners = [entry.split("://")[0] for entry in props["listeners"].split(",")]
    assert {protocols[name] for name in listeners} == {"SASL_SSL"}
    assert all("127.0.0.1:" in entry for entry in props["listeners"].split(","))
    assert props["authorizer.class.name"] == (
        "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    )
    assert props["allow.everyone.if.no.acl.found"] == "false"
    assert props["super.users"] == "User:hub-admin"
    assert props["listener.name.sasl_ssl.sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert props["sasl.mechanism.inter.broker.protocol"] == "SCRAM-SHA-512"
    assert props["transaction.state.log.min.isr"] == "1"
    password = Credentials(tmp_path).get("hub-admin")
    assert password and password in props["listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config"]
    for private in (broker.config_path, Credentials(tmp_path).path, broker.tls_files.ca_key,
                    broker.tls_files.broker_keystore):  # fmt: skip
        assert private.stat().st_mode & 0o777 == 0o600, private


def test_the_broker_certificate_names_only_its_address_and_is_signed_by_the_hub_ca(
    tmp_path: Path,
) -> None:
    broker = LocalBroker(secure_settings(tmp_path), secure=True)
    broker._write_config()
    ca = x509.load_pem_x509_certificate(broker.tls_files.ca_cert.read_bytes())
    leaf = x509.load_pem_x509_certificate(broker.tls_files.broker_keystore.read_bytes())
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(name.value) for name in san] == ["127.0.0.1"]
    public = ca.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    leaf.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    before = broker.tls_files.broker_keystore.read_bytes()
    broker._write_config()  # a second start keeps the same CA and certificate
    assert broker.tls_files.broker_keystore.read_bytes() == before


def test_plain_mode_is_named_development_only(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    broker = LocalBroker(settings)
    assert "PLAINTEXT" in broker.server_properties()["listener.security.protocol.map"]
    assert "authorizer.class.name" not in broker.server_properties()
    assert broker.label == mode_label(settings) == "PLAINTEXT (development only)"
    assert client_security(settings) == {}


def test_the_mode_is_fixed_when_the_storage_is_formatted(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    (tmp_path / "kafka").mkdir()
    (tmp_path / "kafka" / "security-mode").write_text("sasl_ssl\n")
    with pytest.raises(InfraError, match="formatted for sasl_ssl mode; start it with --secure"):
        LocalBroker(settings, secure=False)
    assert LocalBroker(settings).secure  # a plain `hub broker start` keeps it secure
    (tmp_path / "kafka" / "security-mode").unlink()
    (tmp_path / "kafka" / "data").mkdir()
    (tmp_path / "kafka" / "data" / "meta.properties").write_text("")  # formatted before --secure
    with pytest.raises(InfraError, match="formatted for plaintext mode"):
        LocalBroker(settings, secure=True)


def test_sasl_ssl_clients_verify_the_broker_and_use_scram(tmp_path: Path) -> None:
    settings = secure_settings(tmp_path, username="hub-router")
    with pytest.raises(InfraError, match="HUB_KAFKA_SECURITY__PASSWORD"):
        client_security(settings)
    credentials = Credentials(tmp_path)
    credentials.ensure("hub-router")
    credentials.save()
    with pytest.raises(InfraError, match="HUB_KAFKA_SECURITY__CA_FILE"):
        client_security(settings)
    (tmp_path / "security" / "ca.pem").write_text("")
    config = client_security(settings)
    assert config == {
        "security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "hub-router", "sasl.password": credentials.get("hub-router"),
        "ssl.ca.location": str(tmp_path / "security" / "ca.pem"),
        "ssl.endpoint.identification.algorithm": "https",
    }  # fmt: skip
    explicit = secure_settings(tmp_path, username="hub-web", password="s3cret")
    assert client_security(explicit)["sasl.password"] == "s3cret"
    assert mode_label(explicit) == "SASL_SSL (SCRAM-SHA-512, principal hub-web)"


def test_every_client_configuration_carries_the_process_security() -> None:
    previous = kafka_clients._security
    keys = {"security.protocol": "SASL_SSL", "sasl.username": "hub-web"}
    kafka_clients.use_security(lambda: keys)
    try:
        for config in (
            kafka_clients.producer_config("b:1"),
            kafka_clients.consumer_config("b:1", "g"),
            kafka_clients.admin_config("b:1"),
        ):
            assert keys.items() <= config.items()
    finally:
        kafka_clients.use_security(previous)
    assert "security.protocol" not in kafka_clients.producer_config("b:1")


def test_the_acl_plan_gives_each_agency_only_its_own_topics_and_groups() -> None:
    agencies = bootstrap.agency_registry()
    topics = Topics(prefix="p.")
    grants = plan(agencies, topics)
    for agency, audiences in agencies:
        mine = grants[agency]
        assert {(g.resource, g.name, g.operation) for g in mine if g.resource == "topic"} == {
            ("topic", topics.ingest(agency), "write"),
            *{("topic", topics.deliver(a), "read") for a in audiences},
        }
        assert {(g.name, g.pattern) for g in mine if g.resource == "group"} == {
            (f"p.{agency}.", "prefixed")
        }
        assert not [g for g in mine if g.resource == "transactional_id"]
    router = grants[ROUTER]
    assert {(g.name, g.pattern) for g in router if g.resource == "transactional_id"} == {
        ("p.hub-router-", "prefixed")
    }
    assert {g.name for g in router if g.operation == "read" and g.resource == "topic"} == {
        topics.ingest(a) for a, _ in agencies
    }
    assert not [g for gs in grants.values() for g in gs if "*" in g.name]
