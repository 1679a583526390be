"""`python -m daemon.cli`: the same as the `ovembed` command."""

import sys

from daemon.cli.main import main

sys.exit(main())
