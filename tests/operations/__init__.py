"""Starting, stopping, crashing, resuming, upgrading, metrics and settings."""
