"""Standard mode: one transfer per transaction, strictly one at a time.

For each plan position in order: settle or re-send what the ledger holds for it, otherwise sign
a new attempt (saved before the send), send it, wait until it is `confirmed`, check the
recipient's balance, and only then move on. At most one transfer is ever in flight.
"""

from premix.ledger import AttemptState, TransactionState
from premix.mixer.engine import Sender


async def send_standard(sender: Sender) -> None:
    """Fund every plan position not funded yet, one confirmed transfer at a time; raises
    `MixerFailed` at the first transfer that fails on chain or is refused, `Cancelled` before
    signing a transfer once `sender.should_stop` says so (the one in flight settled)."""
    for entry in sender.record.plan:
        position = entry.position
        while True:
            tx = sender.record.transaction_of(position)
            if tx is not None and tx.state is TransactionState.LANDED_OK:
                break
            if tx is not None and (attempt := tx.open_attempt) is not None:
                pair = (tx, attempt)
            else:
                if await sender.stop_requested():  # a safe point: nothing of the run is open
                    sender.stop()
                # a transaction recorded by fast mode keeps its group of transfers
                [pair] = await sender.sign_attempts([(tx, tx.transfers if tx else [position])])
            refusals = await sender.send([pair])
            # a refused attempt is awaited too: another node may have forwarded an earlier copy
            await sender.await_outcomes([pair[1]], backoff=False)
            state = pair[1].state
            if state is AttemptState.LANDED_FAILED:
                await sender.fail(
                    f"transaction {pair[0].index + 1} failed on chain: {pair[1].error}"
                )
            if state is AttemptState.LANDED_OK:
                await sender.verify_balances(pair[0].transfers)
                break
            await sender.fail_for(refusals)  # refused, and expired without landing
            # expired without landing: the loop signs a new attempt with a fresh blockhash
