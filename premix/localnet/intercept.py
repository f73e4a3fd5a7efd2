"""Request interception for localnet: a test hook that sees each JSON-RPC request as it passes.

An interceptor is a callable registered with `Localnet.intercept(callback)`. The server calls it
twice per HTTP request, on the request's own server thread:
- `Stage.RECEIVED`: the body is parsed, before any fault or processing;
- `Stage.ANSWERED`: every call in it has run (a sent transaction has landed or not), before the
  response is written.
It gets an `InterceptedRequest` (the stage, the HTTP path posted to, the JSON-RPC method names,
and the signature of each transaction a `sendTransaction` call carries); the node answers on
every path, so clients given URLs with different paths can be told apart. It may block (the
client waits), act on the world (kill the client process, advance the chain, inject a fault),
or raise `DropRequest`: at `RECEIVED` the request is never processed, at `ANSWERED` it was
processed but the connection is closed without a response; either way the client sees a
connection error. Any other exception is a bug in the interceptor and propagates (the server
logs it and closes the connection).

Crash tests use it to aim a kill precisely: "after signing, before the send reached the node",
"right after the send was processed, before the worker read the answer".
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable
from dataclasses import dataclass

from solders.signature import Signature


class Stage(enum.Enum):
    """When an interceptor sees a request."""

    RECEIVED = "received"  # parsed; no fault applied, nothing processed yet
    ANSWERED = "answered"  # processed; the response is not written yet


@dataclass(frozen=True)
class InterceptedRequest:
    """One HTTP request as an interceptor sees it (a batch lists every call)."""

    stage: Stage
    path: str  # the HTTP path posted to ("/" for the plain URL)
    methods: tuple[str, ...]  # JSON-RPC method names, in request order
    signatures: tuple[Signature, ...]  # first signature of each transaction sent in it

    def calls(self, method: str) -> bool:
        """True when the request calls `method` (alone or in a batch)."""
        return method in self.methods


class DropRequest(Exception):
    """Raised by an interceptor: drop the request (see the module docstring)."""


Interceptor = Callable[[InterceptedRequest], None]


class Interceptors:
    """The interceptors of one localnet, called in registration order (thread-safe)."""

    def __init__(self) -> None:
        self._callbacks: list[Interceptor] = []
        self._lock = threading.Lock()

    def add(self, callback: Interceptor) -> Interceptor:
        with self._lock:
            self._callbacks.append(callback)
        return callback

    def remove(self, callback: Interceptor) -> None:
        with self._lock:
            if callback in self._callbacks:
                self._callbacks.remove(callback)

    @property
    def active(self) -> bool:
        """True when at least one interceptor is registered."""
        return bool(self._callbacks)

    def dropped(self, request: InterceptedRequest) -> bool:
        """Call every interceptor with `request`; True when one of them raised `DropRequest`."""
        with self._lock:
            callbacks = list(self._callbacks)
        try:
            for callback in callbacks:
                callback(request)
        except DropRequest:
            return True
        return False
