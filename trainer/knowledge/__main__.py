"""``python -m trainer.knowledge`` runs the knowledge CLI."""

import sys

from .cli import main

sys.exit(main())
