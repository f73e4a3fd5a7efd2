"""Fast mode: transfers packed into as few legacy transactions as fit, sent concurrently.

Each round signs every transaction that needs a new attempt with one blockhash (one ledger
write, before any send), sends those and every still-open attempt concurrently, and polls
their statuses in batches until each has landed or expired. Expired ones get the next round.
"""

from premix.ledger import Attempt, AttemptState, LedgerTransaction
from premix.mixer.engine import Sender
from premix.mixer.packing import pack


async def send_fast(sender: Sender) -> None:
    """Fund every plan position not funded yet; raises `MixerFailed` after the round in which
    a transaction failed on chain or was refused (the others of that round are settled), and
    `Cancelled` once `sender.should_stop` says so and the rounds in flight settled. The
    recipients funded here have their balances checked once every transaction landed (or
    before the stop)."""
    while True:
        record = sender.record
        reopen = [(tx, a) for tx, a in record.open_attempts()]
        work: list[tuple[LedgerTransaction | None, list[int]]] = [
            (tx, tx.transfers) for tx in record.transactions if tx.may_sign_new_attempt
        ]
        work += [(None, group) for group in pack(record.uncovered_positions(), sender.fees.packing)]
        if not reopen and not work:
            break
        if work and await sender.stop_requested():
            work = []  # a cancel: sign nothing more; what is open is settled first
            if not reopen:
                await sender.verify_balances(sender.funded_here)
                sender.stop()
        fresh = await sender.sign_attempts(work) if work else []
        sends = reopen + fresh
        refusals = await sender.send(sends)
        # refused attempts are awaited too: another node may have forwarded an earlier copy
        await sender.await_outcomes([a for _, a in sends], backoff=True)
        failed = [(tx, a) for tx, a in sends if a.state is AttemptState.LANDED_FAILED]
        if failed:
            await _fail_on_chain(sender, failed)
        await sender.fail_for(refusals)  # those refused that expired without landing
    await sender.verify_balances(sender.funded_here)


async def _fail_on_chain(sender: Sender, failed: list[tuple[LedgerTransaction, Attempt]]) -> None:
    tx, attempt = failed[0]
    await sender.fail(f"transaction {tx.index + 1} failed on chain: {attempt.error}")
