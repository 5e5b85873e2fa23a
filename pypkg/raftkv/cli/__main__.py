"""``python -m raftkv.cli``: the raftkv command line."""

import sys

from raftkv.cli import main

sys.exit(main())
