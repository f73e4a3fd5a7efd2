"""localnet: a Solana JSON-RPC node on loopback, backed by LiteSVM (the real SVM runtime).

    from premix.localnet import Localnet
    with Localnet(slot_ms=400, seed=0) as net:  # slot_ms=None: manual clock, call net.advance()
        net.url                                  # "http://127.0.0.1:<port>" (port=0: a free one)
        net.airdrop(pubkey, lamports)            # direct, no RPC; net.balance(pubkey) -> int
        net.slot; net.block_height; net.advance(slots=1); net.expire_blockhashes()
        net.faults.inject(kind, method=None, count=None, probability=None, **params) -> rule
        net.faults.remove(rule); net.faults.clear()
        net.stats.http_requests; net.stats.calls["sendTransaction"]; net.stats.reset()
        net.transaction_log[signature]           # received_slot, landed_slot, outcome, err
        net.intercept(callback); net.stop_intercepting(callback)  # see "Interception" below
        net.stop(); net.start()                  # the node goes down (connections cut) and
                                                 # comes back on the same port, same chain
    serve_forever(host, port, slot_ms, seed)     # foreground, prints the URL (premix localnet)

Behaves like a validator where premix can tell: blockhashes expire 150 blocks after their own;
preflight runs at its commitment (default finalized, 32 slots behind) and allows 144 blocks of
age, so fetch the blockhash at the commitment you preflight with; statuses go processed ->
confirmed (1 slot) -> finalized (32 slots). Simplification: account reads (getBalance,
getAccountInfo, getMultipleAccounts) always show the newest (processed) state.

Modules: `chain` (LiteSVM + blocks, blockhash window, commitments, transaction log),
`methods` (the JSON-RPC methods and their validator shapes), `server` (HTTP, faults applied,
stats), `faults` (fault rules), `intercept` (the request hook), `node` (`Localnet`, the slot
clock, `serve_forever`).

Interception (a test hook): `callback(InterceptedRequest)` runs on the request's server thread
at `Stage.RECEIVED` (parsed, before faults) and `Stage.ANSWERED` (processed, before the reply)
with the HTTP path (the node answers on any path, so clients can be told apart by theirs), the
JSON-RPC method names and the signature of each transaction sent. It may block or act
(kill a client, advance the chain); raising `DropRequest` at RECEIVED means the request is never
processed, at ANSWERED that it was processed but gets no response (the client sees a connection
error either way). Crash tests aim kills with it: after signing and before the send reached the
node, or right after the send was processed and before the worker read the answer.

Fault kinds: latency (ms), http_429 (retry_after), http_5xx (status), drop_send,
lose_response, expire_blockhash; see `premix.localnet.faults`.
"""

from premix.localnet.chain import (
    Block,
    Chain,
    Commitment,
    TransactionOutcome,
    TransactionRecord,
)
from premix.localnet.faults import FaultKind, FaultRule, Faults
from premix.localnet.intercept import DropRequest, InterceptedRequest, Interceptor, Stage
from premix.localnet.node import DEFAULT_SLOT_MS, Localnet, serve_forever
from premix.localnet.server import RpcStats

__all__ = [
    "DEFAULT_SLOT_MS",
    "Block",
    "Chain",
    "Commitment",
    "DropRequest",
    "FaultKind",
    "FaultRule",
    "Faults",
    "InterceptedRequest",
    "Interceptor",
    "Localnet",
    "RpcStats",
    "Stage",
    "TransactionOutcome",
    "TransactionRecord",
    "serve_forever",
]
