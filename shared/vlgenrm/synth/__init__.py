"""The synthetic domain (§7): coloured shapes and rendered text whose truth is known."""
