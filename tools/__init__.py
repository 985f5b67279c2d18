"""Command-line tools of the project (run as scripts from the repository root)."""
