"""Shared machinery with no knowledge of the method: atomic storage and caches, progress, machine facts."""
