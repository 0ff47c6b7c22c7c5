"""``python -m nbhelpers.cli``: the ``nbhelpers`` command."""

import sys

from nbhelpers.cli import main

sys.exit(main())
