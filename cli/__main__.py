"""`python -m cli`: the same as the `pol` console script."""

import sys

from .main import main

sys.exit(main())
