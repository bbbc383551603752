"""``python -m connectors.provision up|down``: kept for the commands people already type.

The tool lives in :mod:`cli.provision`.
"""

import sys

from cli.provision import main

if __name__ == "__main__":
    sys.exit(main())
