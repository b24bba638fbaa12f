import sys

from dnn_search.cli import main

sys.exit(main())
