import sys

from tfleet.cli.main import main

sys.exit(main())
