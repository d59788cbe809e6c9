"""The secret registry and the log-record scrubbing (routing.telemetry.redaction), in process."""

from __future__ import annotations

import logging

import pytest

from routing.telemetry import redaction
from routing.telemetry.redaction import SecretRegistry, install_log_redaction


def test_scrubs_bytes_and_text_longest_secret_first():
    registry = SecretRegistry()
    registry.add("key", "abcdefgh12345678")
    registry.add("prefix", "abcdefgh")  # contained in the other: the longer one is replaced whole
    assert registry.scrub_bytes(b'{"k":"abcdefgh12345678","p":"abcdefgh"}') == \
        b'{"k":"[redacted]","p":"[redacted]"}'
    assert registry.scrub_text("x abcdefgh12345678 y") == "x [redacted] y"
    assert registry.found_in(b"..abcdefgh..") and not registry.found_in("nothing here")


def test_short_values_are_not_registered():
    registry = SecretRegistry()
    registry.add("short", "k")
    assert not registry and registry.scrub_text("k k k") == "k k k"


def test_a_rotating_slot_keeps_its_last_values():
    registry = SecretRegistry()
    for token in ("token-one-aaaaaaaa", "token-two-bbbbbbbb", "token-three-cccccc"):
        registry.add(("token", "scope"), token, keep=2)
    text = "token-one-aaaaaaaa token-two-bbbbbbbb token-three-cccccc"
    assert registry.scrub_text(text) == "token-one-aaaaaaaa [redacted] [redacted]"


@pytest.fixture
def captured():
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(self.format(record))

    handler = Keep()
    logger = logging.getLogger("tests.redaction")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield logger, records
    logger.removeHandler(handler)


def test_every_log_record_is_scrubbed(captured):
    logger, records = captured
    install_log_redaction()  # this module's registry (tests elsewhere re-import routing)
    redaction.SECRETS.add("test-secret", "log-secret-0123456789")  # stays registered: harmless here
    logger.info("key %s", "log-secret-0123456789")
    try:
        raise ValueError("echoed log-secret-0123456789")
    except ValueError:
        logger.exception("failed")
    logger.info("bad format %d", "log-secret-0123456789")  # never raises into the caller
    assert len(records) == 3
    assert all("log-secret-0123456789" not in r for r in records), records
    assert "ValueError: echoed [redacted]" in records[1]  # the traceback is kept, scrubbed
