"""
The attribute table of a dataset folder: ``attributes.pt``, a float tensor
[N, A] whose row i holds the attributes of image i (0 or 1 each). One reader
for the training loop, the classifier's trainer, the editor and the benchmark,
with checks whose messages name the file.
"""

import os

ATTRIBUTES_FILE = "attributes.pt"


def read_attribute_table(data_dir, num_attributes=None, num_images=None, binary=True, expected_by="the reader",
                         missing_hint=None):
    """
    Read and check ``data_dir/attributes.pt``.

    :param num_attributes: when given, the number of columns required.
    :param num_images: when given, the number of rows required (the folder's images).
    :param binary: values must be 0 or 1 (else anything in [0, 1]).
    :param expected_by: who needs num_attributes, for the message ("the classifier").
    :param missing_hint: appended to the message when the file is missing.
    :return: float32 tensor [N, A].
    :raises FileNotFoundError: no such file. ValueError: unreadable, or fails a check.
    """
    import torch  # here, not at the top: scripts check their flags before torch loads

    path = os.path.join(data_dir, ATTRIBUTES_FILE)
    if not os.path.isfile(path):
        shape = f"[N, {num_attributes}]" if num_attributes else "[N, A]"
        raise FileNotFoundError(
            f"{path} not found: {data_dir} has no {ATTRIBUTES_FILE} (float {shape} of 0/1 labels)"
            + (f"; {missing_hint}" if missing_hint else "")
        )
    try:
        table = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for unreadable files
        raise ValueError(f"cannot read {path}: {type(err).__name__}: {err}") from None
    if not isinstance(table, torch.Tensor) or table.dim() != 2:
        shape = list(table.shape) if isinstance(table, torch.Tensor) else type(table).__name__
        raise ValueError(f"{path} must hold a 2-D tensor [N, {num_attributes or 'A'}], got shape {shape}")
    if num_attributes is not None and table.shape[1] != num_attributes:
        raise ValueError(
            f"{path} has shape {list(table.shape)}: {table.shape[1]} attributes per image, "
            f"{expected_by} has {num_attributes}"
        )
    if num_images is not None and table.shape[0] != num_images:
        raise ValueError(f"{path} has {table.shape[0]} rows but {data_dir} has {num_images} images")
    table = table.float()
    if binary and not torch.all((table == 0) | (table == 1)):
        raise ValueError(f"{path}: attribute values must be 0 or 1")
    if not binary and not torch.all((table >= 0) & (table <= 1)):
        raise ValueError(f"{path} must hold values in [0, 1]")
    return table
