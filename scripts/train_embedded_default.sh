#!/usr/bin/env bash
# Reproduce the embedded default (checkpoints/): data, the two classifiers, the diffusion model,
# the half-precision export. Every step resumes when re-run, so the script can be run again after
# an interruption. RUN_DIR holds everything large (datasets, training checkpoints); it is not
# part of the repository.
#
#   RUN_DIR=/path/to/runs bash scripts/train_embedded_default.sh [data|classifier|eval_classifier|diffusion|diffusion_independent|diffusion_v|identity_data|identity|eval_identity|export|all]
#
# Hardware of the shipped run: see checkpoints/README.md. On a GPU machine set NPROC to the GPU
# count; on CPU it is the number of processes (1 thread each).
set -euo pipefail
cd "$(dirname "$0")/.."
RUN_DIR=${RUN_DIR:-runs}
NPROC=${NPROC:-2}
DIFFUSION_STEPS=${DIFFUSION_STEPS:-14000}        # first stage: CelebA-like faces, batch 16
INDEPENDENT_STEPS=${INDEPENDENT_STEPS:-17500}    # second stage ends here: independent attributes, batch 128
V_STEPS=${V_STEPS:-6000}                         # third stage: the same weights fine-tuned as v-prediction
stage=${1:-all}

data() {
    [ -d "$RUN_DIR/data/synth64_s0" ] || python preprocess/make_synthetic_dataset.py \
        --out "$RUN_DIR/data/synth64_s0" --num_images 30000 --image_size 64 --seed 0
    # The same people (seed 0) with independent attributes: the guidance classifier reads each
    # attribute from its own pixels, and the diffusion model's last steps see every combination.
    [ -d "$RUN_DIR/data/synth64_s0_independent" ] || python preprocess/make_synthetic_dataset.py \
        --out "$RUN_DIR/data/synth64_s0_independent" --num_images 30000 --image_size 64 --seed 0 \
        --attributes independent
    # The guidance classifier learns Bags_Under_Eyes late: it gets twice the faces (the first 30,000
    # are the ones above).
    [ -d "$RUN_DIR/data/synth64_s0_independent_60k" ] || python preprocess/make_synthetic_dataset.py \
        --out "$RUN_DIR/data/synth64_s0_independent_60k" --num_images 60000 --image_size 64 --seed 0 \
        --attributes independent
    # The evaluation classifier learns from other people (seed 1) with independent attributes, so
    # that it reads each attribute from its own pixels; seed 1000 is held out for edits.
    [ -d "$RUN_DIR/data/synth64_s1_independent" ] || python preprocess/make_synthetic_dataset.py \
        --out "$RUN_DIR/data/synth64_s1_independent" --num_images 30000 --image_size 64 --seed 1 \
        --attributes independent
}

classifier() {
    python preprocess/encoder_train.py --world_size 1 --rank 0 --multiprocessing_distributed True \
        --nprocs "$NPROC" --num_threads 1 --data_dir "$RUN_DIR/data/synth64_s0_independent_60k" --exp_dir "$RUN_DIR/classifier_60k" \
        --arch resnet18_3stage --batch_size 64 --max_steps 6000 --learning_rate 1e-3 --input_size 64 \
        --save_interval 500 --seed 0 --split_seed 0
}

eval_classifier() {
    python preprocess/encoder_train.py --world_size 1 --rank 0 --multiprocessing_distributed True \
        --nprocs "$NPROC" --num_threads 1 --data_dir "$RUN_DIR/data/synth64_s1_independent" --exp_dir "$RUN_DIR/eval_classifier_independent" \
        --arch resnet18_3stage --batch_size 64 --max_steps 3000 --learning_rate 1e-3 --input_size 64 \
        --save_interval 500 --seed 1 --split_seed 1
}

# The diffusion model, in two stages: CelebA-like faces at batch 16 (the 2-core CPU run), then the
# same people with independent attributes at batch 128 (the shipped run did this on one H200 GPU,
# 3,500 steps in 6 min; NPROC ranks split the batch), so that the model has seen every attribute
# combination an edit can ask for (a man with lipstick, say).
DIFFUSION_FLAGS="--image_size 64 --num_channels 32 --channel_mult 1,2,2,2 --num_res_blocks 1
    --attention_resolutions 16,8 --num_heads 4 --num_attributes 20
    --diffusion_steps 1000 --noise_schedule linear --learn_sigma False --use_scale_shift_norm True
    --lr 4e-4 --lr_anneal_steps 0 --snr_gamma 5 --ema_rate 0.999,0.9999 --ema_warmup True --save_interval 500 --seed 0"

diffusion() {
    # shellcheck disable=SC2086
    OMP_NUM_THREADS=1 mpiexec -n "$NPROC" python scripts/image_train.py $DIFFUSION_FLAGS \
        --data_dir "$RUN_DIR/data/synth64_s0" --log_dir "$RUN_DIR/diffusion64" \
        --batch_size $((16 / NPROC)) --log_interval 50 --max_steps "$DIFFUSION_STEPS"
}

diffusion_independent() {
    dir="$RUN_DIR/diffusion64_independent"
    if ! ls "$dir"/model*.pt >/dev/null 2>&1; then  # start from the first stage's last step
        step=$(printf %06d "$DIFFUSION_STEPS")
        mkdir -p "$dir"
        for f in "model$step.pt" "opt$step.pt" "ema_0.999_$step.pt" "ema_0.9999_$step.pt" model_config.json; do
            cp "$RUN_DIR/diffusion64/$f" "$dir/"
        done
    fi
    # shellcheck disable=SC2086
    OMP_NUM_THREADS=1 mpiexec -n "$NPROC" python scripts/image_train.py $DIFFUSION_FLAGS \
        --data_dir "$RUN_DIR/data/synth64_s0_independent" --log_dir "$dir" \
        --batch_size $((128 / NPROC)) --log_interval 100 --max_steps "$INDEPENDENT_STEPS"
}

# Third stage: the eps model cannot pass the noise's per-channel mean to its output (its last
# GroupNorm has one channel per group), and x0 = (x_t - sqrt(1 - abar) eps) / sqrt(abar) multiplies
# that miss by up to 158: colour casts in samples from pure noise. A v-prediction model gets eps's
# mean from x_t analytically. Fine-tuned from the second stage's weights, plain v-MSE (the min-SNR
# weight for v vanishes at the noisiest levels, which are the ones the new target must learn).
diffusion_v() {
    init="$RUN_DIR/diffusion64_independent/ema_0.999_$(printf %06d "$INDEPENDENT_STEPS").pt"
    [ -f "$init" ] || init=checkpoints/diffusion_eps.pt  # the shipped step-17,500 eps model
    # shellcheck disable=SC2086
    OMP_NUM_THREADS=1 mpiexec -n "$NPROC" python scripts/image_train.py ${DIFFUSION_FLAGS/--snr_gamma 5/--snr_gamma none} \
        --predict_v True --init_from "$init" \
        --data_dir "$RUN_DIR/data/synth64_s0_independent" --log_dir "$RUN_DIR/diffusion64_v" \
        --batch_size $((16 / NPROC)) --log_interval 100 --max_steps "$V_STEPS"
}

# The identity networks (the id_lambda term; the benchmark's identity score): six views of each of
# 5,000 people (attributes drawn at the faces' own frequencies, pose, light, background and clothes
# redrawn per view), one class per person, ArcFace's margin loss (held-out verification 0.90, below
# the 0.99 aimed at: checkpoints/README.md). The guidance one learns seed 0's people (those the
# diffusion model saw), the evaluation one seed 1's; seed 1000's people are held out for their measures.
identity_data() {
    for seed in 0 1; do
        [ -d "$RUN_DIR/data/people64_s$seed" ] || python preprocess/make_synthetic_dataset.py \
            --out "$RUN_DIR/data/people64_s$seed" --num_images 30000 --views_per_person 6 --seed "$seed" \
            --attributes celeba
    done
    [ -d "$RUN_DIR/data/people64_s1000" ] || python preprocess/make_synthetic_dataset.py \
        --out "$RUN_DIR/data/people64_s1000" --num_images 2000 --views_per_person 4 --seed 1000 \
        --attributes celeba
}

identity() {
    python preprocess/identity_train.py --data_dir "$RUN_DIR/data/people64_s0" --exp_dir "$RUN_DIR/identity" \
        --nprocs "$NPROC" --num_threads 1 --seed 0
}

eval_identity() {
    python preprocess/identity_train.py --data_dir "$RUN_DIR/data/people64_s1" --exp_dir "$RUN_DIR/eval_identity" \
        --nprocs "$NPROC" --num_threads 1 --seed 1
}

export_checkpoints() {
    latest=$(ls "$RUN_DIR"/diffusion64_v/ema_0.999_*.pt | sort | tail -n 1)
    python scripts/export_checkpoints.py --diffusion "$latest" \
        --classifier "$RUN_DIR/classifier_60k/classifier.pt" --classifier_temperature 4 --eval_classifier "$RUN_DIR/eval_classifier_independent/classifier.pt" \
        --identity "$RUN_DIR/identity/identity.pt" --eval_identity "$RUN_DIR/eval_identity/identity.pt"
}

case "$stage" in
    data) data ;;
    classifier) classifier ;;
    eval_classifier) eval_classifier ;;
    diffusion) diffusion ;;
    diffusion_independent) diffusion_independent ;;
    diffusion_v) diffusion_v ;;
    identity_data) identity_data ;;
    identity) identity ;;
    eval_identity) eval_identity ;;
    export) export_checkpoints ;;
    all) data; classifier; eval_classifier; diffusion; diffusion_independent; diffusion_v; identity_data; identity; eval_identity; export_checkpoints ;;
    *) echo "error: unknown stage $stage (data|classifier|eval_classifier|diffusion|diffusion_independent|diffusion_v|identity_data|identity|eval_identity|export|all)" >&2; exit 2 ;;
esac
