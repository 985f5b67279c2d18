"""Code behind the tools in tools/ (not part of the installed package)."""
