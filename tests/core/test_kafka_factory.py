"""The one Kafka client factory: every client gets the same bootstrap and ``kafka.settings``,
and the stream worker's Faust app gets their TLS/SASL equivalents."""

from __future__ import annotations

import pytest

from latscope import kafka
from latscope.kafka import KafkaSettings


def test_settings_go_on_top_of_a_clients_own_tuning() -> None:
    ks = KafkaSettings("b1:9093,b2:9093", {"security.protocol": "SASL_SSL", "linger.ms": 7})
    conf = ks.config(**{"linger.ms": 50, "acks": "all"})
    assert conf == {"bootstrap.servers": "b1:9093,b2:9093", "linger.ms": 7, "acks": "all",
                    "security.protocol": "SASL_SSL"}
    assert KafkaSettings.of("h:1") == KafkaSettings("h:1", {})


def test_repr_never_shows_setting_values() -> None:
    ks = KafkaSettings("h:1", {"sasl.password": "hunter2-secret"})
    assert "hunter2" not in repr(ks) and "sasl.password" in repr(ks)


def test_faust_gets_every_broker_and_no_credentials_in_plaintext() -> None:
    assert kafka.faust_options("b1:1,b2:2") == {"broker": ["kafka://b1:1", "kafka://b2:2"]}


def test_faust_gets_sasl_credentials() -> None:
    opts = kafka.faust_options(KafkaSettings("b:1", {
        "security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "agent", "sasl.password": "pw"}))
    cred = opts["broker_credentials"]
    assert (cred.username, cred.password, cred.mechanism.value) == ("agent", "pw", "SCRAM-SHA-512")
    assert cred.ssl_context is None


def test_faust_gets_tls_context_for_sasl_ssl(tmp_path) -> None:
    opts = kafka.faust_options(KafkaSettings("b:1", {
        "security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN", "sasl.username": "u",
        "sasl.password": "p"}))
    assert opts["broker_credentials"].ssl_context is not None


@pytest.mark.parametrize(("settings", "named"), [
    ({"ssl.keystore.location": "/secret/ks", "security.protocol": "SSL"}, "ssl.keystore.location"),
    ({"security.protocol": "KERBEROS-ish"}, "security.protocol"),
])
def test_what_faust_cannot_honour_is_named_without_its_value(settings, named) -> None:
    with pytest.raises(ValueError) as e:
        kafka.faust_options(KafkaSettings("b:1", settings))
    assert named in str(e.value) and "/secret/ks" not in str(e.value)
