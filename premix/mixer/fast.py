"""Fast mode: transfers packed into as few legacy transactions as fit, sent concurrently.

Each round signs every transaction that needs a new attempt with one blockhash (one ledger
write, before any send), sends those and every still-open attempt concurrently, and polls
their statuses in batches until each has landed or expired. Expired ones get the next round.
"""

from premix.ledger import Attempt, AttemptState, LedgerTransaction
from premix.mixer.engine import Sender
from premix.mixer.packing import pack


async def send_fast(run: Sender) -> None:
    """Fund every plan position not funded yet; raises `MixerFailed` after the round in which
    a transaction failed on chain or was refused (the others of that round are settled). The
    recipients funded here have their balances checked once every transaction landed."""
    while True:
        record = run.record
        reopen = [(tx, a) for tx, a in record.open_attempts()]
        work: list[tuple[LedgerTransaction | None, list[int]]] = [
            (tx, tx.transfers) for tx in record.transactions if tx.may_sign_new_attempt
        ]
        work += [(None, group) for group in pack(record.uncovered_positions(), run.fees)]
        if not reopen and not work:
            break
        fresh = await run.sign_attempts(work) if work else []
        sends = reopen + fresh
        refusals = await run.send(sends)
        refused = {id(r.attempt) for r in refusals}
        await run.await_outcomes(
            [a for _, a in sends if id(a) not in refused],
            backoff=True,
            first_wait_seconds=run.first_poll_seconds,
        )
        failed = [(tx, a) for tx, a in sends if a.state is AttemptState.LANDED_FAILED]
        if failed:
            await _fail_on_chain(run, failed)
        if refusals:
            await run.fail_for(refusals)
    await run.verify_balances(run.funded_here)


async def _fail_on_chain(run: Sender, failed: list[tuple[LedgerTransaction, Attempt]]) -> None:
    tx, attempt = failed[0]
    await run.fail(f"transaction {tx.index + 1} failed on chain: {attempt.error}")
