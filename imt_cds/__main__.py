"""``python -m imt_cds``: the same command line as the ``imt-cds`` console script."""

import sys

from .cli.main import main

sys.exit(main())
