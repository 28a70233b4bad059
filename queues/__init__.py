"""Live and historic queue statistics for supervisors (issue #6, not built yet)."""
