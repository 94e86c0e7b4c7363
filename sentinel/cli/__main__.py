"""``python -m sentinel.cli``: the same as the ``sentinel`` command."""

from __future__ import annotations

import sys

from sentinel.cli.main import main

sys.exit(main())
