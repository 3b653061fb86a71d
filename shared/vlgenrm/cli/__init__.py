"""The ``vlgenrm`` command line."""
