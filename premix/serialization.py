"""JSON (never pickle) for everything arq stores in Redis: job payloads and job results.

arq's default is pickle, and unpickling runs code chosen by whoever wrote the bytes: anyone
able to write to Redis could run code in the worker. These two functions are passed as
`job_serializer` / `job_deserializer` on both sides (the enqueue pool and `WorkerSettings`).
"""

import json
from typing import Any

from arq.jobs import DeserializationError as ArqDeserializationError
from arq.jobs import SerializationError as ArqSerializationError

from premix.errors import PremixError
from premix.logs import redact_text


class SerializationError(ArqSerializationError):
    """A value arq was asked to store is not JSON-safe."""


class DeserializationError(ArqDeserializationError):
    """Bytes read from Redis are not a premix JSON object (for example a pickle)."""


def _to_json_safe(value: object) -> object:
    # arq stores a failed job's exception as its result: keep its type and a redacted message.
    if isinstance(value, PremixError):
        return {"error": type(value).__name__, "message": value.user_message}
    if isinstance(value, BaseException):
        return {"error": type(value).__name__, "message": redact_text(str(value))[:500]}
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _refuse_constant(name: str) -> object:
    raise ValueError(f"{name} is not valid JSON")


def job_serializer(data: dict[str, Any]) -> bytes:
    """Return `data` (an arq job or result record) as compact UTF-8 JSON.

    Raises `SerializationError` when a value is not JSON-safe (exceptions become
    `{"error": type, "message": ...}`).
    """
    try:
        return json.dumps(
            data, default=_to_json_safe, separators=(",", ":"), allow_nan=False
        ).encode()
    except (TypeError, ValueError) as e:
        raise SerializationError(f"cannot store a non-JSON value in Redis: {e}") from e


def job_deserializer(raw: bytes) -> dict[str, Any]:
    """Return the JSON object in `raw`.

    Raises `DeserializationError` (cause chained) for anything else: a pickle, other binary
    data, invalid UTF-8 or JSON, NaN/Infinity, or JSON that is not an object. Nothing in `raw`
    is ever executed.
    """
    try:
        data = json.loads(raw.decode("utf-8"), parse_constant=_refuse_constant)
    except (UnicodeDecodeError, ValueError, AttributeError) as e:
        raise DeserializationError("job data in Redis is not premix JSON") from e
    if not isinstance(data, dict):
        raise DeserializationError(
            f"job data in Redis is JSON {type(data).__name__}, not an object"
        )
    return data
