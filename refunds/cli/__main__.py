import sys

from refunds.cli import main

main(sys.argv[1:])
