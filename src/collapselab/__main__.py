"""``python -m collapselab`` runs the command-line interface."""

from collapselab.cli import main

main()
