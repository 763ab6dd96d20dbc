import sys

from gat_pyg.cli import main

sys.exit(main())
