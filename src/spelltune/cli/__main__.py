"""`python -m spelltune.cli`, as the tests, the notebooks and W&B's agent (sweep.yaml's command) run it."""

import sys

from spelltune.cli import main

if __name__ == "__main__":
    sys.exit(main())
