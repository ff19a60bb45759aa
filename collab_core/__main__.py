import sys

from collab_core.cli import main

sys.exit(main())
