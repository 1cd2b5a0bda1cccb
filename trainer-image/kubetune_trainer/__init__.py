"""kubetune reference trainer: a real PyTorch trainer that follows the trial container contract.

Run it with `python -m kubetune_trainer --help`; the contract and every knob
are documented in `trainer-image/README.md`.
"""

__version__ = "0.1.0"
