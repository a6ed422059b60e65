"""Log lines: JSON in production, text in development, the bound ids on each."""

from __future__ import annotations

import json
import logging
import threading

from core.logs import ContextFilter, JsonLineFormatter, PlainFormatter, log_context
from tests.config.test_settings import production, settings_of

FORMAT = "%(levelname)s %(name)s %(message)s"


def _line(formatter: logging.Formatter, message: str = "sent %s", *args: object) -> str:
    record = logging.LogRecord("trades.services", logging.INFO, __file__, 1, message, args, None)
    ContextFilter().filter(record)
    return formatter.format(record)


def test_production_logs_json_and_development_plain_text():
    # given the settings of production and of development
    name = "LOG_FORMAT"

    # when each is loaded
    prod = settings_of("config.settings.production", production(), name, "LOGGING")
    local = settings_of("config.settings.local", {}, name, "LOGGING")
    asked = settings_of("config.settings.production", production(LOG_FORMAT="plain"), name)

    # then production's console handler writes JSON, development's text, unless told otherwise
    assert prod[name] == "json" and prod["LOGGING"]["handlers"]["console"]["formatter"] == "json"
    assert local[name] == "plain"
    assert local["LOGGING"]["handlers"]["console"]["filters"] == ["context"]
    assert asked[name] == "plain"


def test_bound_ids_are_fields_of_a_json_line():
    # given ids bound for an execution, then for one of its orders
    with log_context(strategy_id=7, execution_id=42), log_context(client_order_id="sf-42-3-e"):
        # when a line is logged
        line = json.loads(_line(JsonLineFormatter(FORMAT), "sent %s", "buy"))

    # then it is one JSON object with the message and every bound id as a field
    assert line["message"] == "sent buy" and line["level"] == "INFO"
    assert line["logger"] == "trades.services"
    assert (line["strategy_id"], line["execution_id"]) == (7, 42)
    assert line["client_order_id"] == "sf-42-3-e"
    assert "log_context" not in line and "timestamp" in line


def test_plain_lines_end_with_the_ids_and_bindings_end_with_their_block():
    # given an execution's block, and a line logged inside and one after it
    with log_context(execution_id=42, interval_start=None):
        inside = _line(PlainFormatter(FORMAT))
    after = _line(PlainFormatter(FORMAT))

    # then the line inside names the execution (None values are left out), the one after not
    assert inside == "INFO trades.services sent %s [execution_id=42]"
    assert after == "INFO trades.services sent %s"


def test_another_thread_keeps_its_own_ids():
    # given ids bound in this thread
    seen = []
    with log_context(execution_id=1):
        # when another thread logs
        thread = threading.Thread(target=lambda: seen.append(_line(PlainFormatter(FORMAT))))
        thread.start()
        thread.join()

    # then its line carries none of them
    assert seen == ["INFO trades.services sent %s"]
