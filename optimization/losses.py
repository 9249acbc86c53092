"""The loss terms of CycleDiff's guidance, each returning one value per sample ([N]).

Images are float tensors [N, 3, H, W] in [-1, 1]; attribute vectors are float [N, A] of 0/1.
The weights (lambdas) are applied by `optimization.guidance`, not here.
"""
import os
import warnings

import torch


def attribute_loss(probs, target, mask, eps=1e-6):
    """BCE between classifier probabilities and the query, summed over the masked attributes.

    :param probs: [N, A] classifier probabilities.
    :param target: [N, A] 0/1 query attributes.
    :param mask: [N, A] 1 where the attribute counts (the paper counts only the edited ones).
    :return: [N].
    """
    # Written out rather than F.binary_cross_entropy, which raises on NaN: a NaN here must reach
    # the guidance's finite check and skip the step instead.
    p = probs.clamp(eps, 1 - eps)
    bce = -(target * p.log() + (1 - target) * (1 - p).log())
    return (bce * mask).sum(dim=1)


def mse_per_sample(a, b):
    """Mean squared error over C, H, W: [N]."""
    return (a - b).pow(2).flatten(1).mean(dim=1)


def range_loss(x):
    """Squared distance of pixels outside [-1, 1]: [N]."""
    return (x - x.clamp(-1, 1)).pow(2).flatten(1).mean(dim=1)


class LPIPSLoss(torch.nn.Module):
    """LPIPS distance from the `lpips` package, built only from weights already on disk."""

    def __init__(self, net):
        super().__init__()
        self.net = net.eval().requires_grad_(False)

    def forward(self, x, y):
        return self.net(x, y, normalize=False).flatten()


def load_lpips(device="cpu"):
    """Return an `LPIPSLoss` (AlexNet), or None with a message when the package or its weights are missing.

    The `lpips` package ships its linear layers; the AlexNet trunk comes from torchvision's cache
    (`$TORCH_HOME/hub/checkpoints/alexnet-owt-7be5be79.pth`). Nothing is downloaded.
    """
    try:
        import lpips
    except ImportError:
        print("lpips_sim_lambda set to 0: the `lpips` package is not installed (pip install lpips).")
        return None
    hub = os.path.join(torch.hub.get_dir(), "checkpoints", "alexnet-owt-7be5be79.pth")
    if not os.path.isfile(hub):
        print(f"lpips_sim_lambda set to 0: AlexNet weights not found at {hub}.")
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = lpips.LPIPS(net="alex", verbose=False)
    return LPIPSLoss(net).to(device)
