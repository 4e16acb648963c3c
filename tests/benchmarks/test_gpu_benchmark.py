"""benchmarks/gpu.py on a machine without a GPU: its one-line exit, and every piece that runs on the CPU
(the stage chain through build_plan/payload/run_stage, epoch timing, the trial actor's training steps,
the table, the budget and the pure helpers) with CPU tensors and fake measurements."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu.py"
_spec = importlib.util.spec_from_file_location("gpu_benchmark", SCRIPT)
gpu = importlib.util.module_from_spec(_spec)
sys.modules["gpu_benchmark"] = gpu  # dataclasses look their module up while the class is made
_spec.loader.exec_module(gpu)

TINY = gpu.Sizes(stage_train=64, stage_epochs=1)
needs_no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU exit")


@pytest.mark.slow
@needs_no_gpu
@pytest.mark.parametrize("args", [[], ["--quick"]])
def test_without_a_gpu_the_script_says_so_in_one_line_and_exits_0(args):
    out = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines() == [out.stdout.strip()] and "no CUDA GPU" in out.stdout
    assert out.stderr == ""


@pytest.mark.slow
def test_an_unknown_part_is_refused():
    out = subprocess.run([sys.executable, str(SCRIPT), "--only", "stages,nope"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2 and "unknown part(s) nope" in out.stderr


def test_the_stage_chain_runs_every_stage_kind_of_the_spec_on_the_cpu():
    spec = gpu.stage_spec("mlp", TINY)
    done = gpu.run_chain(spec, "cpu")
    plan = gpu.plan_of(spec)
    assert [label for _, label, _, _ in done] == [s.label for s in plan.stages.values()]
    assert {kind for kind, *_ in done} == {"init", "warmup", "dense", "imp_level", "oneshot", "cts"}
    assert all(0 <= acc <= 1 for kind, _, _, acc in done if kind in ("oneshot", "cts"))
    summary = gpu.chain_summary(done)
    assert summary.startswith(f"{len(done)} stages (1 init, 1 warmup, 1 dense, ")
    assert "oneshot 0." in summary and "cts 0." in summary


@pytest.mark.parametrize("model", ["conv1d", "resnet20"])
def test_the_benchmark_models_build_for_their_input_shapes(model):
    from workers.models import build_model

    options, shape = gpu.MODELS[model]
    net = build_model(model, tuple(shape), 10, **options)
    assert net(torch.randn(2, *shape)).shape == (2, 10)


def test_chain_summary_reports_counts_and_the_last_point_of_each_kind():
    done = [("init", "init s=0", 0.1, None), ("imp_level", "ltr s=0 L=1", 1.0, 0.5),
            ("imp_level", "ltr s=0 L=2", 1.0, 0.75), ("cts", "cts s=0", 2.0, 0.25)]
    assert gpu.chain_summary(done) == "4 stages (1 init, 2 imp_level, 1 cts) in 4.1 s; acc imp_level 0.750, cts 0.250"


def test_time_epochs_on_the_cpu():
    data = gpu.load_data({"dataset": gpu.synthetic(64, 32, [40])}, "cpu")
    seconds = gpu.time_epochs("mlp", data, batch_size=16, epochs=2)
    assert 0 < seconds < 60


def test_the_benchmark_trial_actor_trains_timed_steps_on_the_cpu():
    actor = gpu.BenchTrial(1, 0.0, tempfile.mkdtemp())
    assert actor.device == "cpu"
    assert actor.warm_up(gpu.synthetic(64, 32, [3, 8, 8]), batch_size=16, seed=0)
    start, end = actor.timed_steps(5)
    assert start <= end
    assert sum(p.numel() for p in actor.model.parameters()) > 0


def test_relative_error_by_hand_and_the_unit_roundoffs_behind_the_tolerances():
    ref = torch.tensor([3.0, 4.0])
    assert gpu.relative_error(ref + torch.tensor([0.3, 0.4]), ref) == pytest.approx(0.1)
    assert gpu.relative_error(ref, ref) == 0.0
    x = torch.randn(10_000, generator=torch.Generator().manual_seed(0))
    # Rounding to nearest: at most half an ulp, i.e. the unit roundoff 2^-8 (bf16) and 2^-11 (fp16).
    assert gpu.relative_error(x.bfloat16(), x) <= 2 ** -8
    assert gpu.relative_error(x.half(), x) <= 2 ** -11
    assert gpu.FORWARD_TOLERANCE["bf16"] >= 10 * 2 ** -8 and gpu.FORWARD_TOLERANCE["fp16"] >= 10 * 2 ** -11


def test_accuracy_agreement_uses_the_larger_of_the_tolerance_and_twice_the_spread():
    assert gpu.accuracy_agrees(0.90, 0.94, spread=0.0)                     # within 0.05
    assert not gpu.accuracy_agrees(0.88, 0.94, spread=0.01)               # 0.06 > max(0.05, 0.02)
    assert gpu.accuracy_agrees(0.88, 0.94, spread=0.04)                   # 0.06 <= 0.08
    assert not gpu.accuracy_agrees(float("nan"), 0.94, spread=0.0)


def test_trials_that_fit_and_samples_per_second_by_hand():
    gib = 2 ** 30
    # 0.95 x 80 GiB = 76 GiB over (3 + 0.5) GiB a trial: 21.7, so 21
    assert gpu.trials_that_fit(80 * gib, 3 * gib, gib // 2) == 21
    assert gpu.trials_that_fit(80 * gib, 0, 0) == 0
    assert gpu.samples_per_s(4, 300, 128, 10.0) == pytest.approx(15360.0)
    assert gpu.gib(3 * gib / 2) == "1.50 GiB"


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_runner_records_failures_and_skips_and_goes_on():
    clock, echoed = FakeClock(), []
    runner = gpu.Runner(gpu.Budget(100, clock), echo=echoed.append)
    ran = []

    def boom(r):
        r.add(gpu.Row("a", "first", "1.0 s"))
        raise RuntimeError("CUDA out of memory.\nTried to allocate 2 GiB")

    def slow(r):
        ran.append("slow")
        clock.now += 90

    runner.part("a", 10, boom)
    runner.part("b", 10, slow)
    runner.part("c", 20, lambda r: ran.append("c"))   # 10 s left: skipped
    assert ran == ["slow"]
    assert [(r.part, r.check, r.status) for r in runner.rows] == [
        ("a", "first", "ok"), ("a", "(part stopped)", "FAILED"), ("c", "(whole part)", "skipped")]
    assert runner.rows[1].result == "RuntimeError: CUDA out of memory."
    assert runner.rows[2].result == "needs ~20 s, 10 s left"
    assert len(echoed) == 3


def test_the_table_is_aligned_and_counts_outcomes():
    rows = [gpu.Row("stages", "mlp on cuda", "9 stages in 3.1 s"),
            gpu.Row("precision", "bf16 forward vs fp32", "relative error 3.1e-03", "FAILED"),
            gpu.Row("packing", "8 at once", "20 s left", "skipped")]
    lines = gpu.format_table(rows, "GPU benchmark: fake").splitlines()
    assert lines[0] == "GPU benchmark: fake"
    assert lines[1].split() == ["part", "check", "result", "status"]
    assert set(lines[2]) == {"-"}
    body = lines[3:6]
    starts = {line.index(r.check) for line, r in zip(body, rows)}
    assert len(starts) == 1                      # the check column starts at one place in every row
    assert [line.split()[-1] for line in body] == ["ok", "FAILED", "skipped"]
    assert lines[-1] == "1 ok, 1 failed, 1 skipped"
