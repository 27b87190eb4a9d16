"""features plugin (in progress)."""
