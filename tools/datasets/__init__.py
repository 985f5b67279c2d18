"""Dataset makers behind the ``tools/make_*_data.py`` scripts (not part of the
installed package)."""
