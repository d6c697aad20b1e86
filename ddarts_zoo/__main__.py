"""``python -m ddarts_zoo COMMAND``: same as the ``ddarts-zoo`` console script."""
import sys

from .cli import main

sys.exit(main())
