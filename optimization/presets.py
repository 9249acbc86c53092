"""The editor's presets: named sets of `optimization.editor.EditOptions` values (flat option names).

`fast` is the default and equals a bare `EditOptions()`. How its values were chosen, with the
measurements: docs/development.md.
"""

# Few respaced DDPM steps from the exact edit-friendly inversion, the step-by-step cycle against
# the inversion latent, a capped guidance step (its gradient not taken through the UNet) and the
# classifier-free contrast, inside the region the model infers for the edit (elsewhere the input's
# own trajectory): seconds on a CPU.
FAST = dict(
    sampler="ddpm",
    timestep_respacing="25",
    edit_strength=0.56,
    skip_timesteps=None,
    inversion="ddpm_noise",
    inversion_fixed_point=0,
    blend_x0=True,
    cycle_schema="step_by_step",
    cycle_target="inversion",
    attribute_guidance_lambda=10.0,
    cycle_reconstruct_lambda=1000.0,
    range_lambda=50.0,
    lpips_sim_lambda=0.0,
    id_lambda=0.0,
    preserve_lambda=10.0,
    guidance_max_step=0.02,
    cfg_scale=2.0,
    cycle_noise="fixed",
    step_by_step_renoise="forward_step",
    guide_reconstructions=False,
    guidance_gradient="skip_unet",
    final_output="sample",
    weight_resolution=0,
    region="inferred",
    region_threshold=0.3,
    region_attribute_thresholds="Male=0.15,Young=0.15",
    region_levels="0.3,0.5",
    region_blur=1.0,
)

# This repository's reading of the method: a full DDIM inversion under the reference attributes,
# then 1000 guided DDPM steps on the whole image, step-to-origin, the paper's weights as given.
PAPER_INVERSION = dict(
    FAST,
    region="none",
    timestep_respacing="",
    edit_strength=1.0,
    inversion="ddim",
    cycle_schema="step_to_origin",
    cycle_target="noised_origin",
    attribute_guidance_lambda=50.0,
    lpips_sim_lambda=750.0,
    id_lambda=500.0,
    preserve_lambda=0.0,
    guidance_max_step=0.0,
    cfg_scale=1.0,
    guidance_gradient="through_unet",
)

# What the paper's released code runs: no inversion (the clean input is the start latent at the
# noisiest level), 1000 guided DDPM steps, fresh noise at every re-noising of the cycle term, its
# step-by-step variant, reconstructions guided too, the last x0 prediction returned; the paper's
# weights as given. Translating them from 256 px to the model's side (--weight_resolution 256:
# cycle 1000 -> 62.5 at 64 px) kept the same per-pixel gradient but lost the person: on 14 held-out
# edits at 100 steps, 16.6 dB to the counterfactual and 16.3 dB reconstructions against 20.4 and
# 20.7 dB as given (docs/paper_procedure.md, docs/results/paper_ablation_100.json).
PAPER = dict(
    PAPER_INVERSION,
    inversion="input",
    cycle_noise="fresh",
    step_by_step_renoise="q_sample_prev",
    guide_reconstructions=True,
    final_output="pred_xstart",
    weight_resolution=0,
)

PRESETS = {"fast": FAST, "paper": PAPER, "paper_inversion": PAPER_INVERSION}
DEFAULT_PRESET = "fast"
