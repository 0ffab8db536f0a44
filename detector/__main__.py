"""`python -m detector` is `iotad`."""

import sys

from detector.cli import main

sys.exit(main())
