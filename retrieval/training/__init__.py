"""Training extractors: triplet-loss fine-tuning and denoising autoencoders.

Modules, each importable on its own:

- ``data``: labelled image sets (a folder of class folders, or a CSV), splits, P x K batches.
- ``augment``: the random crops, flips and colour changes of triplet training.
- ``corruptions``: Gaussian noise, salt-and-pepper, JPEG artefacts and blur.
- ``checkpoint``: the on-disk format (safetensors weights plus a JSON config) and resume state.
- ``loop``: the epoch loop both trainers share (validate, keep the best, resume).
- ``triplet``: fine-tuning a trunk plus projection head with a triplet margin loss.
- ``autoencoder``: training the denoising autoencoder.
- ``evaluate``: retrieval quality of an index on labelled images (``retrieve eval``).

Nothing is imported here on purpose: the extractors read checkpoints through
``retrieval.training.checkpoint``, and the trainers build extractors' networks, so an
eager import in this file would make the two packages import each other.
"""
