import sys

from ms_fa.cli import main

sys.exit(main())
