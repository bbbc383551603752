"""``python -m connectors.producer``: kept for the commands people already type.

The tool lives in :mod:`cli.producer`.
"""

import sys

from cli.producer import main

if __name__ == "__main__":
    sys.exit(main())
