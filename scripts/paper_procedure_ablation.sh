#!/usr/bin/env bash
# The paper's procedure (no inversion: the input is the start latent, 1000 guided DDPM steps) as an
# ablation on the shipped models: the cycle weight swept (the paper's 1000 as given, the 62.5 the
# 256 -> 64 px translation gives, and larger), the attribute weight beside it, the identity term on
# and off, the cycle term step-to-origin, step-by-step and off. 14 edits (one held-out identity of
# seed 1000 per editable attribute and direction) and 4 reconstructions per configuration, on a
# respaced STEPS-step chain. Methods run in the order listed, so a partial run (rerun to continue)
# has whole configurations.
#
#   bash scripts/paper_procedure_ablation.sh OUT_DIR [STEPS] [NPROC]
#   SEED=1003 PER_DIRECTION=2 RECONSTRUCTIONS=0 bash scripts/paper_procedure_ablation.sh ...  # another seed
#   ATTRIBUTES=9 RECONSTRUCTIONS=0 ... 1000                    # two glasses edits on the full chain
#
# OUT_DIR/edits and OUT_DIR/reconstructions are evaluate_edits.py output folders (results.md,
# results.csv, grids). Every configuration keeps the paper preset's other settings.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: paper_procedure_ablation.sh OUT_DIR [STEPS] [NPROC]}
steps=${2:-100}
nproc=${3:-2}

# weight_resolution=0: the weights as the paper gives them for 256 px (no translation to 64 px).
untranslated="weight_resolution=0"
VARIANTS="s2o_translated=cyclediff_s2o_paper:weight_resolution=256"
VARIANTS+=";s2o_w1000=cyclediff_s2o_paper:$untranslated"
VARIANTS+=";s2o_w1000_no_id=cyclediff_s2o_paper:$untranslated,id_lambda=0"
VARIANTS+=";s2o_w1000_id2000=cyclediff_s2o_paper:$untranslated,id_lambda=2000"
VARIANTS+=";s2o_w4000=cyclediff_s2o_paper:$untranslated,cycle_reconstruct_lambda=4000"
VARIANTS+=";s2o_w16000=cyclediff_s2o_paper:$untranslated,cycle_reconstruct_lambda=16000"
VARIANTS+=";s2o_w64000=cyclediff_s2o_paper:$untranslated,cycle_reconstruct_lambda=64000"
VARIANTS+=";s2o_w16000_attr200=cyclediff_s2o_paper:$untranslated,cycle_reconstruct_lambda=16000,attribute_guidance_lambda=200"
VARIANTS+=";s2o_w16000_no_id=cyclediff_s2o_paper:$untranslated,cycle_reconstruct_lambda=16000,id_lambda=0"
VARIANTS+=";s2o_w16000_id2000=cyclediff_s2o_paper:$untranslated,cycle_reconstruct_lambda=16000,id_lambda=2000"
VARIANTS+=";sbs_w16000=cyclediff_sbs_paper:$untranslated,cycle_reconstruct_lambda=16000"
VARIANTS+=";no_cycle=cyclediff_s2o_paper:$untranslated,cycle_schema=none,cycle_reconstruct_lambda=0"
VARIANTS+=";no_cycle_no_id=cyclediff_s2o_paper:$untranslated,cycle_schema=none,cycle_reconstruct_lambda=0,id_lambda=0"
# The identity term (id_lambda) acts where checkpoints/identity.pt (or --identity_net) is on disk.
# Most telling first: the preset with and without its identity term, the cycle term off, the sweep.
# METHODS=... (a comma list of these names) runs a subset.
METHODS=${METHODS:-s2o_w1000,s2o_w1000_no_id,no_cycle,s2o_w16000,s2o_w16000_no_id,s2o_translated,s2o_w4000,s2o_w64000,s2o_w16000_attr200,sbs_w16000}

SEED=${SEED:-1000}                    # held-out identities of this seed
PER_DIRECTION=${PER_DIRECTION:-1}     # identities per editable attribute and direction
ATTRIBUTES=${ATTRIBUTES:-}            # '' = every editable attribute
RECONSTRUCTIONS=${RECONSTRUCTIONS:-4} # identities reconstructed (0: none)

run() {
    OMP_NUM_THREADS=1 mpiexec -n "$nproc" python scripts/evaluate_edits.py --paper_steps "$steps" \
        --synthetic_seed "$SEED" --variants "$VARIANTS" --methods "$METHODS" --threads 1 "$@"
}
run --per_direction "$PER_DIRECTION" ${ATTRIBUTES:+--attributes "$ATTRIBUTES"} --output_dir "$out/edits"
if [ "$RECONSTRUCTIONS" -gt 0 ]; then
    run --num_identities "$RECONSTRUCTIONS" --attributes 20 --output_dir "$out/reconstructions"
fi
