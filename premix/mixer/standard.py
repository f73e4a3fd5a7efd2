"""Standard mode: one transfer per transaction, strictly one at a time.

For each plan position in order: settle or re-send what the ledger holds for it, otherwise sign
a new attempt (saved before the send), send it, wait until it is `confirmed`, check the
recipient's balance, and only then move on. At most one transfer is ever in flight.
"""

from premix.ledger import AttemptState, TransactionState
from premix.mixer.engine import Sender


async def send_standard(run: Sender) -> None:
    """Fund every plan position not funded yet, one confirmed transfer at a time; raises
    `MixerFailed` at the first transfer that fails on chain or is refused."""
    for entry in run.record.plan:
        position = entry.position
        while True:
            tx = run.record.transaction_of(position)
            if tx is not None and tx.state is TransactionState.LANDED_OK:
                break
            if tx is not None and (attempt := tx.open_attempt) is not None:
                pair = (tx, attempt)
            else:
                # a transaction recorded by fast mode keeps its group of transfers
                [pair] = await run.sign_attempts([(tx, tx.transfers if tx else [position])])
            refusals = await run.send([pair])
            if refusals:
                await run.fail_for(refusals)
            await run.await_outcomes([pair[1]], backoff=False)
            state = pair[1].state
            if state is AttemptState.LANDED_FAILED:
                await run.fail(f"transaction {pair[0].index + 1} failed on chain: {pair[1].error}")
            if state is AttemptState.LANDED_OK:
                await run.verify_balances(pair[0].transfers)
                break
            # expired without landing: the loop signs a new attempt with a fresh blockhash
