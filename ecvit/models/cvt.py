"""(family module: filled in by its implementation)."""
