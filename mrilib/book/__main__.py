"""``python -m mrilib.book``: run the book (see :mod:`mrilib.book.pipeline`)."""

from mrilib.book.pipeline import main

raise SystemExit(main())
