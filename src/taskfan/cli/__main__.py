import sys

from taskfan.cli.main import main

sys.exit(main())
