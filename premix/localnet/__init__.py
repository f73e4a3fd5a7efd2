"""localnet: a Solana JSON-RPC node on loopback, backed by LiteSVM (the real SVM runtime).

    from premix.localnet import Localnet
    with Localnet(slot_ms=400, seed=0) as net:  # slot_ms=None: manual clock, call net.advance()
        net.url                                  # "http://127.0.0.1:<port>" (port=0: a free one)
        net.airdrop(pubkey, lamports)            # direct, no RPC; net.balance(pubkey) -> int
        net.slot; net.block_height; net.advance(slots=1); net.expire_blockhashes()
        net.faults.inject(kind, method=None, count=None, probability=None, **params) -> rule
        net.faults.remove(rule); net.faults.clear(); net.faults.add(make_rule(kind, ...))
        net.chain.block(Commitment.FINALIZED, behind=0)  # the block whose bank a read sees
        net.chain.balance(pubkey, bank)          # lamports in that bank (bank=None: now)
        net.stats.http_requests; net.stats.calls["sendTransaction"]; net.stats.reset()
        net.stats.sends_of(signature)            # each sendTransaction of it: slot, flags
        net.transaction_log[signature]           # received_slot, landed_slot, outcome, err
        net.intercept(callback); net.stop_intercepting(callback)  # see "Interception" below
        net.stop(); net.start()                  # the node goes down (connections cut) and
                                                 # comes back on the same port, same chain
    serve_forever(host, port, slot_ms, seed)     # foreground, prints the URL (premix localnet)

Behaves like a validator where premix can tell (agave's `rpc/src/rpc.rs` is the reference):
- banks: every read is served from the bank of its commitment (default finalized): processed is
  the newest block, confirmed 1 slot back, finalized 32 back. Its context slot, block height,
  blockhash, accounts (getBalance, getAccountInfo, getMultipleAccounts, from an undo log of the
  last 200 slots, `history.py`) and fees (getFeeForMessage: null for a blockhash that bank has
  not seen or that is over 300 blocks older) are that bank's. getSignatureStatuses is served
  from the processed bank; statuses go processed -> confirmed (1 slot) -> finalized (32 slots).
- blockhashes expire 150 blocks after their own; preflight runs in its commitment's bank
  (default finalized) and allows 144 blocks of age, so fetch the blockhash at the commitment
  you preflight with. Simplification: simulation runs on the newest accounts (only its
  blockhash window follows the bank).
- `minContextSlot` on every read that has a bank and on sendTransaction (checked in its
  preflight bank, processed with skipPreflight): below it is -32016 "Minimum context slot has
  not been reached" with data `{"contextSlot": N}`.
- sendTransaction: `skipPreflight` skips the simulation (a transaction that cannot land is then
  accepted and dropped, one that fails lands with its error); `maxRetries` is checked (a
  non-negative integer) and otherwise moot: localnet lands or drops a transaction at once.
  `stats.sends` records each call's flags (skipPreflight, maxRetries, minContextSlot).
- size: a transaction over 1,232 bytes (base64 over 1,644 characters, base58 over 1,683) is
  -32602 with agave's message, in sendTransaction and simulateTransaction (a message over that
  in getFeeForMessage too).

Modules: `chain` (LiteSVM + blocks, blockhash window, banks, transaction log), `history` (account
states of recent slots), `methods` (the JSON-RPC methods and their validator shapes), `params`
(parsing a call's params, size limits), `errors` (`RpcError` and the codes), `server` (HTTP,
faults applied, stats), `faults` (fault rules), `intercept` (the request hook), `node`
(`Localnet`, the slot clock, `serve_forever`).

Interception (a test hook): `callback(InterceptedRequest)` runs on the request's server thread
at `Stage.RECEIVED` (parsed, before faults) and `Stage.ANSWERED` (processed, before the reply)
with the HTTP path (the node answers on any path, so clients can be told apart by theirs), the
JSON-RPC method names and the signature of each transaction sent. It may block or act
(kill a client, advance the chain); raising `DropRequest` at RECEIVED means the request is never
processed, at ANSWERED that it was processed but gets no response (the client sees a connection
error either way). Crash tests aim kills with it: after signing and before the send reached the
node, or right after the send was processed and before the worker read the answer.

Fault kinds: latency (ms), http_429 (retry_after), http_5xx (status), drop_send,
lose_response, expire_blockhash, stale_read (slots: a node that many slots behind answers),
no_history (statuses only from the last 150 slots, even with searchTransactionHistory); see
`premix.localnet.faults`. `premix localnet --fault KIND[:param=value,...]` switches them on.
"""

from premix.localnet.chain import (
    Block,
    Chain,
    Commitment,
    TransactionOutcome,
    TransactionRecord,
)
from premix.localnet.faults import FaultKind, FaultRule, Faults, make_rule
from premix.localnet.intercept import DropRequest, InterceptedRequest, Interceptor, Stage
from premix.localnet.node import DEFAULT_SLOT_MS, Localnet, serve_forever
from premix.localnet.server import ReceivedSend, RpcStats

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
    "ReceivedSend",
    "RpcStats",
    "Stage",
    "TransactionOutcome",
    "TransactionRecord",
    "make_rule",
    "serve_forever",
]
