"""`python -m nncompile.cli`: the same as the `nncompile` command."""
import sys

from .main import main

sys.exit(main())
