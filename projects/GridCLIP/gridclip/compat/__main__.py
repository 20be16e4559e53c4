"""``python -m gridclip.compat [--json]``: list the active Detectron2 compatibility fixes."""
import sys

from gridclip.compat.reporting import main

if __name__ == "__main__":
    sys.exit(main())
