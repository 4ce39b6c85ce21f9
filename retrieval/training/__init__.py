"""Training extractors: triplet-loss fine-tuning and denoising autoencoders.

- ``data``: the P x K batches triplet mining needs (labelled sets: :mod:`retrieval.evaluation.labels`).
- ``augment``: the random crops, flips and colour changes of triplet training.
- ``corruptions``: Gaussian noise, salt-and-pepper, JPEG artefacts and blur (a registry).
- ``loop``: what both trainers share: the seed rule, the optimisation step, the epoch loop
  (validate, keep the best, resume).
- ``triplet``: fine-tuning a trunk plus projection head with a triplet margin loss.
- ``autoencoder``: training the denoising autoencoder.

What the trainers write is an extractor checkpoint (:mod:`retrieval.extractors.checkpoint`);
training depends on extractors, never the other way round.
"""
