"""`python -m pobatch.core` is the same as the `pobatch` command."""
from pobatch.core.cli import main

if __name__ == "__main__":
    main()
