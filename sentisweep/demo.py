"""`python -m sentisweep.demo`: see sentisweep.serve.demo."""

from sentisweep import exit_codes
from sentisweep.serve.demo import main

if __name__ == "__main__":
    raise SystemExit(exit_codes.run(main))
