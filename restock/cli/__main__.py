"""`python -m restock.cli ...` (the trainers re-execute themselves this way with a fixed hash seed)."""

from restock.cli import main

if __name__ == "__main__":  # pragma: no cover
    main()
