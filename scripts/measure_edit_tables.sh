#!/usr/bin/env bash
# Measure every published edit table again with the checkpoints in checkpoints/ (after a model or
# classifier is replaced), write docs/results/ and re-render the docs. Each stage leaves its
# evaluate_edits.py folder in OUT and OUT/<stage>.done once summarised; a finished stage is skipped
# and an interrupted one continues where it stopped (evaluate_edits resumes), so re-run after a stop.
#
#   bash scripts/measure_edit_tables.sh [OUT] [STAGES]
#
# STAGES (comma list, default all): single (448 edits, about 1 h 15 min on 2 CPU cores), joint (80),
# noneditable (52), paper250 (the paper's procedure, 14 edits and 4 reconstructions per configuration,
# about 35 min), paper_seed1003 (28 edits, about 22 min), paper1000 (2 edits on the full chain,
# about 5 min), figures (README figures that show edits). NPROC ranks (default 2) share the work.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/measure}
STAGES=${2:-single,joint,noneditable,paper250,paper_seed1003,paper1000,figures}
NPROC=${NPROC:-2}
HARDWARE=${HARDWARE:-"$(nproc) CPU cores (mpiexec -n $NPROC, OMP_NUM_THREADS=1), no GPU"}
mkdir -p "$OUT"
export OMP_NUM_THREADS=1

want() { [[ ",$STAGES," == *",$1,"* ]] && [ ! -f "$OUT/$1.done" ]; }
minutes() { echo "$(( ($(date +%s) - $1 + 30) / 60 )) min"; }

# edit_split NAME RESULTS REPORT SPLIT DATA ARGS...: one evaluate_edits run and its summary
edit_split() {
    local name=$1 results=$2 report=$3 split=$4 data=$5
    shift 5
    local start cmd
    start=$(date +%s)
    cmd="mpiexec -n $NPROC python scripts/evaluate_edits.py $* --output_dir OUT"
    echo "== $name: $cmd"
    mpiexec -n "$NPROC" python scripts/evaluate_edits.py "$@" --output_dir "$OUT/$name"
    python scripts/summarise_edits.py "$OUT/$name" --output "docs/results/$results" --report "$report" \
        --split "$split" ${data:+--data "$data"} --command "$cmd" --wall_time "$(minutes "$start")" \
        --hardware "$HARDWARE"
    touch "$OUT/$name.done"
}

SINGLE=cyclediff_sbs_inversion_region_fast,conditional_only_region_fast,guidance_no_cycle_region_fast
SINGLE+=,cyclediff_s2o_region_fast,ddim_conditional_region_fast,sdedit_region_fast,ground_truth
SINGLE+=,conditional_only_fast,cyclediff_sbs_inversion_fast,guidance_no_cycle_fast,ddim_conditional_fast,sdedit_fast
SPLIT_METHODS=cyclediff_sbs_inversion_region_fast,conditional_only_region_fast,guidance_no_cycle_region_fast,ground_truth

if want single; then
    edit_split single evaluation_synthetic_448.json docs/evaluation_synthetic_448.md single "" \
        --per_direction 32 --batch_size 16 --methods "$SINGLE"
fi
if want joint; then
    edit_split joint evaluation_joint_80.json docs/evaluation_joint_80.md joint \
        "held-out synthetic seed 1000; pairs 9+15, 15+18, 2+12, 9+19, 11+18, per pair the first 4 people for each of the four combinations of the two attributes" \
        --per_direction 4 --batch_size 16 --attributes none --joint_pairs default --methods "$SPLIT_METHODS"
fi
if want noneditable; then
    edit_split noneditable evaluation_noneditable_52.json docs/evaluation_noneditable_52.md noneditable \
        "held-out synthetic seed 1000; the 13 non-editable attributes, per attribute the first 2 people with it and the first 2 without it; 10 flips the renderer cannot draw as labelled left out" \
        --per_direction 2 --batch_size 16 --attributes none --noneditable all --methods "$SPLIT_METHODS"
fi

# The paper's procedure: the configurations of the README's table, then the other seed and the full chain.
# paper_stage STAGE STEPS RESULTS "VAR=value ...": paper_procedure_ablation.sh under those settings, summarised.
paper_stage() {
    local stage=$1 steps=$2 results=$3 settings=$4
    # shellcheck disable=SC2086
    env $settings bash scripts/paper_procedure_ablation.sh "$OUT/$stage" "$steps" "$NPROC"
    python scripts/summarise_ablation.py "$OUT/$stage" --steps "$steps" --hardware "$HARDWARE" \
        --output "docs/results/$results" --command "$settings bash scripts/paper_procedure_ablation.sh OUT $steps $NPROC"
    touch "$OUT/$stage.done"
}
PAPER=s2o_w1000,s2o_w1000_no_id,no_cycle,s2o_w16000,s2o_w1000_id2000,s2o_w16000_id2000,cyclediff_s2o_paper_inversion
want paper250 && paper_stage paper250 250 paper_ablation_250_identity.json "METHODS=$PAPER"
want paper_seed1003 && paper_stage paper_seed1003 250 paper_250_seed1003_identity.json \
    "METHODS=s2o_w1000,no_cycle,s2o_w1000_no_id SEED=1003 PER_DIRECTION=2 RECONSTRUCTIONS=0"
want paper1000 && paper_stage paper1000 1000 paper_1000_identity.json "METHODS=s2o_w1000,no_cycle ATTRIBUTES=9 RECONSTRUCTIONS=0"
if want figures; then
    if [ -d "$OUT/paper250/edits" ]; then
        python scripts/make_ablation_figure.py "$OUT/paper250/edits" --methods s2o_w1000,s2o_w1000_no_id,no_cycle,s2o_w16000 \
            --output images/paper_ablation_250.png
    fi
    python scripts/make_figures.py
    touch "$OUT/figures.done"
fi
python scripts/render_docs.py
echo "measure_edit_tables: done; review git diff docs/ README.md checkpoints/README.md images/"
