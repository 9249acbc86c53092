"""
The ADM UNet of Dhariwal & Nichol ("Diffusion Models Beat GANs"), with an
optional attribute embedding for CycleDiff.

Module names, parameter shapes and the computation match openai/
guided-diffusion's UNetModel for the same hyper-parameters, so its
checkpoints load key for key and give the same outputs. Attention runs through
torch.nn.functional.scaled_dot_product_attention.
"""

from abc import abstractmethod

import torch
import torch.nn as nn
import torch.nn.functional as F

from .fp16_util import convert_module_to_f16, convert_module_to_f32
from .nn import (
    avg_pool_nd,
    checkpoint,
    conv_nd,
    linear,
    normalization,
    timestep_embedding,
    zero_module,
)


class TimestepBlock(nn.Module):
    """A module whose forward() takes the [N, E] timestep embedding as a second argument."""

    @abstractmethod
    def forward(self, x, emb):
        """Apply the module to `x` given `emb` timestep embeddings."""


class TimestepEmbedSequential(nn.Sequential, TimestepBlock):
    """A Sequential that passes the timestep embedding to the children that take it."""

    def forward(self, x, emb):
        for layer in self:
            x = layer(x, emb) if isinstance(layer, TimestepBlock) else layer(x)
        return x


class Upsample(nn.Module):
    """
    Nearest-neighbour 2x upsampling, optionally followed by a 3x3 convolution.

    :param channels: channels C of the input.
    :param use_conv: apply a convolution after upsampling.
    :param dims: 1, 2 or 3 spatial dimensions; in 3D only the inner two are upsampled.
    :param out_channels: output channels (default C; needs use_conv to differ).
    Input [N, C, *S] -> output [N, out_channels, *2S].
    """

    def __init__(self, channels, use_conv, dims=2, out_channels=None):
        super().__init__()
        self.channels = channels
        self.out_channels = out_channels or channels
        self.use_conv = use_conv
        self.dims = dims
        if use_conv:
            self.conv = conv_nd(dims, self.channels, self.out_channels, 3, padding=1)

    def forward(self, x):
        if self.dims == 3:
            size = (x.shape[2], x.shape[3] * 2, x.shape[4] * 2)
            x = F.interpolate(x, size, mode="nearest")
        else:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        if self.use_conv:
            x = self.conv(x)
        return x


class Downsample(nn.Module):
    """
    2x downsampling: a strided 3x3 convolution, or average pooling.

    :param channels: channels C of the input.
    :param use_conv: use a strided convolution instead of average pooling.
    :param dims: 1, 2 or 3 spatial dimensions; in 3D only the inner two are downsampled.
    :param out_channels: output channels (default C; needs use_conv to differ).
    Input [N, C, *S] -> output [N, out_channels, *S/2].
    """

    def __init__(self, channels, use_conv, dims=2, out_channels=None):
        super().__init__()
        self.channels = channels
        self.out_channels = out_channels or channels
        self.use_conv = use_conv
        self.dims = dims
        stride = 2 if dims != 3 else (1, 2, 2)
        if use_conv:
            self.op = conv_nd(
                dims, self.channels, self.out_channels, 3, stride=stride, padding=1
            )
        else:
            if self.channels != self.out_channels:
                raise ValueError(
                    "Downsample without a convolution cannot change the channel count "
                    f"({self.channels} -> {self.out_channels})"
                )
            self.op = avg_pool_nd(dims, kernel_size=stride, stride=stride)

    def forward(self, x):
        return self.op(x)


class ResBlock(TimestepBlock):
    """
    A residual block conditioned on the timestep embedding, optionally
    changing the channel count or resolution.

    :param channels: input channels C.
    :param emb_channels: embedding width E.
    :param dropout: dropout rate before the last convolution.
    :param out_channels: output channels (default C).
    :param use_conv: for a channel change, a 3x3 (not 1x1) skip convolution.
    :param use_scale_shift_norm: FiLM conditioning, norm(h) * (1 + scale) + shift,
        instead of adding the embedding.
    :param dims: 1, 2 or 3 spatial dimensions.
    :param use_checkpoint: gradient checkpointing for this block.
    :param up: upsample 2x inside the block.
    :param down: downsample 2x inside the block.
    Forward: x [N, C, *S], emb [N, E] -> [N, out_channels, *S'] (S' = 2S, S/2 or S).
    """

    def __init__(
        self,
        channels,
        emb_channels,
        dropout,
        out_channels=None,
        use_conv=False,
        use_scale_shift_norm=False,
        dims=2,
        use_checkpoint=False,
        up=False,
        down=False,
    ):
        super().__init__()
        self.channels = channels
        self.emb_channels = emb_channels
        self.dropout = dropout
        self.out_channels = out_channels or channels
        self.use_conv = use_conv
        self.use_checkpoint = use_checkpoint
        self.use_scale_shift_norm = use_scale_shift_norm

        self.in_layers = nn.Sequential(
            normalization(channels),
            nn.SiLU(),
            conv_nd(dims, channels, self.out_channels, 3, padding=1),
        )

        self.updown = up or down
        if up:
            self.h_upd = Upsample(channels, False, dims)
            self.x_upd = Upsample(channels, False, dims)
        elif down:
            self.h_upd = Downsample(channels, False, dims)
            self.x_upd = Downsample(channels, False, dims)
        else:
            self.h_upd = self.x_upd = nn.Identity()

        self.emb_layers = nn.Sequential(
            nn.SiLU(),
            linear(
                emb_channels,
                2 * self.out_channels if use_scale_shift_norm else self.out_channels,
            ),
        )
        self.out_layers = nn.Sequential(
            normalization(self.out_channels),
            nn.SiLU(),
            nn.Dropout(p=dropout),
            zero_module(
                conv_nd(dims, self.out_channels, self.out_channels, 3, padding=1)
            ),
        )

        if self.out_channels == channels:
            self.skip_connection = nn.Identity()
        elif use_conv:
            self.skip_connection = conv_nd(
                dims, channels, self.out_channels, 3, padding=1
            )
        else:
            self.skip_connection = conv_nd(dims, channels, self.out_channels, 1)

    def forward(self, x, emb):
        return checkpoint(self._forward, (x, emb), self.use_checkpoint)

    def _forward(self, x, emb):
        if self.updown:
            # Resample between the activation and the convolution, as ADM does.
            in_norm, in_act, in_conv = self.in_layers
            h = in_conv(self.h_upd(in_act(in_norm(x))))
            x = self.x_upd(x)
        else:
            h = self.in_layers(x)
        emb_out = self.emb_layers(emb).to(h.dtype)
        emb_out = emb_out.reshape(*emb_out.shape, *([1] * (h.ndim - 2)))
        if self.use_scale_shift_norm:
            out_norm, *out_rest = self.out_layers
            scale, shift = emb_out.chunk(2, dim=1)
            h = out_norm(h) * (1 + scale) + shift
            for layer in out_rest:
                h = layer(h)
        else:
            h = self.out_layers(h + emb_out)
        return self.skip_connection(x) + h


def _attention(q, k, v):
    """
    Softmax attention per head with scaled_dot_product_attention.

    :param q, k, v: [N, H, ch, T] (channels before positions, as the conv layout gives).
    :return: [N, H * ch, T].
    """
    out = F.scaled_dot_product_attention(
        q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2)
    )
    n, heads, length, ch = out.shape
    return out.transpose(-1, -2).reshape(n, heads * ch, length)


class QKVAttentionLegacy(nn.Module):
    """
    QKV attention over a fused qkv tensor laid out head by head:
    for each head, its q, k and v channels (guided-diffusion's default order).
    """

    def __init__(self, n_heads):
        super().__init__()
        self.n_heads = n_heads

    def forward(self, qkv):
        """
        :param qkv: [N, H * 3 * ch, T] Qs, Ks and Vs.
        :return: [N, H * ch, T] after attention.
        """
        n, width, length = qkv.shape
        ch = width // (3 * self.n_heads)
        q, k, v = qkv.reshape(n, self.n_heads, 3, ch, length).unbind(2)
        return _attention(q, k, v)


class QKVAttention(nn.Module):
    """
    QKV attention over a fused qkv tensor laid out as all Qs, all Ks, all Vs,
    each split into heads (guided-diffusion's use_new_attention_order).
    """

    def __init__(self, n_heads):
        super().__init__()
        self.n_heads = n_heads

    def forward(self, qkv):
        """
        :param qkv: [N, 3 * H * ch, T] Qs, Ks and Vs.
        :return: [N, H * ch, T] after attention.
        """
        n, width, length = qkv.shape
        ch = width // (3 * self.n_heads)
        q, k, v = qkv.reshape(n, 3, self.n_heads, ch, length).unbind(1)
        return _attention(q, k, v)


class AttentionBlock(nn.Module):
    """
    Self-attention between all spatial positions, with a residual connection.

    :param channels: channels C.
    :param num_heads: number of heads, used when num_head_channels is -1.
    :param num_head_channels: if not -1, channels per head (heads = C // it).
    :param use_checkpoint: gradient checkpointing for this block (guided-diffusion
        always checkpoints attention; here it follows the flag, same results).
    :param use_new_attention_order: split qkv before heads (QKVAttention)
        rather than heads before qkv (QKVAttentionLegacy).
    Forward: x [N, C, *S] -> [N, C, *S].
    """

    def __init__(
        self,
        channels,
        num_heads=1,
        num_head_channels=-1,
        use_checkpoint=False,
        use_new_attention_order=False,
    ):
        super().__init__()
        self.channels = channels
        if num_head_channels == -1:
            self.num_heads = num_heads
        else:
            if num_head_channels <= 0 or channels % num_head_channels:
                raise ValueError(
                    f"attention channels {channels} are not divisible by "
                    f"num_head_channels {num_head_channels}"
                )
            self.num_heads = channels // num_head_channels
        if self.num_heads <= 0 or channels % self.num_heads:
            raise ValueError(
                f"attention channels {channels} cannot be split into {self.num_heads} heads"
            )
        self.use_checkpoint = use_checkpoint
        self.norm = normalization(channels)
        self.qkv = conv_nd(1, channels, channels * 3, 1)
        if use_new_attention_order:
            self.attention = QKVAttention(self.num_heads)
        else:
            self.attention = QKVAttentionLegacy(self.num_heads)
        self.proj_out = zero_module(conv_nd(1, channels, channels, 1))
        # True: compute on [N, T, C] tokens (below); False: guided-diffusion's [N, C, T] layout,
        # kept for speed comparisons (same result up to float rounding).
        self.token_layout = True
        self._new_order = use_new_attention_order

    def forward(self, x):
        return checkpoint(self._forward, (x,), self.use_checkpoint)

    def _forward(self, x):
        n, c, *spatial = x.shape
        if not self.token_layout:
            x = x.reshape(n, c, -1)
            h = self.proj_out(self.attention(self.qkv(self.norm(x))))
            return (x + h).reshape(n, c, *spatial)
        # Tokens [N, T, C] (a view of a channels_last input): the 1x1 convolutions become matrix
        # products, and q, k, v get unit-stride channels, which scaled_dot_product_attention's
        # fused CPU kernel needs (strided ones fall back to its slower reference path).
        heads = self.num_heads
        tokens = self.norm(x).flatten(2).transpose(1, 2)
        qkv = F.linear(tokens, self.qkv.weight.squeeze(-1), self.qkv.bias)
        # Channel order of qkv: per head q, k, v (legacy), or all q, all k, all v (new order).
        qkv = qkv.unflatten(2, (3, heads, -1) if self._new_order else (heads, 3, -1))
        part = 2 if self._new_order else 3
        q, k, v = (p.transpose(1, 2) for p in qkv.unbind(part))  # [N, heads, T, ch]
        h = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2)
        h = F.linear(h, self.proj_out.weight.squeeze(-1), self.proj_out.bias)
        out = (x.flatten(2).transpose(1, 2) + h).transpose(1, 2).reshape(n, c, *spatial)
        return out.contiguous() if x.is_contiguous() else out


class UNetModel(nn.Module):
    """
    The full UNet with attention and timestep embedding.

    :param image_size: training resolution (recorded; any size divisible by
        2 ** (len(channel_mult) - 1) runs).
    :param in_channels: channels of the input x.
    :param model_channels: base channel count C.
    :param out_channels: channels of the output (6 for learn_sigma with RGB).
    :param num_res_blocks: residual blocks per resolution.
    :param attention_resolutions: downsample rates ds at which attention is
        used (a collection; 2 means at half resolution).
    :param dropout: dropout rate in the residual blocks.
    :param channel_mult: channel multiplier of each resolution level.
    :param conv_resample: learned convolutions for up/downsampling.
    :param dims: 1, 2 or 3 spatial dimensions.
    :param num_classes: if set, class-conditional on long labels y [N].
    :param use_checkpoint: gradient checkpointing (less memory, more compute).
    :param use_fp16: run the torso in float16 (calls convert_to_fp16()).
    :param num_heads: attention heads (used when num_head_channels is -1).
    :param num_head_channels: if not -1, fixed channels per attention head.
    :param num_heads_upsample: heads in the upsampling path (-1: num_heads).
    :param use_scale_shift_norm: FiLM-like conditioning in the residual blocks.
    :param resblock_updown: residual blocks for up/downsampling.
    :param use_new_attention_order: split qkv before heads.
    :param num_attributes: if set, conditional on a float attribute vector
        y [N, num_attributes] through `attribute_emb`, an MLP added to the
        timestep embedding.
    """

    def __init__(
        self,
        image_size,
        in_channels,
        model_channels,
        out_channels,
        num_res_blocks,
        attention_resolutions,
        dropout=0,
        channel_mult=(1, 2, 4, 8),
        conv_resample=True,
        dims=2,
        num_classes=None,
        use_checkpoint=False,
        use_fp16=False,
        num_heads=1,
        num_head_channels=-1,
        num_heads_upsample=-1,
        use_scale_shift_norm=False,
        resblock_updown=False,
        use_new_attention_order=False,
        num_attributes=None,
    ):
        super().__init__()
        if num_classes is not None and num_attributes is not None:
            raise ValueError("num_classes and num_attributes are exclusive: y is one or the other")
        if not channel_mult:
            raise ValueError("channel_mult must list at least one level")
        if dims not in (1, 2, 3):
            raise ValueError(f"unsupported dimensions: {dims} (expected 1, 2 or 3)")
        if isinstance(attention_resolutions, str):
            raise ValueError(
                f"attention_resolutions must be a collection of downsample rates such as "
                f"(2, 4), not the string {attention_resolutions!r} (script_util converts "
                f"resolutions like '16,8' into rates)"
            )
        if num_heads_upsample == -1:
            num_heads_upsample = num_heads

        self.image_size = image_size
        self.in_channels = in_channels
        self.model_channels = model_channels
        self.out_channels = out_channels
        self.num_res_blocks = num_res_blocks
        self.attention_resolutions = attention_resolutions
        self.dropout = dropout
        self.channel_mult = channel_mult
        self.conv_resample = conv_resample
        self.dims = dims
        self.num_classes = num_classes
        self.num_attributes = num_attributes
        self.use_checkpoint = use_checkpoint
        self.num_heads = num_heads
        self.num_head_channels = num_head_channels
        self.num_heads_upsample = num_heads_upsample

        time_embed_dim = model_channels * 4
        self.time_embed = nn.Sequential(
            linear(model_channels, time_embed_dim),
            nn.SiLU(),
            linear(time_embed_dim, time_embed_dim),
        )
        if num_classes is not None:
            self.label_emb = nn.Embedding(num_classes, time_embed_dim)
        if num_attributes is not None:
            self.attribute_emb = nn.Sequential(
                linear(num_attributes, time_embed_dim),
                nn.SiLU(),
                linear(time_embed_dim, time_embed_dim),
            )

        def res_block(ch_in, ch_out, **kwargs):
            return ResBlock(
                ch_in,
                time_embed_dim,
                dropout,
                out_channels=ch_out,
                dims=dims,
                use_checkpoint=use_checkpoint,
                use_scale_shift_norm=use_scale_shift_norm,
                **kwargs,
            )

        def attention_block(ch, heads):
            return AttentionBlock(
                ch,
                use_checkpoint=use_checkpoint,
                num_heads=heads,
                num_head_channels=num_head_channels,
                use_new_attention_order=use_new_attention_order,
            )

        ch = input_ch = int(channel_mult[0] * model_channels)
        self.input_blocks = nn.ModuleList(
            [TimestepEmbedSequential(conv_nd(dims, in_channels, ch, 3, padding=1))]
        )
        input_block_chans = [ch]
        ds = 1
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers = [res_block(ch, int(mult * model_channels))]
                ch = int(mult * model_channels)
                if ds in attention_resolutions:
                    layers.append(attention_block(ch, num_heads))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                input_block_chans.append(ch)
            if level != len(channel_mult) - 1:
                self.input_blocks.append(
                    TimestepEmbedSequential(
                        res_block(ch, ch, down=True)
                        if resblock_updown
                        else Downsample(ch, conv_resample, dims=dims, out_channels=ch)
                    )
                )
                input_block_chans.append(ch)
                ds *= 2

        self.middle_block = TimestepEmbedSequential(
            res_block(ch, ch),
            attention_block(ch, num_heads),
            res_block(ch, ch),
        )

        self.output_blocks = nn.ModuleList([])
        for level, mult in list(enumerate(channel_mult))[::-1]:
            for i in range(num_res_blocks + 1):
                skip_ch = input_block_chans.pop()
                layers = [res_block(ch + skip_ch, int(model_channels * mult))]
                ch = int(model_channels * mult)
                if ds in attention_resolutions:
                    layers.append(attention_block(ch, num_heads_upsample))
                if level and i == num_res_blocks:
                    layers.append(
                        res_block(ch, ch, up=True)
                        if resblock_updown
                        else Upsample(ch, conv_resample, dims=dims, out_channels=ch)
                    )
                    ds //= 2
                self.output_blocks.append(TimestepEmbedSequential(*layers))

        self.out = nn.Sequential(
            normalization(ch),
            nn.SiLU(),
            zero_module(conv_nd(dims, input_ch, out_channels, 3, padding=1)),
        )

        if use_fp16:
            self.convert_to_fp16()

    @property
    def dtype(self):
        """The dtype the torso (input, middle and output blocks) computes in."""
        return self.input_blocks[0][0].weight.dtype

    def convert_to_fp16(self):
        """Convert the torso's convolutions to float16 (embeddings and the output head stay float32)."""
        self.input_blocks.apply(convert_module_to_f16)
        self.middle_block.apply(convert_module_to_f16)
        self.output_blocks.apply(convert_module_to_f16)

    def convert_to_fp32(self):
        """Convert the torso back to float32, undoing convert_to_fp16()."""
        self.input_blocks.apply(convert_module_to_f32)
        self.middle_block.apply(convert_module_to_f32)
        self.output_blocks.apply(convert_module_to_f32)

    def _check_inputs(self, x, timesteps, y):
        """Raise ValueError naming the problem when the inputs do not fit the model."""
        if x.ndim != self.dims + 2 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"x must have shape [N, {self.in_channels}, ...] with {self.dims} spatial "
                f"dimensions, got {list(x.shape)}"
            )
        factor = 2 ** (len(self.channel_mult) - 1)
        if any(size % factor for size in x.shape[2:]):
            raise ValueError(
                f"x's spatial size {list(x.shape[2:])} must be divisible by {factor} "
                f"({len(self.channel_mult)} resolution levels)"
            )
        n = x.shape[0]
        if timesteps.shape != (n,):
            raise ValueError(
                f"timesteps must have shape [{n}] (one per image), got {list(timesteps.shape)}"
            )
        if self.num_classes is None and self.num_attributes is None:
            if y is not None:
                raise ValueError("this model is unconditional: y must be None")
        elif y is None:
            raise ValueError("this model is conditional: y must be given")
        elif self.num_classes is not None:
            if y.shape != (n,) or y.is_floating_point():
                raise ValueError(
                    f"y must be integer class labels of shape [{n}], "
                    f"got {y.dtype} {list(y.shape)}"
                )
        elif y.shape != (n, self.num_attributes):
            raise ValueError(
                f"y must be an attribute vector of shape [{n}, {self.num_attributes}], "
                f"got {list(y.shape)}"
            )

    def forward(self, x, timesteps, y=None):
        """
        Apply the model to a batch.

        :param x: [N, in_channels, *S] inputs (any memory format, e.g. channels_last).
        :param timesteps: [N] timesteps, long or float.
        :param y: [N, num_attributes] float attributes (0/1) when num_attributes
            is set; [N] long labels when num_classes is set; else None.
        :return: [N, out_channels, *S] outputs, in x's dtype.
        """
        self._check_inputs(x, timesteps, y)
        # The embedding MLPs stay float32 under fp16; a float64 model gets float64 embeddings.
        emb_dtype = self.time_embed[0].weight.dtype
        emb = self.time_embed(timestep_embedding(timesteps, self.model_channels).to(emb_dtype))
        if self.num_classes is not None:
            emb = emb + self.label_emb(y)
        if self.num_attributes is not None:
            emb = emb + self.attribute_emb(y.to(emb_dtype))

        skips = []
        h = x.to(self.dtype)
        for module in self.input_blocks:
            h = module(h, emb)
            skips.append(h)
        h = self.middle_block(h, emb)
        for module in self.output_blocks:
            h = module(torch.cat([h, skips.pop()], dim=1), emb)
        return self.out(h.to(x.dtype))
