"""`python -m attackgen` (and `torchrun -m attackgen`) runs the command line."""

from attackgen.cli.main import main

if __name__ == "__main__":
    main()
