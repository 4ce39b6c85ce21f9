"""Bringing the catalog in line with the files: :mod:`.plan` decides what changed (stat,
hash, vanished files) and :mod:`.run` embeds what the plan says and commits it."""
