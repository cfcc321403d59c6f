"""`python -m spelltune.bench`: the CPU benchmark (spelltune.bench.cpu)."""

from spelltune.bench.cpu import main

if __name__ == "__main__":
    raise SystemExit(main())
