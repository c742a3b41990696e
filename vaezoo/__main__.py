"""``python -m vaezoo``: the command line."""

import sys

from vaezoo.cli import main

sys.exit(main())
