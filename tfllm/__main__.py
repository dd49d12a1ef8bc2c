"""`python -m tfllm ...` runs the `tfllm` command."""

import sys

from tfllm.cli import main

if __name__ == "__main__":
    sys.exit(main())
