"""`python -m downloader` is the `patent-images` command."""

import sys

from downloader.cli.app import main

sys.exit(main())
