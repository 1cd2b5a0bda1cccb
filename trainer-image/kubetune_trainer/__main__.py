"""`python -m kubetune_trainer`."""

from kubetune_trainer.cli import run

run()
