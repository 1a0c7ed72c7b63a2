"""Conversions between Python values and the wire, without a server."""

import datetime as dt

import pytest

from taskplane import _wire
from taskplane.client import NewTask, TaskStatus
from taskplane.errors import InvalidRequest


def test_whole_numbers_come_back_as_ints_and_nesting_survives() -> None:
    value = {"n": 3, "x": 1.5, "list": [1, "a", None, True], "inner": {"big": 2**40}}
    assert _wire.from_struct(_wire.to_struct(value)) == value


def test_a_payload_that_is_not_an_object_is_refused_by_name() -> None:
    with pytest.raises(TypeError, match="JSON object"):
        _wire.to_struct(["not", "an", "object"])  # type: ignore[arg-type]
    with pytest.raises(InvalidRequest, match="payload of shout"):
        NewTask("shout", {"when": object()})._to_wire()


def test_naive_times_are_refused_and_conflicting_options_named() -> None:
    with pytest.raises(InvalidRequest, match="no time zone"):
        NewTask("shout", run_at=dt.datetime(2030, 1, 1))._to_wire()
    with pytest.raises(InvalidRequest, match="run_at or delay"):
        NewTask("shout", run_at=dt.datetime.now(dt.timezone.utc), delay=5)._to_wire()


def test_options_reach_the_request() -> None:
    request = NewTask(
        "shout",
        {"text": "hi"},
        priority=5,
        delay=60,
        start_within=120,
        idempotency_key="k",
        version="v2",
        metadata={"tenant": "acme"},
        required_labels={"region": "eu"},
        timeout=dt.timedelta(seconds=30),
    )._to_wire()
    assert request.priority == 5 and request.idempotency_key == "k" and request.handler_version == "v2"
    assert request.start_by.seconds > request.run_at.seconds
    assert dict(request.metadata) == {"tenant": "acme"} and dict(request.required_labels) == {"region": "eu"}
    assert request.timeout.seconds == 30


def test_statuses_compare_with_their_names() -> None:
    assert TaskStatus.COMPLETED == "COMPLETED" and TaskStatus.COMPLETED.is_finished
    assert not TaskStatus.RUNNING.is_finished
    assert TaskStatus._from_wire(TaskStatus.EXPIRED._to_wire()) is TaskStatus.EXPIRED


def test_error_text_is_cut_on_a_character_boundary() -> None:
    assert _wire.bounded_text("short", 10) == "short"
    assert _wire.bounded_text("abé", 3) == "ab [cut: too long]"


def test_durations_keep_their_sign_and_fraction() -> None:
    assert (_wire.to_duration(1.5).seconds, _wire.to_duration(1.5).nanos) == (1, 500_000_000)
    negative = _wire.to_duration(-0.25)
    assert (negative.seconds, negative.nanos) == (0, -250_000_000)
    assert _wire.to_duration(dt.timedelta(minutes=2)).seconds == 120
