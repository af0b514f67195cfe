import sys
import time

STARTED = time.monotonic()  # before torch loads: a chunk's figures count its start-up too

from scoring.cli import main  # noqa: E402

sys.exit(main(started=STARTED))
