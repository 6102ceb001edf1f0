"""`python -m krl.cli`, as the services are started by the lab and the tests: the `krl` command."""

import sys

from krl.cli import main

sys.exit(main())
