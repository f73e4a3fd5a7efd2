"""`premix wallets create|list|import|status` and `premix keys generate|rotate`: a user's wallets in
the store (public keys only are ever printed), whether they hold what their last premix sent,
and the encryption keys of their private keys."""

import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import click
from rich.table import Table
from solders.keypair import Keypair

from premix.cli.base import (
    STDIN_PATH,
    USER_ID,
    CliState,
    CommandFailed,
    json_option,
    note,
    pass_state,
    print_json,
    run_async,
    stdout_console,
)
from premix.constants import MAX_BUYER_WALLETS
from premix.errors import TransientError
from premix.keys import KeyRing, keypair_from_file, keypair_from_secret
from premix.settings import Settings
from premix.store import Store
from premix.wallets import BUYER, FUNDING, TooManyBuyerWallets

MEMORY_STORE_NOTE = (
    "note: PREMIX_MONGODB_URI is memory://, an in-process store that is gone when this command "
    "exits; set it to a MongoDB URI to keep wallets (the demo uses memory:// on its own)"
)
MEMORY_STORE_REFUSED = (
    "PREMIX_MONGODB_URI is memory://, an in-process store that is gone when this command "
    "exits: the wallet keys would be lost; set it to a MongoDB URI. Nothing was stored"
)


@asynccontextmanager
async def open_store(settings: Settings, *, stores_keys: bool = False) -> AsyncIterator[Store]:
    """The configured store, reachable; closed afterwards. `stores_keys`: the command writes
    wallet keys, refused on `memory://` (they would be gone when the command exits)."""
    if settings.uses_memory_store:
        if stores_keys:
            raise CommandFailed(MEMORY_STORE_REFUSED)
        note(MEMORY_STORE_NOTE)
    store = await Store.open(settings)
    try:
        try:
            await store.ping()
        except TransientError as e:
            raise CommandFailed(f"{e} (check PREMIX_MONGODB_URI)") from e
        yield store
    finally:
        await store.close()


def funding_row(public_key: object) -> dict[str, Any]:
    """The funding wallet as a JSON row (position 0)."""
    return {"role": FUNDING, "position": 0, "publicKey": str(public_key)}


def buyer_row(stored_position: int, public_key: object) -> dict[str, Any]:
    """A buyer wallet as a JSON row; the store counts from 0, people (and `premix plan`) from 1."""
    return {"role": BUYER, "position": stored_position + 1, "publicKey": str(public_key)}


def wallet_rows(funding: object | None, buyers: Sequence[object]) -> list[dict[str, Any]]:
    """Wallets as JSON rows: the funding wallet (if any) first, then the buyers in order."""
    rows = [] if funding is None else [funding_row(funding)]
    return rows + [buyer_row(position, public_key) for position, public_key in enumerate(buyers)]


def print_wallet_table(title: str, rows: Sequence[dict[str, Any]]) -> None:
    """Print wallet rows as a table (buyer positions are 1-based, as in `premix plan`)."""
    table = Table(title=title, title_justify="left")
    table.add_column("role")
    table.add_column("#", justify="right")
    table.add_column("public key", no_wrap=True)
    for row in rows:
        position = "" if row["role"] == FUNDING else str(row["position"])
        table.add_row(row["role"], position, row["publicKey"])
    stdout_console().print(table)


@click.group()
def wallets() -> None:
    """Create, list and import a user's wallets in the store (PREMIX_MONGODB_URI).

    Private keys are stored encrypted under PREMIX_ENCRYPTION_KEYS and never printed. These
    commands are for a real MongoDB: with memory:// the store lives only as long as the command.
    """


@wallets.command("create")
@click.option("--user", "user_id", type=USER_ID, required=True, help="The user's id.")
@click.option(
    "--buyers",
    type=click.IntRange(0, MAX_BUYER_WALLETS),
    default=0,
    help="Append this many new buyer wallets (a user has at most 73).",
)
@click.option("--funding", is_flag=True, help="Create the user's funding wallet.")
@json_option
@pass_state
def wallets_create(
    state: CliState, user_id: str, buyers: int, funding: bool, as_json: bool
) -> None:
    """Generate new wallets for a user: a funding wallet and/or buyer wallets.

    Refuses, creating nothing, when the user already has a funding wallet (see `wallets import
    --replace`) or would have more than 73 buyer wallets.
    """
    if not funding and buyers == 0:
        raise click.UsageError("nothing to create: give --funding and/or --buyers N")
    settings = state.settings

    async def create() -> list[dict[str, Any]]:
        async with open_store(settings, stores_keys=True) as store:
            await store.ensure_indexes()
            if funding:
                existing = await store.wallets.funding_public_key(user_id)
                if existing is not None:
                    raise CommandFailed(
                        f"user {user_id} already has a funding wallet ({existing}); nothing "
                        "was created"
                    )
            held = await store.wallets.buyer_wallet_count(user_id)
            if held + buyers > MAX_BUYER_WALLETS:
                raise TooManyBuyerWallets(user_id, existing=held, adding=buyers)
            store.wallets.key_ring  # noqa: B018 - fail on missing keys before writing anything
            buyer_keypairs = [Keypair() for _ in range(buyers)]
            positions = await store.wallets.add_buyer_wallets(user_id, buyer_keypairs)
            rows = [
                buyer_row(position, keypair.pubkey())
                for position, keypair in zip(positions, buyer_keypairs, strict=True)
            ]
            if funding:
                funding_keypair = Keypair()
                await store.wallets.set_funding_wallet(user_id, funding_keypair)
                rows.insert(0, funding_row(funding_keypair.pubkey()))
            return rows

    rows = run_async(create())
    if as_json:
        print_json({"userId": user_id, "created": rows})
    else:
        print_wallet_table(f"Created for user {user_id}", rows)


@wallets.command("list")
@click.option("--user", "user_id", type=USER_ID, required=True, help="The user's id.")
@json_option
@pass_state
def wallets_list(state: CliState, user_id: str, as_json: bool) -> None:
    """List a user's funding and buyer wallets (public keys only)."""
    settings = state.settings

    async def read() -> tuple[object | None, list[object]]:
        async with open_store(settings) as store:
            funding = await store.wallets.funding_public_key(user_id)
            buyers: list[object] = list(await store.wallets.buyer_public_keys(user_id))
            return funding, buyers

    funding, buyers = run_async(read())
    if as_json:
        print_json(
            {
                "userId": user_id,
                "funding": None if funding is None else str(funding),
                "buyers": wallet_rows(None, buyers),
            }
        )
        return
    if funding is None and not buyers:
        click.echo(f"user {user_id} has no wallets")
        return
    print_wallet_table(
        f"Wallets of user {user_id}: {'1' if funding else 'no'} funding, {len(buyers)} buyer",
        wallet_rows(funding, buyers),
    )


@wallets.command("import")
@click.option("--user", "user_id", type=USER_ID, required=True, help="The user's id.")
@click.option("--funding", "role", flag_value=FUNDING, help="Import as the funding wallet.")
@click.option("--buyer", "role", flag_value=BUYER, help="Import as the next buyer wallet.")
@click.option(
    "--secret-file",
    "keypair_path",
    metavar="PATH",
    required=True,
    help="File holding the secret key: base58 (64 bytes) or a Solana CLI keypair JSON; "
    "'-' reads standard input.",
)
@click.option("--replace", is_flag=True, help="Replace an existing funding wallet.")
@json_option
@pass_state
def wallets_import(
    state: CliState,
    user_id: str,
    role: str | None,
    keypair_path: str,
    replace: bool,
    as_json: bool,
) -> None:
    """Import an existing keypair as a user's funding wallet or next buyer wallet.

    The secret key is read from a file (or stdin) and stored encrypted; it is never printed.
    """
    if role is None:
        raise click.UsageError("give --funding or --buyer")
    if keypair_path == STDIN_PATH:
        keypair = keypair_from_secret(sys.stdin.read())
    else:
        keypair = keypair_from_file(keypair_path)
    settings = state.settings

    async def store_keypair() -> dict[str, Any]:
        async with open_store(settings, stores_keys=True) as store:
            await store.ensure_indexes()
            store.wallets.key_ring  # noqa: B018 - fail on missing keys before writing anything
            if role == FUNDING:
                existing = await store.wallets.funding_public_key(user_id)
                if existing is not None and existing != keypair.pubkey() and not replace:
                    raise CommandFailed(
                        f"user {user_id} already has a funding wallet ({existing}); give "
                        "--replace to replace it (its key is then deleted from the store)"
                    )
                await store.wallets.set_funding_wallet(user_id, keypair)
                return funding_row(keypair.pubkey())
            [position] = await store.wallets.add_buyer_wallets(user_id, [keypair])
            return buyer_row(position, keypair.pubkey())

    row = run_async(store_keypair())
    if as_json:
        print_json({"userId": user_id, "imported": row})
    elif row["role"] == FUNDING:
        click.echo(f"imported {row['publicKey']} as the funding wallet of user {user_id}")
    else:
        click.echo(
            f"imported {row['publicKey']} as buyer wallet #{row['position']} of user {user_id}"
        )


@wallets.command("status")
@click.option("--user", "user_id", type=USER_ID, required=True, help="The user's id.")
@json_option
@pass_state
def wallets_status(state: CliState, user_id: str, as_json: bool) -> None:
    """Show whether each buyer wallet holds what its last premix sent it (balances on chain).

    Exit 1 for a user with no buyer wallets.
    """
    from premix.readiness import wallet_readiness  # the RPC client only for this command

    report = run_async(wallet_readiness(user_id, settings=state.settings))
    if as_json:
        print_json(report)
        return
    table = Table(title=f"Buyer wallets of user {user_id}", title_justify="left")
    for name in ("#", "address", "balance SOL", "planned SOL", "last premix", "ready"):
        table.add_column(name, justify="right" if "SOL" in name or name == "#" else "left")
    for w in report["wallets"]:
        last = w["lastPremix"]
        table.add_row(
            str(w["position"]),
            w["publicKey"],
            w["balanceSol"],
            w["plannedSol"] or "",
            "" if last is None else last["jobId"],
            "yes" if w["ready"] else f"no: {w['reason']}",
        )
    stdout_console().print(table)
    totals = report["totals"]
    click.echo(
        f"{totals['ready']} of {totals['wallets']} wallets ready; balance "
        f"{totals['balanceSol']} SOL, planned {totals['plannedSol']} SOL"
    )


# --- keys ---


@click.group()
def keys() -> None:
    """Encryption keys for wallet private keys (PREMIX_ENCRYPTION_KEYS)."""


@keys.command("generate")
@click.option("--key-id", default=None, help="Id of the new key (default: random 'k' + 8 hex).")
def keys_generate(key_id: str | None) -> None:
    """Print a new random 'key_id:base64' entry for PREMIX_ENCRYPTION_KEYS (stdout only).

    To rotate: put it first in PREMIX_ENCRYPTION_KEYS, keep the old keys after it, restart the
    workers, run `premix keys rotate`, then drop the old keys.
    """
    click.echo(KeyRing.generate_key(key_id))


@keys.command("rotate")
@json_option
@pass_state
def keys_rotate(state: CliState, as_json: bool) -> None:
    """Re-encrypt every stored wallet key under the newest (first) key. Safe to re-run."""
    settings = state.settings
    key_ring = KeyRing.from_settings(settings)

    async def rotate() -> int:
        async with open_store(settings) as store:
            return await store.wallets.reencrypt_all()

    count = run_async(rotate())
    if as_json:
        print_json({"reencrypted": count, "keyId": key_ring.primary_key_id})
    else:
        click.echo(f"re-encrypted {count} wallet key(s) under key '{key_ring.primary_key_id}'")
