"""
Building models and diffusions from flat hyper-parameter dicts, as in
openai/guided-diffusion, plus reading a checkpoint back with the JSON of
hyper-parameters that training wrote beside it.
"""

import argparse
import json
import os

from .atomic import atomic_write

# The model code (torch) is imported by the functions that build models: the defaults, the flag
# helpers and the config readers stay torch-free, so scripts check their flags before torch loads.

NUM_CLASSES = 1000
MODEL_CONFIG_FILE = "model_config.json"

# Default channel multipliers per resolution (guided-diffusion's, plus 32 px).
CHANNEL_MULTS = {
    512: (0.5, 1, 1, 2, 2, 4, 4),
    256: (1, 1, 2, 2, 4, 4),
    128: (1, 1, 2, 3, 4),
    64: (1, 2, 3, 4),
    32: (1, 2, 2, 2),
}

# Options that change how a model runs, not what its weights mean.
RUNTIME_OPTIONS = ("use_checkpoint", "use_fp16", "timestep_respacing")


def diffusion_defaults():
    """The paper's diffusion settings: 1000 linear-schedule steps, eps prediction, fixed variances.

    predict_v=True makes the model predict v = sqrt(alphabar) eps - sqrt(1 - alphabar) x_0 instead
    (Salimans & Ho 2022): off by default so that eps-prediction checkpoints load unchanged.
    """
    return dict(
        learn_sigma=False,
        diffusion_steps=1000,
        noise_schedule="linear",
        timestep_respacing="",
        use_kl=False,
        predict_xstart=False,
        predict_v=False,
        rescale_timesteps=False,
        rescale_learned_sigmas=False,
        snr_gamma=None,
    )


def model_and_diffusion_defaults():
    """The paper's model (256 px, attribute-conditional ADM) and diffusion settings."""
    res = dict(
        image_size=256,
        num_channels=128,
        num_res_blocks=2,
        num_heads=4,
        num_heads_upsample=-1,
        num_head_channels=-1,
        attention_resolutions="16,8",
        channel_mult="",
        dropout=0.0,
        num_attributes=20,
        class_cond=False,
        use_checkpoint=False,
        use_scale_shift_norm=True,
        resblock_updown=False,
        use_fp16=False,
        use_new_attention_order=False,
    )
    res.update(diffusion_defaults())
    return res


def create_model_and_diffusion(
    image_size,
    class_cond,
    learn_sigma,
    num_channels,
    num_res_blocks,
    channel_mult,
    num_heads,
    num_head_channels,
    num_heads_upsample,
    attention_resolutions,
    dropout,
    diffusion_steps,
    noise_schedule,
    timestep_respacing,
    use_kl,
    predict_xstart,
    rescale_timesteps,
    rescale_learned_sigmas,
    use_checkpoint,
    use_scale_shift_norm,
    resblock_updown,
    use_fp16,
    use_new_attention_order,
    num_attributes,
    snr_gamma,
    predict_v=False,
):
    """(UNetModel, SpacedDiffusion) for the keys of model_and_diffusion_defaults()."""
    model = create_model(
        image_size,
        num_channels,
        num_res_blocks,
        channel_mult=channel_mult,
        learn_sigma=learn_sigma,
        class_cond=class_cond,
        use_checkpoint=use_checkpoint,
        attention_resolutions=attention_resolutions,
        num_heads=num_heads,
        num_head_channels=num_head_channels,
        num_heads_upsample=num_heads_upsample,
        use_scale_shift_norm=use_scale_shift_norm,
        dropout=dropout,
        resblock_updown=resblock_updown,
        use_fp16=use_fp16,
        use_new_attention_order=use_new_attention_order,
        num_attributes=num_attributes,
    )
    diffusion = create_gaussian_diffusion(
        steps=diffusion_steps,
        learn_sigma=learn_sigma,
        noise_schedule=noise_schedule,
        use_kl=use_kl,
        predict_xstart=predict_xstart,
        predict_v=predict_v,
        rescale_timesteps=rescale_timesteps,
        rescale_learned_sigmas=rescale_learned_sigmas,
        timestep_respacing=timestep_respacing,
        snr_gamma=snr_gamma,
    )
    return model, diffusion


def parse_channel_mult(channel_mult, image_size):
    """Tuple of multipliers from "1,2,2,2" (or the default for image_size when empty)."""
    if channel_mult:
        try:
            return tuple(float(m) if "." in m else int(m) for m in channel_mult.split(","))
        except ValueError:
            raise ValueError(f"channel_mult must be comma-separated numbers, got {channel_mult!r}") from None
    if image_size not in CHANNEL_MULTS:
        raise ValueError(
            f"no default channel_mult for image_size {image_size} "
            f"(defaults exist for {sorted(CHANNEL_MULTS)}): pass --channel_mult"
        )
    return CHANNEL_MULTS[image_size]


def parse_attention_resolutions(attention_resolutions, image_size):
    """Downsample rates for "16,8" (resolutions in pixels) at this image_size."""
    rates = []
    for res in filter(None, str(attention_resolutions).split(",")):
        try:
            res = int(res)
        except ValueError:
            raise ValueError(
                f"attention_resolutions must be comma-separated integers, got {attention_resolutions!r}"
            ) from None
        if res <= 0 or image_size % res:
            raise ValueError(f"attention resolution {res} does not divide image_size {image_size}")
        rates.append(image_size // res)
    return tuple(rates)


def create_model(
    image_size,
    num_channels,
    num_res_blocks,
    channel_mult="",
    learn_sigma=False,
    class_cond=False,
    use_checkpoint=False,
    attention_resolutions="16",
    num_heads=1,
    num_head_channels=-1,
    num_heads_upsample=-1,
    use_scale_shift_norm=False,
    dropout=0,
    resblock_updown=False,
    use_fp16=False,
    use_new_attention_order=False,
    num_attributes=None,
):
    """
    The UNet. `num_attributes` > 0 makes it attribute-conditional (y float
    [N, num_attributes]); `class_cond` class-conditional (y long [N]); the two
    are exclusive.
    """
    if class_cond and num_attributes:
        raise ValueError("class_cond and num_attributes are exclusive: set --num_attributes 0 for class_cond")
    from .unet import UNetModel

    return UNetModel(
        image_size=image_size,
        in_channels=3,
        model_channels=num_channels,
        out_channels=(3 if not learn_sigma else 6),
        num_res_blocks=num_res_blocks,
        attention_resolutions=parse_attention_resolutions(attention_resolutions, image_size),
        dropout=dropout,
        channel_mult=parse_channel_mult(channel_mult, image_size),
        num_classes=(NUM_CLASSES if class_cond else None),
        use_checkpoint=use_checkpoint,
        use_fp16=use_fp16,
        num_heads=num_heads,
        num_head_channels=num_head_channels,
        num_heads_upsample=num_heads_upsample,
        use_scale_shift_norm=use_scale_shift_norm,
        resblock_updown=resblock_updown,
        use_new_attention_order=use_new_attention_order,
        num_attributes=num_attributes or None,
    )


def create_gaussian_diffusion(
    *,
    steps=1000,
    learn_sigma=False,
    sigma_small=False,
    noise_schedule="linear",
    use_kl=False,
    predict_xstart=False,
    predict_v=False,
    rescale_timesteps=False,
    rescale_learned_sigmas=False,
    timestep_respacing="",
    snr_gamma=None,
):
    """A SpacedDiffusion; `timestep_respacing` "" keeps all `steps` steps."""
    from . import gaussian_diffusion as gd
    from .respace import SpacedDiffusion, space_timesteps

    if predict_xstart and predict_v:
        raise ValueError("predict_xstart and predict_v exclude each other: the model predicts one target")
    betas = gd.get_named_beta_schedule(noise_schedule, steps)
    if use_kl:
        loss_type = gd.LossType.RESCALED_KL
    elif rescale_learned_sigmas:
        loss_type = gd.LossType.RESCALED_MSE
    else:
        loss_type = gd.LossType.MSE
    if not timestep_respacing:
        timestep_respacing = [steps]
    if learn_sigma:
        model_var_type = gd.ModelVarType.LEARNED_RANGE
    else:
        model_var_type = gd.ModelVarType.FIXED_SMALL if sigma_small else gd.ModelVarType.FIXED_LARGE
    return SpacedDiffusion(
        use_timesteps=space_timesteps(steps, timestep_respacing),
        betas=betas,
        model_mean_type=(
            gd.ModelMeanType.START_X
            if predict_xstart
            else gd.ModelMeanType.VELOCITY
            if predict_v
            else gd.ModelMeanType.EPSILON
        ),
        model_var_type=model_var_type,
        loss_type=loss_type,
        rescale_timesteps=rescale_timesteps,
        snr_gamma=snr_gamma,
    )


def diffusion_from_config(config, timestep_respacing=None):
    """The SpacedDiffusion a model/diffusion hyper-parameter dict describes (e.g. a checkpoint's
    load_model_config), respaced to `timestep_respacing` when given ('' keeps every step)."""
    keys = dict(
        steps="diffusion_steps", learn_sigma="learn_sigma", noise_schedule="noise_schedule", use_kl="use_kl",
        predict_xstart="predict_xstart", predict_v="predict_v", rescale_timesteps="rescale_timesteps",
        rescale_learned_sigmas="rescale_learned_sigmas", snr_gamma="snr_gamma",
        timestep_respacing="timestep_respacing",
    )
    defaults = diffusion_defaults()
    kwargs = {arg: config.get(key, defaults.get(key)) for arg, key in keys.items()}
    kwargs["steps"] = config["diffusion_steps"]
    if timestep_respacing is not None:
        kwargs["timestep_respacing"] = timestep_respacing
    return create_gaussian_diffusion(**kwargs)


def add_dict_to_argparser(parser, default_dict, help=None):
    """
    One --flag per key; the type follows the default (bool via str2bool,
    None as an optional float). `help` maps keys to help texts.
    """
    help = help or {}
    for k, v in default_dict.items():
        if v is None:
            v_type, metavar = optional_float, "FLOAT|none"
        elif isinstance(v, bool):
            v_type, metavar = str2bool, "BOOL"
        else:
            v_type, metavar = type(v), type(v).__name__.upper()
        text = f"{help[k]} (default: %(default)s)" if k in help else "default: %(default)s"
        parser.add_argument(f"--{k}", default=v, type=v_type, metavar=metavar, help=text)


def args_to_dict(args, keys):
    return {k: getattr(args, k) for k in keys}


def str2bool(v):
    """argparse type for booleans: yes/no, true/false, t/f, y/n, 1/0."""
    if isinstance(v, bool):
        return v
    if v.lower() in ("yes", "true", "t", "y", "1"):
        return True
    if v.lower() in ("no", "false", "f", "n", "0"):
        return False
    raise argparse.ArgumentTypeError(f"boolean value expected, got {v!r}")


def optional_float(v):
    """argparse type for an optional number: "none" or "" mean None."""
    if v is None or v.lower() in ("", "none"):
        return None
    try:
        return float(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"number or 'none' expected, got {v!r}") from None


def save_model_config(config, path):
    """Write the hyper-parameter dict as JSON, atomically."""
    atomic_write(path, json.dumps(config, indent=2, sort_keys=True) + "\n")


def model_config_path(checkpoint_path):
    """The JSON describing a checkpoint: <stem>.json beside it, else model_config.json in its folder."""
    stem_json = os.path.splitext(checkpoint_path)[0] + ".json"
    if os.path.isfile(stem_json):
        return stem_json
    folder_json = os.path.join(os.path.dirname(checkpoint_path), MODEL_CONFIG_FILE)
    if os.path.isfile(folder_json):
        return folder_json
    raise FileNotFoundError(
        f"no hyper-parameter file for {checkpoint_path}: expected {stem_json} or {folder_json}"
    )


def load_model_config(checkpoint_path):
    """
    The model/diffusion hyper-parameters recorded for a checkpoint, as a dict
    with every key of model_and_diffusion_defaults() (keys the JSON lacks take
    their defaults, so older files keep working). Unknown keys are an error.
    """
    path = model_config_path(checkpoint_path)
    try:
        with open(path) as f:
            recorded = json.load(f)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from exc
    defaults = model_and_diffusion_defaults()
    unknown = sorted(set(recorded) - set(defaults))
    if unknown:
        raise ValueError(f"{path} has unknown hyper-parameters: {', '.join(unknown)}")
    return {**defaults, **recorded}


def config_differences(a, b, ignore=RUNTIME_OPTIONS):
    """Keys (outside `ignore`) whose values differ between two hyper-parameter dicts."""
    return sorted(k for k in set(a) | set(b) if k not in ignore and a.get(k) != b.get(k))


def check_state_dict(model, state_dict, source):
    """
    Raise ValueError naming the first differences when `state_dict` does not
    fit `model` (missing/unexpected keys, other shapes): a checkpoint from
    another configuration.
    """
    if not isinstance(state_dict, dict):
        raise ValueError(f"{source} does not hold a state dict")
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    reshaped = [
        f"{k} {list(state_dict[k].shape)} vs {list(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("other shape", reshaped)):
        if items:
            problems.append(
                f"{label}: {', '.join(items[:3])}" + (f" (+{len(items) - 3} more)" if len(items) > 3 else "")
            )
    if problems:
        raise ValueError(f"{source} does not match the model configuration ({'; '.join(problems)})")


def load_diffusion_model(checkpoint_path, device="cpu", timestep_respacing=None):
    """
    Build the model and diffusion a checkpoint was trained with and load its weights.

    :param checkpoint_path: modelNNNNNN.pt / ema_R_NNNNNN.pt (or any state dict
        with a JSON per model_config_path()).
    :param device: where the model goes; float16 is used only on CUDA.
    :param timestep_respacing: overrides the recorded respacing (e.g. "ddim25").
    :return: (model in eval mode, diffusion, config dict).
    """
    from . import dist_util

    if not os.path.isfile(checkpoint_path):
        raise FileNotFoundError(f"checkpoint not found: {checkpoint_path}")
    config = load_model_config(checkpoint_path)
    if timestep_respacing is not None:
        config["timestep_respacing"] = timestep_respacing
    use_fp16 = config["use_fp16"] and str(device).startswith("cuda")
    model, diffusion = create_model_and_diffusion(**{**config, "use_fp16": False})
    state_dict = dist_util.load_state_dict(checkpoint_path, map_location="cpu")
    check_state_dict(model, state_dict, checkpoint_path)
    model.load_state_dict(state_dict)
    if use_fp16:
        model.convert_to_fp16()
    return model.to(device).eval(), diffusion, config
