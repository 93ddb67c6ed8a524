"""Fixtures that run assetfs-broker against the stack (filled in by the broker work)."""
