"""`python -m tfleet.health {health-bridge,probe} ...` (the same as the tfleet subcommands)."""

import sys

from tfleet.health.cli import main

sys.exit(main())
