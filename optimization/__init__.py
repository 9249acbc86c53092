"""
The CycleDiff editing method. Despite the folder's name (kept from the paper's code) there is no
optimiser here: an edit is guided sampling, not an optimisation of weights or latents.

- ``editor``: the engine — the inversions, ``AttributeEditor``;
- ``options``: ``EditOptions``, the loss weights and their choices, without torch (the command line
  checks its flags with them before torch is imported);
- ``presets``: the named option sets (``fast``, ``paper``, ``paper_inversion``);
- ``guidance``: the guidance loss (attribute, cycle-consistency, range, LPIPS, identity terms) and the
  ``cond_fn`` the samplers take; ``losses``, ``id_loss``: its terms;
- ``region``: the optional edit region;
- ``attribute_editor``, ``arguments``: the command line (``python main.py``);
- ``queries``, ``image_io``, ``visualization``: attribute vectors, image files and dataset items, grids;
- ``evaluation``, ``metrics``, ``sample_metrics``: the benchmark's measures.

The method itself is described in docs/design.md.
"""
