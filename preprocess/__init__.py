"""
Data preparation and the attribute classifier.

- ``attributes``: the 20 attributes, CelebA's annotation files and the dataset's label files;
- ``prepare_images``: a folder of faces (e.g. CelebA-HQ) to a dataset folder;
- ``synthetic_faces``, ``make_synthetic_dataset``: the procedural faces of the embedded default;
- ``classifier``: the multi-attribute classifier model ``AttributeClassifier`` and ``load_classifier``
  (this project's checkpoints and the paper's);
- ``encoder_train``: its training and evaluation script (the paper's name).

File formats are described in docs/design.md.
"""
