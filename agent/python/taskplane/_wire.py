"""Conversions between Python values and the wire's protobuf types.

JSON objects travel as ``google.protobuf.Struct``, whose numbers are all
doubles: whole numbers come back as ``int`` (as the Rust SDK does), others
as ``float``. Times are aware ``datetime`` objects in UTC; durations are
seconds as ``float`` or ``timedelta``.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any, Mapping, Optional, Union

from google.protobuf import duration_pb2, struct_pb2, timestamp_pb2

#: The largest integer a double holds exactly.
_MAX_EXACT_INTEGER = 2**53

Seconds = Union[float, int, _dt.timedelta]


def to_struct(value: Mapping[str, Any]) -> struct_pb2.Struct:
    """A JSON object as a ``Struct``; raises ``TypeError`` naming a value JSON cannot hold."""
    if not isinstance(value, Mapping):
        raise TypeError(
            f"a payload or result must be a JSON object (a dict), not {type(value).__name__}"
        )
    struct = struct_pb2.Struct()
    try:
        struct.update(dict(value))
    except (ValueError, TypeError) as error:
        raise TypeError(f"not JSON-able: {error}") from error
    return struct


def from_struct(struct: Optional[struct_pb2.Struct]) -> dict[str, Any]:
    """A ``Struct`` as a dict, whole numbers as ``int``."""
    if struct is None:
        return {}
    return {key: _from_value(value) for key, value in struct.fields.items()}


def _from_value(value: struct_pb2.Value) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "struct_value":
        return from_struct(value.struct_value)
    if kind == "list_value":
        return [_from_value(item) for item in value.list_value.values]
    if kind == "number_value":
        number = value.number_value
        if number.is_integer() and abs(number) <= _MAX_EXACT_INTEGER:
            return int(number)
        return number
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    return None


def to_timestamp(at: _dt.datetime) -> timestamp_pb2.Timestamp:
    """An aware ``datetime`` as a ``Timestamp`` (a naive one is refused: its zone is unknown)."""
    if at.tzinfo is None:
        raise ValueError(
            f"{at.isoformat()} has no time zone: pass an aware datetime, "
            "e.g. datetime.now(timezone.utc)"
        )
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(at.astimezone(_dt.timezone.utc))
    return stamp


def from_timestamp(
    message: Any, field: str
) -> Optional[_dt.datetime]:
    """``message.field`` as an aware ``datetime``, or ``None`` when unset."""
    if not message.HasField(field):
        return None
    stamp: timestamp_pb2.Timestamp = getattr(message, field)
    return stamp.ToDatetime(tzinfo=_dt.timezone.utc)


def seconds(value: Seconds) -> float:
    """Seconds from a number or a ``timedelta``."""
    if isinstance(value, _dt.timedelta):
        return value.total_seconds()
    return float(value)


def to_duration(value: Seconds) -> duration_pb2.Duration:
    """Seconds (or a ``timedelta``) as a ``Duration``."""
    nanos = round(seconds(value) * 1e9)
    whole, part = divmod(abs(nanos), 1_000_000_000)
    sign = -1 if nanos < 0 else 1
    return duration_pb2.Duration(seconds=sign * whole, nanos=sign * part)


def from_duration(message: Any, field: str, default: float) -> float:
    """``message.field`` in seconds, or ``default`` when unset or zero."""
    if not message.HasField(field):
        return default
    duration = getattr(message, field)
    value = duration.seconds + duration.nanos / 1e9
    return value if value > 0 else default


def bounded_text(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes, saying so when it was cut."""
    encoded = text.encode("utf-8")
    if len(encoded) <= limit:
        return text
    return encoded[:limit].decode("utf-8", errors="ignore") + " [cut: too long]"
