"""
Tests of the training stack: TrainLoop (loss, microbatching, EMA, lr anneal,
exact resume), checkpoints and their JSON, dist_util under mpiexec, and the
image_train / image_sample scripts' behaviour on good and bad input.
"""

import csv
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch as th
from PIL import Image

from guided_diffusion import logger
from guided_diffusion.image_datasets import load_data
from guided_diffusion.script_util import (
    create_model_and_diffusion,
    load_diffusion_model,
    load_model_config,
    model_and_diffusion_defaults,
)
from guided_diffusion.train_util import (
    TrainLoop,
    find_resume_checkpoint,
    parameter_hash,
    parse_resume_step_from_filename,
    save_atomically,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_ATTRIBUTES = 4
TINY = dict(
    image_size=16,
    num_channels=8,
    num_res_blocks=1,
    channel_mult="1,2",
    attention_resolutions="8",
    num_heads=1,
    num_attributes=NUM_ATTRIBUTES,
    diffusion_steps=50,
)
TINY_FLAGS = [f"--{k}={v}" for k, v in TINY.items()]


def tiny_config(**overrides):
    return {**model_and_diffusion_defaults(), **TINY, **overrides}


def load_script(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "scripts", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """Eight smooth 16x16 images (gradients and blobs) with binary attributes."""
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:16, 0:16] / 15.0
    for i in range(8):
        colour = rng.uniform(0, 1, 3)
        image = colour * (0.5 + 0.5 * np.sin(3 * xx + i)[..., None] * yy[..., None])
        Image.fromarray((255 * image).astype(np.uint8)).save(root / f"{i:05d}.png")
    th.save(
        (th.rand(8, NUM_ATTRIBUTES, generator=th.Generator().manual_seed(0)) < 0.5).float(),
        root / "attributes.pt",
    )
    return root


def make_loop(log_dir, data_dir, config=None, init_seed=0, **kwargs):
    """A TrainLoop on the tiny model, resuming (data stream included) from log_dir like image_train.py."""
    logger.configure(str(log_dir), format_strs=["csv", "log"])
    config = config or tiny_config()
    th.manual_seed(init_seed)
    model, diffusion = create_model_and_diffusion(**config)
    resume = find_resume_checkpoint("", str(log_dir))
    options = dict(
        batch_size=4,
        microbatch=-1,
        lr=1e-3,
        ema_rate="0.9,0.5",
        log_interval=2,
        save_interval=3,
        resume_checkpoint="",
        seed=0,
        model_config=config,
    )
    options.update(kwargs)
    data = load_data(
        data_dir=str(data_dir),
        batch_size=options["batch_size"],
        image_size=16,
        num_attributes=NUM_ATTRIBUTES,
        seed=0,
        start_batch=parse_resume_step_from_filename(resume) if resume else 0,
    )
    return TrainLoop(model=model, diffusion=diffusion, data=data, **options)


def state_dicts_equal(a, b):
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(state_dicts_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(state_dicts_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, th.Tensor):
        return th.equal(a, b)
    return a == b


def load(path):
    return th.load(path, map_location="cpu")


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, data_dir):
    """An uninterrupted 6-step run (lr annealed to 0 at step 6, checkpoints at 3 and 6)."""
    log_dir = tmp_path_factory.mktemp("uninterrupted")
    loop = make_loop(log_dir, data_dir, lr_anneal_steps=6)
    loop.run_loop()
    return log_dir, loop


def fixed_eval_loss(model, diffusion, data_dir):
    """Training loss on a fixed batch with fixed timesteps and noise (no randomness between calls)."""
    images, cond = next(
        load_data(data_dir=str(data_dir), batch_size=8, image_size=16, deterministic=True, random_flip=False)
    )
    g = th.Generator().manual_seed(1)
    t = th.linspace(0, diffusion.num_timesteps - 1, 8).long()
    noise = th.randn(images.shape, generator=g)
    with th.no_grad():
        return (
            diffusion.training_losses(model, images, t, model_kwargs=cond, noise=noise)["loss"].mean().item()
        )


def test_training_lowers_the_loss_and_anneals_lr(tmp_path, data_dir):
    loop = make_loop(
        tmp_path, data_dir, lr=5e-3, lr_anneal_steps=10, save_interval=4, log_interval=2, batch_size=8
    )
    before = fixed_eval_loss(loop.model, loop.diffusion, data_dir)
    loop.run_loop()
    after = fixed_eval_loss(loop.model, loop.diffusion, data_dir)
    assert after < 0.85 * before, (before, after)

    assert loop.step == 10  # lr_anneal_steps ends training
    with open(tmp_path / "progress.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [2, 4, 6, 8, 10]
    for row in rows:  # the lr of update s (1-based) is lr * (1 - (s - 1) / 10)
        assert float(row["lr"]) == pytest.approx(5e-3 * (1 - (int(row["step"]) - 1) / 10))
        assert float(row["samples_per_sec"]) > 0
    # checkpoints at the save interval and at the end, nothing half-written
    names = sorted(os.listdir(tmp_path))
    assert {"model000004.pt", "model000008.pt", "model000010.pt", "opt000010.pt", "ema_0.9_000010.pt"} <= set(
        names
    )
    assert not [n for n in names if ".tmp" in n]


def test_microbatching_matches_the_whole_batch(tmp_path, data_dir):
    batch, cond = next(load_data(data_dir=str(data_dir), batch_size=4, image_size=16, seed=0))
    grads = []
    for microbatch in (-1, 1, 3):
        loop = make_loop(tmp_path / str(microbatch), data_dir, microbatch=microbatch)
        with th.no_grad():  # zero-initialised layers would stop most gradients: perturb every weight
            for i, p in enumerate(loop.model.parameters()):
                p.add_(0.05 * th.randn(p.shape, generator=th.Generator().manual_seed(i)))
        th.manual_seed(5)  # same timesteps and noise for every microbatch size
        loop.forward_backward(batch, cond)
        grads.append(th.cat([p.grad.flatten() for p in loop.mp_trainer.master_params]))
    assert (grads[0] != 0).float().mean() > 0.9  # not vacuous: nearly every parameter has a gradient
    for other in grads[1:]:
        assert th.allclose(other, grads[0], atol=1e-7, rtol=1e-4)


def test_ema_follows_its_rate(tmp_path, data_dir):
    loop = make_loop(tmp_path, data_dir, ema_rate="0.75,0")
    before = [p.detach().clone() for p in loop.mp_trainer.master_params]
    batch, cond = next(loop.data)
    loop.run_step(batch, cond)
    after = loop.mp_trainer.master_params
    slow, instant = loop.ema_params
    for b, a, s, i in zip(before, after, slow, instant):
        assert th.equal(i, a)
        assert th.allclose(s, 0.75 * b + 0.25 * a, atol=1e-7)


def test_ema_warmup_decay_and_first_step():
    from guided_diffusion.train_util import ema_decay

    assert ema_decay(0.999, 0, warmup=False) == 0.999
    assert ema_decay(0.999, 0, warmup=True) == pytest.approx(0.1)
    assert ema_decay(0.999, 90, warmup=True) == pytest.approx(91 / 100)
    assert ema_decay(0.999, 10**6, warmup=True) == 0.999


def test_ema_warmup_moves_the_average_to_the_weights_early(tmp_path, data_dir):
    loop = make_loop(tmp_path, data_dir, ema_rate="0.999")
    loop.ema_warmup = True
    before = [p.detach().clone() for p in loop.mp_trainer.master_params]
    batch, cond = next(loop.data)
    loop.run_step(batch, cond)  # step 0: decay 1/10
    for b, a, s in zip(before, loop.mp_trainer.master_params, loop.ema_params[0]):
        assert th.allclose(s, 0.1 * b + 0.9 * a, atol=1e-7)


def test_resume_repeats_the_uninterrupted_run_exactly(tmp_path, data_dir, trained_run):
    reference_dir, _ = trained_run
    first = make_loop(tmp_path, data_dir, lr_anneal_steps=6, max_steps=3)  # "interrupted" at step 3
    first.run_loop()
    assert sorted(n for n in os.listdir(tmp_path) if n.startswith("model0")) == ["model000003.pt"]

    resumed = make_loop(
        tmp_path, data_dir, init_seed=123, lr_anneal_steps=6
    )  # other init: weights must come from disk
    assert resumed.resume_step == 3 and resumed.step == 3
    reference_opt = load(reference_dir / "opt000003.pt")
    assert state_dicts_equal(resumed.opt.state_dict()["state"], reference_opt["state"])
    reference_ema = load(reference_dir / "ema_0.5_000003.pt")
    assert state_dicts_equal(
        resumed.mp_trainer.master_params_to_state_dict(resumed.ema_params[1]), reference_ema
    )
    resumed.run_loop()

    assert resumed.step == 6
    for name in ("model000006.pt", "ema_0.9_000006.pt", "ema_0.5_000006.pt", "opt000006.pt"):
        assert state_dicts_equal(load(tmp_path / name), load(reference_dir / name)), name


def test_checkpoint_and_config_reload_exactly(trained_run):
    log_dir, loop = trained_run
    assert load_model_config(str(log_dir / "model000006.pt")) == tiny_config()
    model, diffusion, config = load_diffusion_model(str(log_dir / "model000006.pt"))
    assert not model.training and config == tiny_config() and diffusion.num_timesteps == 50
    x = th.randn(2, 3, 16, 16)
    t = th.tensor([5, 40])
    y = th.tensor([[1.0, 0, 1, 0], [0, 1, 1, 0]])
    expected = loop.model(x, t, y=y)
    assert expected.abs().max() > 0  # trained: the zero-initialised output layer has moved
    assert th.equal(model(x, t, y=y), expected)

    ema_model, _, _ = load_diffusion_model(str(log_dir / "ema_0.9_000006.pt"), timestep_respacing="10")
    ema_state = loop.mp_trainer.master_params_to_state_dict(loop.ema_params[0])
    assert state_dicts_equal(ema_model.state_dict(), ema_state)


def test_checkpoint_from_another_config_is_refused(tmp_path, trained_run, data_dir):
    log_dir, _ = trained_run
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(log_dir / "model000006.pt", other / "model000006.pt")
    with pytest.raises(FileNotFoundError, match="model_config.json"):
        load_diffusion_model(str(other / "model000006.pt"))
    with open(other / "model_config.json", "w") as f:
        json.dump(tiny_config(num_channels=16), f)
    with pytest.raises(ValueError, match="does not match the model configuration"):
        load_diffusion_model(str(other / "model000006.pt"))
    # resuming a log dir with other hyper-parameters
    with pytest.raises(ValueError, match="num_channels=16 there, 8 now"):
        make_loop(other, data_dir)


def test_atomic_save_keeps_the_old_file_on_failure(tmp_path):
    path = tmp_path / "model000001.pt"
    save_atomically({"w": th.ones(3)}, str(path))
    with pytest.raises(Exception):
        save_atomically({"w": lambda: None}, str(path))  # unpicklable: fails mid-save
    assert th.equal(load(path)["w"], th.ones(3))
    assert os.listdir(tmp_path) == ["model000001.pt"]


def _mpiexec(args, timeout, env):
    return subprocess.run(
        ["mpiexec", "-n", "2", sys.executable, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


requires_mpiexec = pytest.mark.skipif(shutil.which("mpiexec") is None, reason="mpiexec not on PATH")


@requires_mpiexec
def test_mpi_load_state_dict_follows_rank0_and_never_hangs(tmp_path, mpi_env):
    path = tmp_path / "weights.pt"
    th.save({"w": th.arange(5000, dtype=th.float32)}, path)  # 20 kB: several 4 kB chunks below
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {ROOT!r})
        from guided_diffusion import dist_util
        dist_util._CHUNK_BYTES = 4096
        dist_util.setup_dist()
        rank = dist_util.get_rank()
        # only rank 0's path counts: rank 1 passes a path that does not exist
        state = dist_util.load_state_dict({str(path)!r} if rank == 0 else "/nonexistent.pt")
        print(f"rank {{rank}} sum {{state['w'].sum().item():.0f}}")
        try:
            dist_util.load_state_dict("/nonexistent.pt" if rank == 0 else {str(path)!r})
        except FileNotFoundError as exc:
            print(f"rank {{rank}} missing")
        """)
    result = _mpiexec(["-c", script], timeout=90, env=mpi_env)
    assert result.returncode == 0, result.stderr
    expected_sum = f"{sum(range(5000))}"
    for rank in (0, 1):
        assert f"rank {rank} sum {expected_sum}" in result.stdout
        assert f"rank {rank} missing" in result.stdout


def _rank_hashes(log_dir):
    hashes = {}
    for name, rank in (("log.txt", 0), ("log.rank1.txt", 1)):
        text = (log_dir / name).read_text()
        hashes[rank] = re.findall(rf"rank {rank} step (\d+) parameter hash (\w+)", text)[-1]
    return hashes


@requires_mpiexec
def test_mpiexec_training_syncs_ranks_and_resumes(tmp_path, data_dir, mpi_env):
    log_dir = tmp_path / "run"
    flags = ["scripts/image_train.py", f"--data_dir={data_dir}", f"--log_dir={log_dir}", "--batch_size=2"]
    flags += ["--save_interval=2", "--log_interval=1", "--lr=1e-3", *TINY_FLAGS]
    first = _mpiexec(flags + ["--max_steps=2"], timeout=150, env=mpi_env)
    assert first.returncode == 0, first.stderr[-2000:]
    hashes = _rank_hashes(log_dir)
    assert hashes[0] == hashes[1] and hashes[0][0] == "2"
    assert hashes[0][1] == parameter_hash(load(log_dir / "model000002.pt").values())

    second = _mpiexec(flags + ["--max_steps=4"], timeout=150, env=mpi_env)  # restarted: must resume, not hang
    assert second.returncode == 0, second.stderr[-2000:]
    for name in ("log.txt", "log.rank1.txt"):
        assert f"resuming from {log_dir / 'model000002.pt'} (step 2)" in (log_dir / name).read_text()
    hashes = _rank_hashes(log_dir)
    assert hashes[0] == hashes[1] and hashes[0][0] == "4"
    # both ranks trained on their own shards: the gradients were averaged, so the weights moved identically
    assert not state_dicts_equal(load(log_dir / "model000002.pt"), load(log_dir / "model000004.pt"))


def _write_other_config_run(tmp_path, trained_run):
    log_dir, _ = trained_run
    other = tmp_path / "other_run"
    other.mkdir()
    shutil.copy(log_dir / "model000006.pt", other / "model000006.pt")
    with open(other / "model_config.json", "w") as f:
        json.dump(tiny_config(), f)
    return other / "model000006.pt"


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing_data_dir", "data directory not found"),
        ("short_attributes", "has 7 rows but"),
        ("non_image_file", "cannot read image"),
        ("bad_respacing", "bogus"),
        ("other_config", "num_channels=8 there, 16 now"),
        ("image_size_mismatch", "is 16x16 but --image_size is 32"),
    ],
)
def test_image_train_bad_input_gives_one_error_line(tmp_path, data_dir, trained_run, capsys, case, message):
    bad_data = tmp_path / "data"
    shutil.copytree(data_dir, bad_data)
    flags = [f"--data_dir={bad_data}", f"--log_dir={tmp_path / 'run'}", "--max_steps=1", *TINY_FLAGS]
    if case == "missing_data_dir":
        flags.append(f"--data_dir={tmp_path / 'nowhere'}")
    if case == "short_attributes":
        th.save(th.zeros(7, NUM_ATTRIBUTES), bad_data / "attributes.pt")
    if case == "non_image_file":
        (bad_data / "00003.png").write_text("not an image")
    if case == "bad_respacing":
        flags.append("--timestep_respacing=bogus")
    if case == "other_config":
        flags += [
            f"--resume_checkpoint={_write_other_config_run(tmp_path, trained_run)}",
            "--num_channels=16",
        ]
    if case == "image_size_mismatch":  # 16 px data would be upscaled silently
        flags.append("--image_size=32")
    assert load_script("image_train").main(flags) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in err, err
    assert not (tmp_path / "run").exists()  # a refused run leaves no log.txt


def test_image_sample_writes_grid_and_npz(tmp_path, trained_run, capsys):
    log_dir, _ = trained_run
    output = tmp_path / "grid.png"
    flags = [f"--checkpoint={log_dir}", "--attributes=1,0,1,0;0,1,0,1", "--num_samples=3", "--batch_size=6"]
    flags += ["--use_ddim=True", "--timestep_respacing=ddim5", f"--output={output}"]
    sample_main = load_script("image_sample").main
    assert sample_main(flags) == 0, capsys.readouterr().err
    grid = np.asarray(Image.open(output))
    assert grid.shape == (2 + 2 * 18, 2 + 3 * 18, 3)  # 2 rows x 3 columns of 16 px with 2 px padding
    arrays = np.load(tmp_path / "grid.npz")
    assert arrays["arr_0"].shape == (6, 16, 16, 3) and arrays["arr_0"].dtype == np.uint8
    assert arrays["attributes"].tolist() == [[1, 0, 1, 0]] * 3 + [[0, 1, 0, 1]] * 3
    # DDIM from the same seed is deterministic
    assert sample_main(flags + [f"--output={tmp_path / 'again.png'}"]) == 0
    assert np.array_equal(np.load(tmp_path / "again.npz")["arr_0"], arrays["arr_0"])

    capsys.readouterr()
    assert sample_main([f"--checkpoint={log_dir}", "--attributes=1,0,1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: attribute vector 0 has 3 values, the model expects 4"]


def test_image_sample_shows_a_bar_per_sampling_step_and_explains_the_vector(tmp_path, trained_run, capsys):
    log_dir, _ = trained_run
    flags = [f"--checkpoint={log_dir}", "--attributes=1,0,1,0;0,1,0,1", "--num_samples=2", "--batch_size=2",
             "--use_ddim=True", "--timestep_respacing=ddim5", f"--output={tmp_path / 'grid.png'}"]
    module = load_script("image_sample")
    assert module.main(flags) == 0
    err = capsys.readouterr().err
    assert "DDIM sampling, 2 batches" in err and "10/10" in err  # 2 batches x 5 steps, one tick each
    help_text = module.create_argparser().format_help()
    assert "11 Male" in help_text and "19 Young" in help_text and " 0 Goatee" in help_text
    assert module.create_argparser().parse_args([]).checkpoint == os.path.join(ROOT, "checkpoints", "diffusion.pt")


def test_bf16_autocast_step_trains(tmp_path, data_dir):
    loop = make_loop(tmp_path, data_dir, use_bf16=True, lr=5e-3)
    before = [p.detach().clone() for p in loop.model.parameters()]
    batch, cond = next(loop.data)
    for _ in range(2):
        loop.run_step(batch, cond)
    assert all(p.dtype == th.float32 for p in loop.model.parameters())  # weights stay float32
    assert all(th.isfinite(p).all() for p in loop.model.parameters())
    assert not all(th.equal(a, b) for a, b in zip(before, loop.model.parameters()))


def test_logger_averages_and_widens_the_csv(tmp_path):
    log = logger.configure(str(tmp_path), format_strs=["csv", "log"])
    for value in (1.0, 2.0, 6.0):
        logger.logkv_mean("loss", value)
    logger.logkv("step", 1)
    assert logger.dumpkvs() == {"loss": 3.0, "step": 1}
    logger.logkv("step", 2)
    logger.logkv("grad_norm", 0.5)  # a key the header lacks
    logger.dumpkvs()
    log.close()
    with open(tmp_path / "progress.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows == [
        {"step": "1", "grad_norm": "", "loss": "3.0"},
        {"step": "2", "grad_norm": "0.5", "loss": ""},
    ]
    assert "step 1 | loss 3" in (tmp_path / "log.txt").read_text()


def test_resume_finds_the_latest_complete_checkpoint(tmp_path):
    for name in (
        "model000009.pt",
        "model000100.pt",
        "model000010.pt",
        "opt000200.pt",
        "model000200.pt.tmp.1",
    ):
        (tmp_path / name).write_bytes(b"")
    assert find_resume_checkpoint("", str(tmp_path)) == str(tmp_path / "model000100.pt")
    assert find_resume_checkpoint("", str(tmp_path / "missing")) is None
    assert parse_resume_step_from_filename(str(tmp_path / "model000100.pt")) == 100
    assert parse_resume_step_from_filename("pretrained_256.pt") == 0  # weights to start from
    with pytest.raises(FileNotFoundError, match="resume checkpoint not found"):
        find_resume_checkpoint(str(tmp_path / "model000300.pt"), str(tmp_path))


def test_setup_dist_without_mpi4py_is_a_single_process(monkeypatch):
    from guided_diffusion import dist_util

    monkeypatch.setitem(sys.modules, "mpi4py", None)  # "import mpi4py" now raises ImportError
    dist_util.setup_dist()
    assert dist_util.get_rank() == 0 and dist_util.get_world_size() == 1 and not dist_util.is_distributed()
    assert dist_util.broadcast_object("x") == "x" and dist_util.all_gather_object(3) == [3]


def test_image_train_resizes_only_when_asked(tmp_path, data_dir, capsys):
    flags = [f"--data_dir={data_dir}", f"--log_dir={tmp_path / 'run'}", "--max_steps=1", *TINY_FLAGS]
    assert load_script("image_train").main(flags + ["--image_size=32", "--resize_data=True"]) == 0
    assert load_model_config(str(tmp_path / "run" / "model000001.pt"))["image_size"] == 32
    assert "error" not in capsys.readouterr().err


def _steps_in_csv(log_dir):
    with open(log_dir / "progress.csv", newline="") as f:
        return [int(r["step"]) for r in csv.DictReader(f)]


def _train_flags(data_dir, log_dir, max_steps):
    return [f"--data_dir={data_dir}", f"--log_dir={log_dir}", "--batch_size=2", "--save_interval=2",
            "--log_interval=1", "--lr=1e-3", "--ema_rate=0.9,0.5", f"--max_steps={max_steps}", *TINY_FLAGS]


def test_resume_skips_a_corrupt_newest_step_and_logs_each_step_once(tmp_path, data_dir):
    train = load_script("image_train").main
    reference, run = tmp_path / "reference", tmp_path / "run"
    assert train(_train_flags(data_dir, reference, 6)) == 0  # uninterrupted
    assert train(_train_flags(data_dir, run, 4)) == 0
    assert _steps_in_csv(run) == [1, 2, 3, 4]
    opt = run / "opt000004.pt"
    opt.write_bytes(opt.read_bytes()[: opt.stat().st_size // 2])  # a half-written / damaged file

    assert train(_train_flags(data_dir, run, 6)) == 0
    log = (run / "log.txt").read_text()
    assert f"not resuming from step 4: {opt} is unreadable (corrupt or truncated" in log
    assert f"resuming from {run / 'model000002.pt'} (step 2)" in log
    assert "dropped 2 rows after step 2" in log
    assert _steps_in_csv(run) == [1, 2, 3, 4, 5, 6]  # steps 3 and 4 once, from the resumed run
    # the fallback is the uninterrupted run's state at step 2, so the run repeats it exactly
    for name in ("model000006.pt", "opt000006.pt", "ema_0.5_000006.pt"):
        assert state_dicts_equal(load(run / name), load(reference / name)), name
    assert state_dicts_equal(load(run / "opt000004.pt"), load(reference / "opt000004.pt"))  # rewritten


def test_resume_search_checks_every_file_of_a_step(tmp_path, trained_run):
    log_dir, _ = trained_run
    run = tmp_path / "run"
    shutil.copytree(log_dir, run)
    messages = []

    def search(rates="0.9,0.5"):
        messages.clear()
        return find_resume_checkpoint("", str(run), ema_rates=rates, log=messages.append)

    assert search() == str(run / "model000006.pt") and messages == []
    (run / "ema_0.5_000006.pt").write_bytes(b"not a checkpoint")
    assert search() == str(run / "model000003.pt")
    assert len(messages) == 1 and messages[0].startswith(
        f"warning: not resuming from step 6: {run / 'ema_0.5_000006.pt'} is unreadable (corrupt or truncated"
    )
    (run / "opt000003.pt").unlink()  # now no step is complete, and step 6 has a corrupt file
    assert search() == str(run / "model000003.pt")
    assert "is unreadable" in messages[0] and "missing files start afresh" in messages[-1]
    # a rate added since: no step has its file; the newest step whose files load, as before the check
    assert search("0.9,0.5,0.99") == str(run / "model000003.pt")
    shutil.copy(log_dir / "ema_0.5_000006.pt", run / "ema_0.5_000006.pt")
    assert search("0.9,0.5,0.99") == str(run / "model000006.pt")
    # without ema_rates (sampling scripts) nothing is loaded: the newest name wins
    (run / "model000006.pt").write_bytes(b"")
    assert find_resume_checkpoint("", str(run)) == str(run / "model000006.pt")
    (run / "model000003.pt").write_bytes(b"\x00")
    with pytest.raises(ValueError, match=r"no step in .* can be resumed: each has an unreadable file \(the newest: "):
        search()


def test_optimizer_file_errors_say_corrupt_or_mismatched(tmp_path, data_dir, trained_run):
    log_dir, _ = trained_run
    run = tmp_path / "run"
    shutil.copytree(log_dir, run)
    (run / "opt000006.pt").write_bytes(b"\x00" * 100)
    with pytest.raises(ValueError, match=r"opt000006.pt is unreadable \(corrupt or truncated") as info:
        make_loop(run, data_dir, resume_checkpoint=str(run / "model000006.pt"))
    assert "use_fp16" not in str(info.value)
    # a readable optimizer state of other parameters
    other = th.optim.AdamW([th.nn.Parameter(th.zeros(3))])
    other.state_dict()
    th.save(other.state_dict(), run / "opt000006.pt")
    with pytest.raises(ValueError, match="does not fit this optimizer: it was saved for other parameters"):
        make_loop(run, data_dir, resume_checkpoint=str(run / "model000006.pt"))


def test_csv_rewind_drops_rows_beyond_the_resumed_step(tmp_path):
    log = logger.configure(str(tmp_path), format_strs=["csv"])
    for step in (1, 2, 3, 4):
        logger.logkv("step", step)
        logger.logkv("loss", step / 10)
        logger.dumpkvs()
    assert logger.rewind_to_step(2) == 2
    assert logger.rewind_to_step(2) == 0
    logger.logkv("step", 3)
    logger.dumpkvs()
    log.close()
    assert _steps_in_csv(tmp_path) == [1, 2, 3]
