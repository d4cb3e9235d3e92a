"""``python -m lensclf``: the ``lensclf`` command line."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
