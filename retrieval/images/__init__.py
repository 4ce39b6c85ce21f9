"""Image files in, uint8 model batches out: discovery and bounded reading (:mod:`.files`),
Pillow decoding with its guards (:mod:`.decode`), fitting to the model's input
(:mod:`.preprocess`), decoding in loader workers (:mod:`.batches`), the one
decode -> batch -> embed loop (:mod:`.embedding`) and JPEG decoding on the model's
device (:mod:`.device`).

Nothing is imported here, so a caller that needs only :mod:`.files` does not load torch.
"""
