"""Development tools of the tpwire checkout (not installed)."""
