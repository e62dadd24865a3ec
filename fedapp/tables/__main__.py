"""``python -m fedapp.tables``: the table command (:mod:`fedapp.tables.cli`)."""

import sys

from fedapp.tables.cli import main

sys.exit(main())
