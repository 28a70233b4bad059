"""Call-recording index tied to work orders (issue #7, not built yet)."""
