"""``python -m sqzdse.cli``: what ``sweep run --workers N`` starts for each worker."""

import sys

from sqzdse.cli import main

sys.exit(main())
