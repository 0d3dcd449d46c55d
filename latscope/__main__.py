import sys

from latscope.cli import main

sys.exit(main())
