"""``python -m reprogram`` is the ``reprogram`` command."""

from reprogram.cli import main

main()
