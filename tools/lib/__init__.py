"""Code behind the tools in tools/: CLI helpers, CPU torchrun, the head matrix.

Not part of the installed package: users import mmdet_polyloss; the tools and
their tests import this from a checkout.
"""
