"""`python -m shortlist.cli`: the same as the `shortlist` command."""

from shortlist.cli import main

main()
