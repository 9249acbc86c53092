#!/usr/bin/env bash
# The GPU work in one command (docs/gpu_run.md): render the training faces, continue the v model's
# fine-tune from checkpoints/diffusion.pt at a large batch with EMA, evaluate samples of the start
# and the fine-tuned model (DDIM-50 and a DDPM-1000 subset), time batched edits, and write
# OUT/summary.md and OUT/summary.json. Each stage is time-boxed; a stage that finished is skipped
# when the command is run again (training resumes from its last saved step).
#
#   bash scripts/gpu_run.sh                      # everything, about 12 min on one GPU
#   SKIP=data,ddpm bash scripts/gpu_run.sh       # skip stages (data train samples ddpm bench)
#   OUT=/tmp/tiny DEVICE=cpu DATA_IMAGES=16 TRAIN_STEPS=2 ... bash scripts/gpu_run.sh   # see tests/test_gpu_run.py
set -uo pipefail
cd "$(dirname "$0")/.."

set -a  # the settings below reach the stages, which run in their own shells
OUT=${OUT:-runs/gpu_run}
DEVICE=${DEVICE:-cuda}
SKIP=${SKIP:-}
INIT=${INIT:-checkpoints/diffusion.pt}
# Sizes (defaults: the GPU run).
DATA_IMAGES=${DATA_IMAGES:-30000}
WORKERS=${WORKERS:-$(nproc)}
TRAIN_STEPS=${TRAIN_STEPS:-1500}
TRAIN_BATCH=${TRAIN_BATCH:-256}
TRAIN_LR=${TRAIN_LR:-4e-4}
SAVE_INTERVAL=${SAVE_INTERVAL:-250}
SAMPLES=${SAMPLES:-500}
SAMPLE_RESPACING=${SAMPLE_RESPACING:-ddim50}
DDPM_SAMPLES=${DDPM_SAMPLES:-100}
DDPM_RESPACING=${DDPM_RESPACING:-}           # '' = all 1000 steps
SAMPLE_BATCH=${SAMPLE_BATCH:-500}
BENCH_BATCHES=${BENCH_BATCHES:-1,16,64}
BENCH_REPEATS=${BENCH_REPEATS:-3}
BENCH_EXTRA=${BENCH_EXTRA:-}                 # more bench_edit.py flags
# Time boxes in seconds (together 12 min).
T_DATA=${T_DATA:-90}
T_TRAIN=${T_TRAIN:-330}
T_SAMPLES=${T_SAMPLES:-90}
T_DDPM=${T_DDPM:-120}
T_BENCH=${T_BENCH:-90}

mkdir -p "$OUT"
STAGES="$OUT/stages.jsonl"
DATA="$OUT/data/synth64_s0_independent"
TRAIN="$OUT/train"
FLAGS="--image_size 64 --num_channels 32 --channel_mult 1,2,2,2 --num_res_blocks 1 --attention_resolutions 16,8
    --num_heads 4 --num_attributes 20 --diffusion_steps 1000 --noise_schedule linear --learn_sigma False
    --use_scale_shift_norm True --snr_gamma none --predict_v True --ema_rate 0.999,0.9999 --ema_warmup True --seed 0"
set +a

skipped() { [[ ",$SKIP," == *",$1,"* ]]; }

# run_stage NAME SECONDS CMD...: skip when asked or done before, else run under `timeout`, log to
# OUT/NAME.log and record status and seconds in OUT/stages.jsonl.
run_stage() {
    local name=$1 limit=$2
    shift 2
    if skipped "$name"; then
        echo "{\"stage\": \"$name\", \"status\": \"skipped\"}" >>"$STAGES"
        echo "== $name: skipped"
        return 0
    fi
    if [ -f "$OUT/$name.done" ]; then
        echo "== $name: done in an earlier run"
        return 0
    fi
    echo "== $name (at most ${limit}s): $*"
    local start=$SECONDS rc
    if declare -F "$1" >/dev/null; then  # a function of this script: in a shell that has it
        timeout --kill-after=15 "$limit" bash -c "$(declare -f "$1" latest_ema); $(printf '%q ' "$@")" \
            >"$OUT/$name.log" 2>&1
    else
        timeout --kill-after=15 "$limit" "$@" >"$OUT/$name.log" 2>&1
    fi
    rc=$?
    local status=ok
    if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then status=timed_out; elif [ "$rc" != 0 ]; then status=failed; fi
    echo "{\"stage\": \"$name\", \"status\": \"$status\", \"seconds\": $((SECONDS - start)), \"exit\": $rc}" >>"$STAGES"
    echo "   $status after $((SECONDS - start))s (log: $OUT/$name.log)"
    [ "$status" = ok ] && touch "$OUT/$name.done"
    return 0
}

latest_ema() {  # the fine-tune's newest EMA 0.999 weights, else the start model
    local f
    f=$(ls "$TRAIN"/ema_0.999_*.pt 2>/dev/null | sort | tail -n 1)
    echo "${f:-$INIT}"
}

train() {
    # the model's JSON travels with the weights, so the evaluations find it beside them
    # shellcheck disable=SC2086
    python scripts/image_train.py $FLAGS --init_from "$INIT" --data_dir "$DATA" --log_dir "$TRAIN" \
        --batch_size "$TRAIN_BATCH" --lr "$TRAIN_LR" --log_interval 50 --save_interval "$SAVE_INTERVAL" \
        --max_steps "$TRAIN_STEPS" || return $?
    local ema
    ema=$(latest_ema)
    [ "$ema" = "$INIT" ] || cp "$TRAIN/model_config.json" "${ema%.pt}.json"
}

samples() {
    local ema
    ema=$(latest_ema)
    [ "$ema" = "$INIT" ] || [ -f "${ema%.pt}.json" ] || cp "$TRAIN/model_config.json" "${ema%.pt}.json"
    python scripts/evaluate_samples.py --model_path "$INIT" --num_samples "$SAMPLES" --sampler ddim \
        --timestep_respacing "$SAMPLE_RESPACING" --batch_size "$SAMPLE_BATCH" --device "$DEVICE" \
        --output_dir "$OUT/samples_start_ddim" || return $?
    python scripts/evaluate_samples.py --model_path "$ema" --num_samples "$SAMPLES" --sampler ddim \
        --timestep_respacing "$SAMPLE_RESPACING" --batch_size "$SAMPLE_BATCH" --device "$DEVICE" \
        --output_dir "$OUT/samples_finetuned_ddim"
}

ddpm() {
    local ema
    ema=$(latest_ema)
    [ "$ema" = "$INIT" ] || [ -f "${ema%.pt}.json" ] || cp "$TRAIN/model_config.json" "${ema%.pt}.json"
    python scripts/evaluate_samples.py --model_path "$ema" --num_samples "$DDPM_SAMPLES" --sampler ddpm \
        ${DDPM_RESPACING:+--timestep_respacing "$DDPM_RESPACING"} --batch_size "$SAMPLE_BATCH" \
        --device "$DEVICE" --output_dir "$OUT/samples_finetuned_ddpm"
}

echo "gpu_run: output in $OUT, device $DEVICE, started $(date -u +%FT%TZ)"
run_stage data "$T_DATA" python preprocess/make_synthetic_dataset.py --out "$DATA" --num_images "$DATA_IMAGES" \
    --image_size 64 --seed 0 --attributes independent --workers "$WORKERS"
run_stage train "$T_TRAIN" train
# A time-boxed training still leaves its last saved step: the evaluations take that one.
run_stage samples "$T_SAMPLES" samples
run_stage ddpm "$T_DDPM" ddpm
# shellcheck disable=SC2086
run_stage bench "$T_BENCH" python scripts/bench_edit.py --device "$DEVICE" --batch_sizes "$BENCH_BATCHES" \
    --repeats "$BENCH_REPEATS" --output "$OUT/bench_edit.json" $BENCH_EXTRA

python scripts/gpu_run_summary.py "$OUT" --device "$DEVICE" --init "$INIT" --trained "$(latest_ema)"
