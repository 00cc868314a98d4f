"""``python -m jaxvpp`` is the ``jaxvpp`` command."""

import sys

from jaxvpp.cli import main

sys.exit(main())
