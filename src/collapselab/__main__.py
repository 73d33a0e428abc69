"""``python -m collapselab`` runs the command-line interface."""

from collapselab.cli import main

if __name__ == "__main__":
    main()
