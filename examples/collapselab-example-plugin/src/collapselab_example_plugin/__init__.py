"""An example collapselab plugin (see README.md)."""
