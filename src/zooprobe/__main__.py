import sys

from zooprobe.cli import main

sys.exit(main())
