import sys

from tpwire.cli import main

sys.exit(main())
