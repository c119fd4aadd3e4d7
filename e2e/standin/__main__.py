"""`python -m e2e.standin`: tensorflow_model_server's command line."""

import sys

from e2e.standin.server import main

main(sys.argv)
