import sys

from trainpipe.cli import main

sys.exit(main())
