"""``python -m oauthproxy_adapters``: the ``oauthproxy`` command (see ``cli.py``)."""

import sys

from .cli import main

sys.exit(main())
