import sys

from raftkv.cli import main

sys.exit(main())
