"""``python -m mmsb``: the same command line as ``mmsb``."""

from mmsb.cli import main

if __name__ == "__main__":
    main()
