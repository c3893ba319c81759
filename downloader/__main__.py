"""`python -m downloader` is the `patent-images` command."""

import sys

from .cli import main

sys.exit(main())
