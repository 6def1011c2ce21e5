"""``python -m lifelong`` runs the command line."""

import sys

from lifelong.cli import entry

sys.exit(entry())
