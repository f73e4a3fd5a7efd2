"""The HTTP side of localnet: JSON-RPC 2.0 over HTTP POST (single and batch), faults, stats.

A `ThreadingHTTPServer` speaking HTTP/1.1 with keep-alive; each request runs in its own thread
and the chain serializes state changes behind its lock. `GET /health` answers "ok" like a
validator. Faults (see `faults.py`) are applied here, around the JSON-RPC dispatch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import socket
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from solders.signature import Signature

from premix.localnet.chain import Chain
from premix.localnet.congestion import Congestion
from premix.localnet.errors import INTERNAL_ERROR, INVALID_REQUEST, PARSE_ERROR, RpcError
from premix.localnet.faults import FaultKind, Faults
from premix.localnet.intercept import InterceptedRequest, Interceptors, Stage
from premix.localnet.methods import Node, RpcMethods
from premix.localnet.params import parse_config, sent_signature

MAX_BODY_BYTES = 50 * 1024 * 1024


@dataclass(frozen=True)
class ReceivedSend:
    """One sendTransaction call as the node received it: what a client asked of the node."""

    signature: Signature | None  # None: no decodable transaction (the call says why)
    slot: int  # the chain's slot when it arrived
    received_at: float  # time.monotonic() when it arrived
    skip_preflight: bool
    max_retries: int | None  # None: not given (a node's own retry policy)
    min_context_slot: Any  # as sent (None: not given)
    preflight_commitment: Any


@dataclass
class RpcStats:
    """HTTP round trips, JSON-RPC calls and sendTransaction calls received (faulted ones
    included; thread-safe)."""

    http_requests: int = 0
    calls: Counter[str] = field(default_factory=Counter)
    sends: list[ReceivedSend] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, methods: list[str]) -> None:
        with self._lock:
            self.http_requests += 1
            self.calls.update(methods)

    def record_send(self, send: ReceivedSend) -> None:
        with self._lock:
            self.sends.append(send)

    def sends_of(self, signature: Signature) -> list[ReceivedSend]:
        """Every sendTransaction call that carried `signature`, in arrival order."""
        with self._lock:
            return [send for send in self.sends if send.signature == signature]

    def reset(self) -> None:
        with self._lock:
            self.http_requests = 0
            self.calls.clear()
            self.sends.clear()


class RpcServer(ThreadingHTTPServer):
    """Serves `RpcMethods` over HTTP with `Faults` applied, `RpcStats` counted and
    `Interceptors` called."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256  # fast mode opens many connections at once; 5 would drop SYNs

    def __init__(
        self,
        address: tuple[str, int],
        chain: Chain,
        faults: Faults,
        stats: RpcStats,
        interceptors: Interceptors | None = None,
    ) -> None:
        super().__init__(address, _Handler)
        self.chain = chain
        self.methods = RpcMethods(chain)
        self.faults = faults
        self.stats = stats
        self.interceptors = interceptors if interceptors is not None else Interceptors()
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client hanging up mid-reply (cancelled, timed out) is normal for a node: no traceback.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Cut every open keep-alive connection (the node goes away for its clients too)."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are separate writes: no 40 ms stalls
    server: RpcServer
    server_version = "premix-localnet"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: tests and the demo print their own output

    def do_GET(self) -> None:
        if self.path.rstrip("/") == "/health":
            self._reply(HTTPStatus.OK, b"ok", "text/plain")
        else:
            self._reply(HTTPStatus.NOT_FOUND, b"Not Found", "text/plain")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            self._reply(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, b"", "text/plain")
            return
        body = self.rfile.read(length)
        try:
            request: Any = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            self.server.stats.record([])
            self._reply_json(_error_response(None, RpcError(PARSE_ERROR, "Parse error")))
            return
        calls = request if isinstance(request, list) else [request]
        methods = [
            call["method"]
            for call in calls
            if isinstance(call, dict) and isinstance(call.get("method"), str)
        ]
        self.server.stats.record(methods)
        for call in calls:
            if isinstance(call, dict) and call.get("method") == "sendTransaction":
                self._record_send(call.get("params"))
        intercepted = self._intercepted(calls, methods)
        if intercepted is not None and self._dropped(intercepted, Stage.RECEIVED):
            return
        if self._http_fault(methods):
            return
        if isinstance(request, list):
            if not request:
                response: Any = _error_response(None, RpcError(INVALID_REQUEST, "Invalid request"))
            else:
                responses = [self._call(call) for call in request]
                response = [r for r in responses if r is not None]
        else:
            response = self._call(request)
        if intercepted is not None and self._dropped(intercepted, Stage.ANSWERED):
            return
        if self.server.faults.take(FaultKind.LOSE_RESPONSE, methods):
            self._drop_connection()
            return
        if response is None or response == []:
            self._reply(HTTPStatus.OK, b"", "application/json")
        else:
            self._reply_json(response)

    # -- JSON-RPC -----------------------------------------------------------------------------

    def _call(self, call: Any) -> dict[str, Any] | None:
        """One JSON-RPC call; None for a notification (no id)."""
        if not isinstance(call, dict) or call.get("jsonrpc") != "2.0" or "method" not in call:
            return _error_response(None, RpcError(INVALID_REQUEST, "Invalid request"))
        call_id = call.get("id")
        method = call["method"]
        if not isinstance(method, str):
            return _error_response(call_id, RpcError(INVALID_REQUEST, "Invalid request"))
        if self.server.faults.take(FaultKind.EXPIRE_BLOCKHASH, [method]):
            self.server.chain.expire_blockhashes()
        try:
            result = self.server.methods.call(method, call.get("params"), self._node(method))
        except RpcError as error:
            response = _error_response(call_id, error)
        except Exception as error:  # a bug here must not kill the connection silently
            response = _error_response(
                call_id, RpcError(INTERNAL_ERROR, f"Internal error: {error}")
            )
        else:
            response = {"jsonrpc": "2.0", "result": result, "id": call_id}
        return response if "id" in call else None

    def _node(self, method: str) -> Node:
        """The node that answers this call of `method`, as the per-call faults make it."""
        faults = self.server.faults
        stale = faults.take(FaultKind.STALE_READ, [method])
        congested = faults.active(FaultKind.CONGESTION)
        return Node(
            behind_slots=0 if stale is None else int(stale.params["slots"]),
            has_history=faults.take(FaultKind.NO_HISTORY, [method]) is None,
            drops_sends=(
                method == "sendTransaction"
                and faults.take(FaultKind.DROP_SEND, [method]) is not None
            ),
            congestion=self._congestion(method),
            congested_fee=(
                None if congested is None else int(congested.params["reported_micro_lamports"])
            ),
        )

    def _congestion(self, method: str) -> Congestion | None:
        """What the `congestion` rule firing on this sendTransaction (if one does) does to it."""
        faults = self.server.faults
        rule = faults.take(FaultKind.CONGESTION, [method]) if method == "sendTransaction" else None
        if rule is None:
            return None
        chance = float(rule.params["land_probability"])
        return Congestion(
            min_micro_lamports=int(rule.params["min_micro_lamports"]),
            lands_now=lambda: faults.chance(chance),
            active=lambda: faults.is_on(rule),
        )

    def _record_send(self, params: Any) -> None:
        try:
            config = parse_config(params, 1) if isinstance(params, list) else {}
        except RpcError:
            config = {}  # the call itself reports the bad config
        retries = config.get("maxRetries")
        self.server.stats.record_send(
            ReceivedSend(
                signature=sent_signature(params),
                slot=self.server.chain.slot,
                received_at=time.monotonic(),
                skip_preflight=bool(config.get("skipPreflight", False)),
                max_retries=retries if isinstance(retries, int) else None,
                min_context_slot=config.get("minContextSlot"),
                preflight_commitment=config.get("preflightCommitment"),
            )
        )

    # -- interceptors -------------------------------------------------------------------------

    def _intercepted(self, calls: list[Any], methods: list[str]) -> InterceptedRequest | None:
        """What interceptors see of this request; None when there are none (nothing decoded)."""
        if not self.server.interceptors.active:
            return None
        signatures = [
            signature
            for call in calls
            if isinstance(call, dict) and call.get("method") == "sendTransaction"
            if (signature := sent_signature(call.get("params"))) is not None
        ]
        return InterceptedRequest(Stage.RECEIVED, self.path, tuple(methods), tuple(signatures))

    def _dropped(self, intercepted: InterceptedRequest, stage: Stage) -> bool:
        """Run the interceptors at `stage`; True (connection dropped) when one dropped it."""
        if not self.server.interceptors.dropped(dataclasses.replace(intercepted, stage=stage)):
            return False
        self._drop_connection()
        return True

    # -- faults -------------------------------------------------------------------------------

    def _http_fault(self, methods: list[str]) -> bool:
        """Apply latency, 429 and 5xx faults; True when the request was answered with one."""
        faults = self.server.faults
        latency = faults.take(FaultKind.LATENCY, methods)
        if latency is not None:
            time.sleep(float(latency.params["ms"]) / 1000)
        too_many = faults.take(FaultKind.HTTP_429, methods)
        if too_many is not None:
            body = json.dumps(
                {
                    "jsonrpc": "2.0",
                    "error": {"code": 429, "message": "Too many requests for a specific RPC call"},
                    "id": None,
                }
            ).encode()
            headers = {"Retry-After": str(too_many.params["retry_after"])}
            self._reply(HTTPStatus.TOO_MANY_REQUESTS, body, "application/json", headers)
            return True
        server_error = faults.take(FaultKind.HTTP_5XX, methods)
        if server_error is not None:
            status = HTTPStatus(int(server_error.params["status"]))
            self._reply(status, f"{status.value} {status.phrase}".encode(), "text/plain")
            return True
        return False

    def _drop_connection(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    # -- HTTP ---------------------------------------------------------------------------------

    def _reply_json(self, payload: Any) -> None:
        body = json.dumps(payload, separators=(",", ":")).encode()
        self._reply(HTTPStatus.OK, body, "application/json")

    def _reply(
        self,
        status: HTTPStatus,
        body: bytes,
        content_type: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


def _error_response(call_id: Any, error: RpcError) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "error": error.to_json(), "id": call_id}
