"""`python -m sentisweep.predict`: see sentisweep.serve.predict."""

from sentisweep.serve.predict import main

if __name__ == "__main__":
    raise SystemExit(main())
