"""``python -m atlaspipe``: the ``atlaspipe`` command."""

import sys

from atlaspipe.cli.main import main

sys.exit(main())
