"""`python -m core` is the same as the `pobatch` command."""
from core.cli import main

if __name__ == "__main__":
    main()
