"""`python -m sentisweep.export`: see sentisweep.serve.export."""

from sentisweep.serve.export import main

if __name__ == "__main__":
    raise SystemExit(main())
