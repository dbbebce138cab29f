"""`python -m restock ...`: the `restock` command."""

from restock.cli import main

if __name__ == "__main__":  # pragma: no cover
    main()
