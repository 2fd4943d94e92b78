"""The canonical store: tables, the repository (the one write path) and migrations."""
