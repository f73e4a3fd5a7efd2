"""`premix wallets status --user U [--json]` as a subprocess: each buyer wallet's balance on
chain against its last premix (one a real worker ran on localnet, stored in the session's
MongoDB-wire server), read without the encryption keys (no private key is decrypted); an
unknown user is one error line and exit 1."""

from premix.localnet import Localnet
from premix.queue import enqueue_premix_funds
from premix.settings import Settings
from premix.store import Store
from tests.test_cli import assert_one_error_line, premix
from tests.test_cli_result import (  # noqa: F401 (settings, store: fixtures)
    assert_no_secret,
    env_of,
    settings,
    store,
)
from tests.worker.helpers import create_user, drain
from tests.worker.helpers import run_worker as run_arq_worker

SOL = 10**9


async def test_status_json_holds_each_wallets_balance_on_chain_and_its_last_premix(
    settings: Settings, store: Store, fast_localnet: Localnet
) -> None:
    user = await create_user(store, fast_localnet, "u1", buyers=4)
    queued = await enqueue_premix_funds("u1", 42, 2, settings=settings)
    assert queued.job_id is not None
    await run_arq_worker(settings)
    drain(fast_localnet, user.buyers[0], keep_lamports=SOL // 10)

    result = premix("wallets", "status", "--user", "u1", "--json", env=env_of(settings))

    assert result.status == 0, result
    report = result.json()
    wallets = report["wallets"]
    assert [w["publicKey"] for w in wallets] == [str(b.pubkey()) for b in user.buyers]
    assert [w["balanceLamports"] for w in wallets] == user.buyer_balances(fast_localnet)
    assert {w["lastPremix"]["jobId"] for w in wallets} == {queued.job_id}
    assert [w["ready"] for w in wallets] == [False, True, True, True]
    assert report["totals"]["wallets"] == 4 and report["totals"]["ready"] == 3
    assert report["totals"]["plannedLamports"] == 2 * SOL
    assert report["totals"]["balanceLamports"] == sum(user.buyer_balances(fast_localnet))
    assert_no_secret(user, result)

    text = premix("wallets", "status", "--user", "u1", env=env_of(settings))

    assert text.status == 0, text
    total = sum(user.buyer_balances(fast_localnet)) / SOL
    assert f"3 of 4 wallets ready; balance {total:g} SOL, planned 2 SOL" in text.stdout
    assert queued.job_id in text.stdout
    assert_no_secret(user, text)


async def test_status_of_an_unknown_user_is_one_line_and_exit_1(
    settings: Settings, store: Store
) -> None:
    result = premix("wallets", "status", "--user", "nobody", env=env_of(settings))

    assert_one_error_line(
        result,
        "No buyer wallets found: user nobody has no buyer wallets; create buyer wallets first",
    )
    assert result.stdout == ""


async def test_status_with_the_rpc_node_down_is_one_line_and_exit_1(
    settings: Settings, store: Store, fast_localnet: Localnet
) -> None:
    await create_user(store, fast_localnet, "u1", buyers=2)
    env = {**env_of(settings), "PREMIX_RPC_URL": "http://127.0.0.1:9", "PREMIX_RPC_MAX_TRIES": "1"}

    result = premix("wallets", "status", "--user", "u1", env=env)

    assert result.status == 1, result
    assert "Traceback" not in result.stderr
    assert len(result.error_lines) == 1, result.stderr
    assert result.error_lines[0].startswith(
        "premix: error: Temporary failure: Solana RPC getMultipleAccounts failed"
    )
    assert result.stdout == ""
