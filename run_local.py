"""Run the MNIST pipeline locally with Apache Beam's DirectRunner.

python run_local.py --help
"""

import sys

from pipeline.cli import main

if __name__ == "__main__":
    sys.exit(main())
