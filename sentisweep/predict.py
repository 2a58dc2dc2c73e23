"""`python -m sentisweep.predict`: see sentisweep.serve.predict."""

from sentisweep import exit_codes
from sentisweep.serve.predict import main

if __name__ == "__main__":
    raise SystemExit(exit_codes.run(main))
