"""Where results live on disk: atomic files and the per-user cache."""
