"""``python -m firmware_bridge`` = ``kmerl-bridge``."""

import sys

from .cli import main

sys.exit(main())
