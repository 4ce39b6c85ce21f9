"""Measuring retrieval quality: metrics (:mod:`.metrics`), labelled-set readers
(:mod:`.labels`) and evaluating an Engine on a labelled set (:mod:`.engine_eval`)."""
