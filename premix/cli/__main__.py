"""`python -m premix.cli`: the `premix` command."""

from premix.cli import main

main()
