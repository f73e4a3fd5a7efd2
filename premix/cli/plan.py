"""`premix plan`: how an amount is split over the buyer wallets."""

import click

from premix.amounts import format_sol, sol_text
from premix.cli.base import SOL, WALLET_COUNT, CliState, json_option, pass_state, print_json
from premix.distribution import format_plan, plan_distribution


@click.command()
@click.option("--amount", "amount_lamports", type=SOL, required=True, help="SOL to distribute.")
@click.option(
    "--max-wallets",
    type=WALLET_COUNT,
    default=None,
    help="Use at most this many buyer wallets (1-73).",
)
@click.option(
    "--wallets",
    "available_wallets",
    type=WALLET_COUNT,
    default=None,
    help="Buyer wallets the user has (default: PREMIX_MAX_WALLETS, 73).",
)
@json_option
@pass_state
def plan(
    state: CliState,
    amount_lamports: int,
    max_wallets: int | None,
    available_wallets: int | None,
    as_json: bool,
) -> None:
    """Show how an amount is split over the buyer wallets (the 73-wallet tier table).

    Uses the fewest wallets whose caps hold the amount, in proportion to their caps; the
    amounts add up exactly to the amount.
    """
    settings = state.settings
    table = settings.tier_table()
    available = available_wallets if available_wallets is not None else settings.max_wallets
    wallet_limit = min(available, settings.wallet_limit(max_wallets))
    amounts = plan_distribution(amount_lamports, wallet_limit, table)
    if as_json:
        print_json(
            {
                "amountLamports": amount_lamports,
                "amountSol": sol_text(amount_lamports),
                "walletsAvailable": wallet_limit,
                "walletsUsed": len(amounts),
                "wallets": [
                    {
                        "position": position,
                        "capLamports": cap,
                        "lamports": lamports,
                        "sol": sol_text(lamports),
                    }
                    for position, (cap, lamports) in enumerate(
                        zip(table.caps_lamports, amounts, strict=False), start=1
                    )
                ],
                "totalLamports": sum(amounts),
                "totalSol": sol_text(sum(amounts)),
            }
        )
        return
    click.echo(
        f"Plan for {format_sol(amount_lamports)}: {len(amounts)} of {wallet_limit} buyer "
        "wallet(s), the fewest whose caps hold the amount"
    )
    click.echo(format_plan(amounts, table=table))
