"""FastAGI IVR: Mandarin menu and outage self-service (issue #4, not built yet)."""
