"""`python -m sentisweep.export`: see sentisweep.serve.export."""

from sentisweep import exit_codes
from sentisweep.serve.export import main

if __name__ == "__main__":
    raise SystemExit(exit_codes.run(main))
