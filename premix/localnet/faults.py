"""Fault rules for localnet: what goes wrong, for which JSON-RPC method, how often.

A rule names a kind, optionally one JSON-RPC method (None: every method), and when it fires:
on each matching call (default), on the next `count` matching calls, and/or with `probability`
drawn from a `random.Random(seed)` so runs repeat. Rules are switched on and off at run time
from the process that owns the `Localnet`.

Kinds (params):
- `latency` (ms): the HTTP response is delayed by `ms` milliseconds.
- `http_429` (retry_after, seconds, default 1): HTTP 429 with a `Retry-After` header; the
  request is not processed.
- `http_5xx` (status, default 503): that HTTP status; the request is not processed.
- `drop_send`: sendTransaction returns the signature but the transaction never lands.
- `lose_response`: the request is processed (a transaction lands) but the connection is closed
  without a response, so the client sees a connection error.
- `expire_blockhash`: before the request is processed the chain jumps 151 blocks ahead, so every
  blockhash handed out so far has expired (block height > its last valid block height).
- `stale_read` (slots, 1..150): the call is served by a node `slots` slots behind, as a lagging
  node behind a load balancer: its banks (processed, confirmed, finalized) are each `slots`
  older, and so are the context slot, accounts, blockhash, block height and the signatures it
  has seen; a `minContextSlot` above its bank is -32016. Applies to the reads that have a bank
  (`STALE_READ_METHODS`), sendTransaction and simulateTransaction included (their preflight
  bank: a blockhash newer than it is "Blockhash not found"); a transaction sent still lands.
- `no_history`: getSignatureStatuses answers only from the last 150 slots' status cache, even
  with `searchTransactionHistory` (a node without transaction history).
- `congestion` (min_micro_lamports; land_probability, default 0; reported_micro_lamports,
  default min_micro_lamports): a sendTransaction it fires on whose compute-unit price (its
  SetComputeUnitPrice; none: 0) is below `min_micro_lamports` is accepted (its signature
  returned) but held: it lands in each later slot with `land_probability` (0: never) while its
  blockhash is valid, and at the next slot once the rule is off. While the rule is on,
  getRecentPrioritizationFees reports every recent slot at `reported_micro_lamports` to 1.5
  times it (what others paid to land; below the threshold it models a market the fee data
  has not caught up with). See `congestion.py`.

HTTP-level kinds (latency, 429, 5xx, lose_response) fire once per HTTP request when any call in
it matches; `drop_send`, `expire_blockhash`, `stale_read`, `no_history` and `congestion` fire
per JSON-RPC call (each call of a batch draws on its own); a held transaction's landing in a
slot draws on the same seeded random.
"""

from __future__ import annotations

import enum
import random
import threading
from dataclasses import dataclass
from typing import Any, Final

from premix.localnet.chain import MAX_LAG_SLOTS


class FaultKind(enum.Enum):
    LATENCY = "latency"
    HTTP_429 = "http_429"
    HTTP_5XX = "http_5xx"
    DROP_SEND = "drop_send"
    LOSE_RESPONSE = "lose_response"
    EXPIRE_BLOCKHASH = "expire_blockhash"
    STALE_READ = "stale_read"
    NO_HISTORY = "no_history"
    CONGESTION = "congestion"


_PARAMS: dict[FaultKind, dict[str, Any]] = {
    FaultKind.LATENCY: {"ms": None},
    FaultKind.HTTP_429: {"retry_after": 1},
    FaultKind.HTTP_5XX: {"status": 503},
    FaultKind.DROP_SEND: {},
    FaultKind.LOSE_RESPONSE: {},
    FaultKind.EXPIRE_BLOCKHASH: {},
    FaultKind.STALE_READ: {"slots": None},
    FaultKind.NO_HISTORY: {},
    FaultKind.CONGESTION: {
        "min_micro_lamports": None,
        "land_probability": 0.0,
        "reported_micro_lamports": "min_micro_lamports",
    },
}

# Kinds that only make sense for one method when the rule names none.
_DEFAULT_METHOD: dict[FaultKind, str] = {
    FaultKind.DROP_SEND: "sendTransaction",
    FaultKind.CONGESTION: "sendTransaction",
}

# The calls a lagging node answers differently: every one served from a bank.
STALE_READ_METHODS: Final = frozenset(
    {
        "getAccountInfo",
        "getBalance",
        "getBlockHeight",
        "getEpochInfo",
        "getFeeForMessage",
        "getLatestBlockhash",
        "getMultipleAccounts",
        "getRecentPrioritizationFees",
        "getSignatureStatuses",
        "getSlot",
        "getTransactionCount",
        "isBlockhashValid",
        "sendTransaction",
        "simulateTransaction",
    }
)

# Kinds that only affect some methods: a rule for every method fires only on these.
_APPLIES_TO: dict[FaultKind, frozenset[str]] = {
    FaultKind.STALE_READ: STALE_READ_METHODS,
    FaultKind.NO_HISTORY: frozenset({"getSignatureStatuses"}),
    FaultKind.CONGESTION: frozenset({"sendTransaction"}),
}


@dataclass
class FaultRule:
    """One injected fault. `remaining` counts down the calls left (None: unlimited)."""

    kind: FaultKind
    method: str | None
    remaining: int | None
    probability: float | None
    params: dict[str, Any]
    fired: int = 0  # how many times it took effect

    def matches(self, method: str) -> bool:
        if self.method is not None:
            return self.method == method
        return method in _APPLIES_TO.get(self.kind, frozenset({method}))

    @property
    def exhausted(self) -> bool:
        return self.remaining is not None and self.remaining <= 0


def make_rule(
    kind: str | FaultKind,
    method: str | None = None,
    count: int | None = None,
    probability: float | None = None,
    **params: Any,
) -> FaultRule:
    """A checked rule, not yet switched on (`Faults.add`).

    Raises ValueError for an unknown kind or parameter, a missing or out-of-range parameter, a
    method the kind does not apply to, a count below 1, or a probability outside 0..1.
    """
    try:
        fault_kind = FaultKind(kind)
    except ValueError:
        kinds = ", ".join(k.value for k in FaultKind)
        raise ValueError(f"unknown fault kind {kind!r} (kinds: {kinds})") from None
    if count is not None and count < 1:
        raise ValueError("count must be >= 1")
    if probability is not None and not 0.0 <= probability <= 1.0:
        raise ValueError("probability must be between 0 and 1")
    applies_to = _APPLIES_TO.get(fault_kind)
    if method is not None and applies_to is not None and method not in applies_to:
        raise ValueError(f"{fault_kind.value} does not apply to {method}")
    defaults = _PARAMS[fault_kind]
    unknown = set(params) - set(defaults)
    if unknown:
        raise ValueError(f"unknown parameter(s) for {fault_kind.value}: {sorted(unknown)}")
    merged = {**defaults, **params}
    missing = [name for name, value in merged.items() if value is None]
    if missing:
        raise ValueError(f"{fault_kind.value} needs parameter(s): {missing}")
    _check_params(fault_kind, merged)
    return FaultRule(
        kind=fault_kind,
        method=method if method is not None else _DEFAULT_METHOD.get(fault_kind),
        remaining=count,
        probability=probability,
        params=merged,
    )


def _check_params(kind: FaultKind, params: dict[str, Any]) -> None:
    if kind is FaultKind.HTTP_5XX and not 500 <= int(params["status"]) <= 599:
        raise ValueError("http_5xx status must be between 500 and 599")
    if kind is FaultKind.STALE_READ:
        slots = params["slots"]
        if not isinstance(slots, int) or isinstance(slots, bool) or not 1 <= slots <= MAX_LAG_SLOTS:
            raise ValueError(f"stale_read slots must be an integer between 1 and {MAX_LAG_SLOTS}")
    if kind is FaultKind.CONGESTION:
        if params["reported_micro_lamports"] == "min_micro_lamports":
            params["reported_micro_lamports"] = params["min_micro_lamports"]
        for name in ("min_micro_lamports", "reported_micro_lamports"):
            value = params[name]
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**64:
                raise ValueError(f"congestion {name} must be a whole number of micro-lamports >= 0")
        chance = params["land_probability"]
        if not isinstance(chance, int | float) or isinstance(chance, bool) or not 0 <= chance <= 1:
            raise ValueError("congestion land_probability must be between 0 and 1")
        params["land_probability"] = float(chance)


class Faults:
    """The active fault rules of one localnet (thread-safe)."""

    def __init__(self, seed: int = 0) -> None:
        self._random = random.Random(seed)
        self._rules: list[FaultRule] = []
        self._lock = threading.Lock()

    def inject(
        self,
        kind: str | FaultKind,
        method: str | None = None,
        count: int | None = None,
        probability: float | None = None,
        **params: Any,
    ) -> FaultRule:
        """Add a rule and return it (pass it to `remove` to switch it off).

        Raises ValueError as `make_rule` does.
        """
        return self.add(make_rule(kind, method, count, probability, **params))

    def add(self, rule: FaultRule) -> FaultRule:
        """Switch on a rule made by `make_rule`; returns it."""
        with self._lock:
            self._rules.append(rule)
        return rule

    def remove(self, rule: FaultRule) -> None:
        with self._lock:
            if rule in self._rules:
                self._rules.remove(rule)

    def clear(self) -> None:
        """Switch every fault off."""
        with self._lock:
            self._rules.clear()

    def active(self, kind: FaultKind) -> FaultRule | None:
        """The first rule of `kind` switched on (not counted as used), or None."""
        with self._lock:
            return next((rule for rule in self._rules if rule.kind is kind), None)

    def is_on(self, rule: FaultRule) -> bool:
        """True while `rule` is switched on (not removed, cleared or used up)."""
        with self._lock:
            return any(on is rule for on in self._rules)

    def chance(self, probability: float) -> bool:
        """True with `probability`, drawn from the seeded random the rules use."""
        with self._lock:
            return self._random.random() < probability

    def take(self, kind: FaultKind, methods: list[str]) -> FaultRule | None:
        """The first rule of `kind` that fires for a request calling `methods`, counted as used."""
        with self._lock:
            for rule in self._rules:
                if rule.kind is not kind or not any(rule.matches(m) for m in methods):
                    continue
                if rule.probability is not None and self._random.random() >= rule.probability:
                    continue
                rule.fired += 1
                if rule.remaining is not None:
                    rule.remaining -= 1
                    if rule.exhausted:
                        self._rules.remove(rule)
                return rule
            return None
