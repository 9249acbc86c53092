"""Per-image edit metrics. Images are [N, 3, H, W] in [-1, 1]; errors are on the [0, 1] scale."""
import torch


def _to_unit(x):
    return (x.double() + 1) / 2


def l1(a, b, mask=None):
    """Mean absolute error per image [N]; with `mask` ([N or 1, H, W] bool), only over its pixels."""
    diff = (_to_unit(a) - _to_unit(b)).abs().mean(dim=1)  # [N, H, W]
    if mask is None:
        return diff.flatten(1).mean(dim=1)
    mask = torch.as_tensor(mask, device=diff.device).expand_as(diff).double()
    return (diff * mask).flatten(1).sum(dim=1) / mask.flatten(1).sum(dim=1).clamp(min=1)


def psnr(a, b, max_db=100.0):
    """Peak signal-to-noise ratio per image [N] in dB (identical images give `max_db`)."""
    mse = (_to_unit(a) - _to_unit(b)).pow(2).flatten(1).mean(dim=1)
    return (10 * torch.log10(1.0 / mse.clamp(min=10 ** (-max_db / 10)))).float()


def attribute_agreement(probs, target, threshold=0.5):
    """[N, A] bool: does thresholded `probs` equal the 0/1 `target`?"""
    return (probs > threshold) == (target > 0.5)


def edit_success(probs, a_q, edit_mask):
    """[N] bool: every edited attribute reads as the query value."""
    ok = attribute_agreement(probs, a_q) | ~edit_mask.bool()
    return ok.all(dim=1)


def preservation(probs_after, probs_before, edit_mask):
    """[N] fraction of the non-edited attributes whose reading did not change."""
    same = (probs_after > 0.5) == (probs_before > 0.5)
    keep = ~edit_mask.bool()
    return (same & keep).sum(dim=1).float() / keep.sum(dim=1).clamp(min=1).float()
