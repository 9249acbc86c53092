"""
Helpers to train with 16-bit precision.

Two modes, as in guided-diffusion plus a bfloat16 one:
- fp16: the UNet torso's convolutions hold float16 weights; the optimiser
  steps float32 "master" copies; the loss is scaled by 2**lg_loss_scale so
  small float16 gradients do not underflow, and the scale adapts (down on
  overflow, slowly up otherwise).
- bf16: the model stays float32 and its forward runs under
  torch.autocast(dtype=bfloat16); bfloat16 has float32's exponent range, so
  no loss scaling is needed.
"""

import math

import torch
import torch.nn as nn

INITIAL_LOG_LOSS_SCALE = 20.0


def convert_module_to_f16(module):
    """Convert a convolution's parameters to float16 (other modules untouched)."""
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        module.weight.data = module.weight.data.half()
        if module.bias is not None:
            module.bias.data = module.bias.data.half()


def convert_module_to_f32(module):
    """Convert a convolution's parameters to float32, undoing convert_module_to_f16()."""
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        module.weight.data = module.weight.data.float()
        if module.bias is not None:
            module.bias.data = module.bias.data.float()


def get_param_groups_and_shapes(named_model_params):
    """
    Split named parameters into the two groups fp16 training flattens into
    one master tensor each: scalars/vectors (flattened to [K]) and matrices
    and kernels (flattened to [1, K]), so weight decay and such can still tell
    them apart.

    :return: [(list of (name, param), shape), (list of (name, param), shape)].
    """
    named_model_params = list(named_model_params)
    vectors = [(n, p) for n, p in named_model_params if p.ndim <= 1]
    matrices = [(n, p) for n, p in named_model_params if p.ndim > 1]
    return [(vectors, (-1,)), (matrices, (1, -1))]


def flatten_params(tensors):
    """Concatenate tensors into one flat float32 tensor."""
    return torch.cat([t.detach().float().reshape(-1) for t in tensors])


def unflatten_params(flat, like):
    """Split a flat tensor into views shaped like the tensors of `like`."""
    pieces = torch.split(flat.reshape(-1), [t.numel() for t in like])
    return [piece.view(t.shape) for piece, t in zip(pieces, like)]


def make_master_params(param_groups_and_shapes):
    """One float32 master Parameter per group, holding the group's values."""
    return [
        nn.Parameter(flatten_params([p for _, p in group]).view(shape))
        for group, shape in param_groups_and_shapes
    ]


def model_grads_to_master_grads(param_groups_and_shapes, master_params):
    """Copy the model's gradients (zeros where None) into the master params' .grad."""
    for master, (group, shape) in zip(master_params, param_groups_and_shapes):
        grads = [
            p.grad if p.grad is not None else torch.zeros_like(p) for _, p in group
        ]
        master.grad = flatten_params(grads).view(shape)


def master_params_to_model_params(param_groups_and_shapes, master_params):
    """Copy the master values back into the (possibly float16) model params."""
    with torch.no_grad():
        for master, (group, _) in zip(master_params, param_groups_and_shapes):
            params = [p for _, p in group]
            for param, value in zip(params, unflatten_params(master, params)):
                param.copy_(value)


class MixedPrecisionTrainer:
    """
    Owns the backward pass and the optimiser step for fp32, fp16 or bf16
    training, as guided-diffusion's class of the same name.

    Usage per step:
        trainer.zero_grad()
        with trainer.autocast():
            loss = ...
        trainer.backward(loss)
        took_step = trainer.optimize(opt)   # False: fp16 overflow, step skipped

    The optimiser must be built on `trainer.master_params`.

    :param model: a module with convert_to_fp16() (for use_fp16).
    :param use_fp16: float16 torso weights with dynamic loss scaling.
    :param use_bf16: bfloat16 autocast forward, float32 weights.
    :param fp16_scale_growth: lg_loss_scale increase after each good step.
    :param initial_lg_loss_scale: starting log2 of the loss scale.
    :param log_fn: optional callable(key, value) for per-step statistics
        (e.g. logger.logkv_mean): grad_norm, param_norm, and in fp16 mode
        lg_loss_scale and fp16_overflow (1 for a skipped step, else 0).
    """

    def __init__(
        self,
        *,
        model,
        use_fp16=False,
        use_bf16=False,
        fp16_scale_growth=1e-3,
        initial_lg_loss_scale=INITIAL_LOG_LOSS_SCALE,
        log_fn=None,
    ):
        if use_fp16 and use_bf16:
            raise ValueError("use_fp16 and use_bf16 are exclusive: choose one")
        self.model = model
        self.use_fp16 = use_fp16
        self.use_bf16 = use_bf16
        self.fp16_scale_growth = fp16_scale_growth
        self.lg_loss_scale = initial_lg_loss_scale
        self.log_fn = log_fn

        self.model_params = list(model.parameters())
        self.master_params = self.model_params
        self.param_groups_and_shapes = None
        if use_fp16:
            self.param_groups_and_shapes = get_param_groups_and_shapes(
                model.named_parameters()
            )
            self.master_params = make_master_params(self.param_groups_and_shapes)
            model.convert_to_fp16()

    def autocast(self):
        """Context manager for the forward pass: bfloat16 autocast in bf16 mode, else a no-op."""
        device_type = self.model_params[0].device.type
        return torch.autocast(
            device_type=device_type, dtype=torch.bfloat16, enabled=self.use_bf16
        )

    def zero_grad(self):
        for param in self.model_params:
            param.grad = None

    def backward(self, loss):
        if self.use_fp16:
            (loss * 2**self.lg_loss_scale).backward()
        else:
            loss.backward()

    def optimize(self, opt):
        """Step `opt`; returns False when an fp16 overflow made it skip the step."""
        if self.use_fp16:
            return self._optimize_fp16(opt)
        self._log_norms(*self._compute_norms())
        opt.step()
        return True

    def _optimize_fp16(self, opt):
        self._log("lg_loss_scale", self.lg_loss_scale)
        model_grads_to_master_grads(self.param_groups_and_shapes, self.master_params)
        grad_norm, param_norm = self._compute_norms(grad_scale=2**self.lg_loss_scale)
        if not math.isfinite(grad_norm):
            self.lg_loss_scale -= 1
            self._log("fp16_overflow", 1.0)
            for master in self.master_params:
                master.grad = None
            return False
        self._log("fp16_overflow", 0.0)
        self._log_norms(grad_norm, param_norm)
        for master in self.master_params:
            master.grad.mul_(1.0 / 2**self.lg_loss_scale)
        opt.step()
        for master in self.master_params:
            master.grad = None
        master_params_to_model_params(self.param_groups_and_shapes, self.master_params)
        self.lg_loss_scale += self.fp16_scale_growth
        return True

    def _compute_norms(self, grad_scale=1.0):
        """L2 norms (floats) of all gradients (divided by grad_scale) and all master params."""
        with torch.no_grad():
            params = list(self.master_params)
            grads = [p.grad for p in params if p.grad is not None]
            param_norm = torch.linalg.vector_norm(
                torch.stack([torch.linalg.vector_norm(p.float()) for p in params])
            )
            grad_norm = (
                torch.linalg.vector_norm(
                    torch.stack([torch.linalg.vector_norm(g.float()) for g in grads])
                )
                if grads
                else torch.zeros(())
            )
        return grad_norm.item() / grad_scale, param_norm.item()

    def _log(self, key, value):
        if self.log_fn is not None:
            self.log_fn(key, value)

    def _log_norms(self, grad_norm, param_norm):
        self._log("grad_norm", grad_norm)
        self._log("param_norm", param_norm)

    def master_params_to_state_dict(self, master_params):
        """
        The model's state dict with float32 values taken from `master_params`
        (the trainer's own or an EMA copy of them).
        """
        state_dict = self.model.state_dict()
        if self.use_fp16:
            for master, (group, _) in zip(master_params, self.param_groups_and_shapes):
                params = [p for _, p in group]
                for (name, _), value in zip(group, unflatten_params(master, params)):
                    state_dict[name] = value
        else:
            for (name, _), value in zip(self.model.named_parameters(), master_params):
                state_dict[name] = value
        return state_dict

    def state_dict_to_master_params(self, state_dict):
        """Master-parameter list (layout of self.master_params) holding a state dict's values."""
        named = [(name, state_dict[name]) for name, _ in self.model.named_parameters()]
        if self.use_fp16:
            return make_master_params(get_param_groups_and_shapes(named))
        return [value for _, value in named]
