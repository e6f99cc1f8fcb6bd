"""`python -m streams.tools.cli`: the same as the `shinsa` command."""

from streams.tools.cli import main

main()
