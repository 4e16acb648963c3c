"""Every GPU path on one CUDA machine, in one table: nothing to download, under 8 minutes.

    python benchmarks/gpu.py [--quick] [--budget-s 420] [--only stages,precision,...]

Parts (each in a try/except of its own: a failure is a row of the table and the next part still runs; a
global time budget skips what would not fit; the table of whatever ran is printed at the end, also on
Ctrl-C or SIGTERM):
  gpus       the GPU count a private cluster would offer (NVML, through Ray) next to torch's
  stages     init, warm-up, dense, LTR levels, one-shot and CTS stages of the MLP, the CNN (conv1d) and
             ResNet-20 on CUDA, on CIFAR-shaped synthetic data, through build_plan -> payload -> run_stage
  precision  bf16 and fp16 (GradScaler) against fp32: one forward pass, and a short training run
  actors     four 0.25-GPU trial actors on one GPU: each sees its memory cap, is held to it, runs stages
  resnet20   seconds per epoch at batch 128 and 512 on a CIFAR-sized set, and peak memory
  packing    how many ResNet-20 trials fit on the GPU, and samples/s with 1, 2, 4 and 8 trials at once
Without a CUDA GPU it prints one line saying so and exits 0. Exit code 1 if any part failed.

Tolerances of the precision part, and why:
  forward pass   ||logits - logits_fp32|| / ||logits_fp32|| <= 0.05 (bf16), <= 0.01 (fp16), with TF32 off
                 for the fp32 reference. Autocast rounds each conv/matmul input to the half type (unit
                 roundoff 2^-8 = 0.4 % for bf16, 2^-11 = 0.05 % for fp16) and accumulates in fp32, so ~20
                 layers compound to a few tenths of a percent (bf16) or less; the bounds leave an order of
                 magnitude on top. A broken path (fp16 overflow, wrong weights or dtype) is off by ~100 %.
  training       test accuracy after a short run within 0.05 of fp32 (or within twice the fp32 run-to-run
                 spread between two data orders, if that is larger). Rounding changes the SGD trajectory
                 after a few steps, so the weights are not comparable, but the accuracy they reach is.
"""
from __future__ import annotations

import argparse
import math
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

if __package__ in (None, ""):  # run as a script: the repository root, for `orchestrator` and `workers`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from orchestrator.trial_actor import TrialActorBody  # torch-free at import

# resnet20 before actors: it reads the CUDA context size off the GPU's used memory, which the actor parts'
# processes would still hold for a moment after they are killed.
PARTS = ("gpus", "stages", "precision", "resnet20", "actors", "packing")
FORWARD_TOLERANCE = {"bf16": 0.05, "fp16": 0.01}
ACCURACY_TOLERANCE = 0.05
MEMORY_HEADROOM = 0.95   # of the GPU's memory, the part trials may fill
GIB = 2 ** 30


# --------------------------------------------------------------------------- sizes

@dataclass(frozen=True)
class Sizes:
    stage_train: int = 4096        # training examples of the stage runs
    stage_epochs: int = 2
    precision_train: int = 8192
    precision_epochs: int = 4
    cifar_train: int = 50000       # CIFAR-10's sizes: what a ResNet-20 trial holds on its GPU
    cifar_test: int = 10000
    timed_epochs: int = 2
    packing_train: int = 10000
    packing_iterations: int = 300  # timed iterations per trial, batch 128
    packing_counts: tuple[int, ...] = (1, 2, 4, 8)
    actors: int = 4


QUICK = Sizes(stage_train=1024, stage_epochs=1, precision_train=4096, precision_epochs=3, cifar_train=20000,
              cifar_test=2000, timed_epochs=1, packing_train=4096, packing_iterations=120)


# --------------------------------------------------------------------------- the table

@dataclass
class Row:
    part: str
    check: str
    result: str
    status: str = "ok"   # ok | FAILED | skipped


def format_table(rows: list[Row], header: str = "") -> str:
    """One aligned table: part, check, result, status; failures and skips stand out in the status column."""
    titles = Row("part", "check", "result", "status")
    cells = [titles] + rows
    width = [max(len(getattr(r, col)) for r in cells) for col in ("part", "check", "result")]
    lines = [header] if header else []
    for i, r in enumerate(cells):
        lines.append(f"{r.part:<{width[0]}}  {r.check:<{width[1]}}  {r.result:<{width[2]}}  {r.status}".rstrip())
        if i == 0:
            lines.append("-" * (sum(width) + 6 + max(len(c.status) for c in cells)))
    counts = {s: sum(1 for r in rows if r.status == s) for s in ("ok", "FAILED", "skipped")}
    lines.append(f"{counts['ok']} ok, {counts['FAILED']} failed, {counts['skipped']} skipped")
    return "\n".join(lines)


def one_line(err: BaseException) -> str:
    text = (str(err).strip().splitlines() or [""])[0]
    return f"{type(err).__name__}: {text}"[:160]


class Budget:
    """Seconds left of the run's time budget, on an injectable clock."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic):
        self.clock, self.end = clock, clock() + seconds

    def left(self) -> float:
        return self.end - self.clock()


class Runner:
    """Runs parts in order: each gets the rows list to append to; an exception becomes a FAILED row, a part
    whose estimate exceeds the budget left becomes a skipped row."""

    def __init__(self, budget: Budget, echo: Callable[[str], None] = lambda line: print(line, file=sys.stderr)):
        self.budget, self.echo, self.rows = budget, echo, []

    def add(self, row: Row) -> None:
        self.rows.append(row)
        self.echo(f"[gpu] {row.part}: {row.check}: {row.result} {row.status if row.status != 'ok' else ''}".rstrip())

    def part(self, name: str, estimate_s: float, fn: Callable[["Runner"], None]) -> None:
        left = self.budget.left()
        if left < estimate_s:
            self.add(Row(name, "(whole part)", f"needs ~{estimate_s:.0f} s, {max(left, 0):.0f} s left", "skipped"))
            return
        try:
            fn(self)
        except Exception as err:  # noqa: BLE001 - one part's failure must not stop the others
            self.add(Row(name, "(part stopped)", one_line(err), "FAILED"))
            traceback.print_exc(file=sys.stderr)
        try:
            _free_cuda_cache()
        except Exception as err:  # noqa: BLE001 - e.g. a CUDA error that broke the context: later parts say so
            self.add(Row(name, "(cleanup)", one_line(err), "FAILED"))


def _free_cuda_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


# --------------------------------------------------------------------------- pure helpers

def relative_error(value, reference) -> float:
    """||value - reference|| / ||reference|| in float64 (tensors of any dtype and device)."""
    v, r = value.double(), reference.double()
    return float((v - r).norm() / r.norm().clamp_min(1e-30))


def accuracy_agrees(accuracy: float, reference: float, spread: float, tolerance: float = ACCURACY_TOLERANCE) -> bool:
    return math.isfinite(accuracy) and abs(accuracy - reference) <= max(tolerance, 2 * spread)


def trials_that_fit(total_bytes: int, per_trial_bytes: int, context_bytes: int,
                    headroom: float = MEMORY_HEADROOM) -> int:
    """Trial processes a GPU holds: each needs its peak reserved memory plus its own CUDA context."""
    need = per_trial_bytes + context_bytes
    return int(headroom * total_bytes // need) if need > 0 else 0


def samples_per_s(trials: int, iterations: int, batch_size: int, seconds: float) -> float:
    return trials * iterations * batch_size / seconds if seconds > 0 else float("nan")


def gib(n: float) -> str:
    return f"{n / GIB:.2f} GiB"


# --------------------------------------------------------------------------- specs and stages

def synthetic(n_train: int, n_test: int, input_shape: list[int], noise: float = 1.0) -> dict:
    return {"name": "synthetic", "options": {"n_train": n_train, "n_test": n_test, "input_shape": input_shape,
                                             "noise": noise}}


# conv1d takes (channels, length): the same 3 x 32 x 32 values, each channel as a sequence of 1024.
MODELS = {"mlp": ({"hidden": [256, 128]}, [3, 32, 32]), "conv1d": ({}, [3, 1024]), "resnet20": ({}, [3, 32, 32])}


def stage_spec(model: str, sizes: Sizes, gpus_per_trial: float = 1.0) -> dict:
    options, shape = MODELS[model]
    return {"name": f"gpu-{model}", "model": {"name": model, "options": options},
            "dataset": synthetic(sizes.stage_train, max(256, sizes.stage_train // 4), shape),
            "training": {"epochs": sizes.stage_epochs + 1, "batch_size": 128, "lr": 0.05, "rewind": "1ep"},
            "methods": [{"kind": "ltr"}, {"kind": "oneshot", "criterion": "magnitude", "score_at": "trained"},
                        {"kind": "cts", "search": 1}],
            "sparsities": [0.5], "seeds": [0], "resources": {"gpus_per_trial": gpus_per_trial}}


def plan_of(spec: dict):
    from orchestrator.plan import build_plan
    from orchestrator.spec import parse_spec

    return build_plan(parse_spec(spec))


def load_data(spec: dict, device: str):
    from workers.data.dataset import load_dataset

    cfg = spec["dataset"]
    return load_dataset(cfg["name"], cfg.get("root"), **cfg.get("options", {})).to(device)


def run_chain(spec: dict, device: str) -> list[tuple[str, str, float, float | None]]:
    """Every stage of the spec's plan in order on `device`: [(kind, label, seconds, test accuracy)].

    Raises if a stage hands on a tensor that is not on the CPU (outputs travel through Ray's object store)."""
    import torch

    from workers.stages.dispatch import run_stage

    plan = plan_of(spec)
    data = load_data(spec, device)
    outputs, done = {}, []
    for stage in plan.stages.values():
        inputs = {role: outputs[stage.parents[role]] for role in stage.inputs}
        result = run_stage(stage.payload(plan.config), inputs, data)
        for name, value in _tensors(result.outputs):
            if value.device.type != "cpu":
                raise RuntimeError(f"stage {stage.label}: output {name} is on {value.device}, not the CPU")
        outputs[stage.key] = result.outputs
        done.append((stage.kind, stage.label, result.seconds, (result.point or {}).get("test_accuracy")))
    if device == "cuda":
        torch.cuda.synchronize()
    return done


def _tensors(tree, prefix: str = ""):
    import torch

    if isinstance(tree, torch.Tensor):
        yield prefix, tree
    elif isinstance(tree, dict):
        for k, v in tree.items():
            yield from _tensors(v, f"{prefix}.{k}" if prefix else str(k))


def chain_summary(done: list[tuple[str, str, float, float | None]]) -> str:
    """'9 stages (1 init, 1 warmup, ...) in 4.2 s; acc imp_level 0.912, oneshot 0.905, cts 0.899' (the last
    point of each kind)."""
    kinds: dict[str, int] = {}
    last: dict[str, float] = {}
    for kind, _, _, acc in done:
        kinds[kind] = kinds.get(kind, 0) + 1
        if acc is not None:
            last[kind] = acc
    total = sum(s for _, _, s, _ in done)
    return (f"{len(done)} stages ({', '.join(f'{n} {k}' for k, n in kinds.items())}) in {total:.1f} s; "
            f"acc {', '.join(f'{k} {a:.3f}' for k, a in last.items())}")


def time_epochs(model_name: str, data, batch_size: int, epochs: int, seed: int = 0) -> float:
    """Seconds per epoch of `workers.training.loop.train` after a warm-up of 20 iterations (cuDNN picks its
    algorithms then); synchronised only around the timed region."""
    import torch

    from workers.models import build_model
    from workers.training.loop import Recipe, train

    device = data.x_train.device
    torch.manual_seed(seed)
    model = build_model(model_name, data.input_shape, data.num_classes).to(device)
    recipe = Recipe(epochs=epochs + 1, batch_size=batch_size, lr=0.05, eval_every=100_000)  # no evaluation
    ipe = recipe.iterations_per_epoch(len(data.x_train))
    train(model, data, recipe, seed, 0, min(20, ipe), evaluate_at_end=False)
    _sync(device)
    t0 = time.perf_counter()
    train(model, data, recipe, seed, ipe, ipe * (epochs + 1), evaluate_at_end=False)
    _sync(device)
    return (time.perf_counter() - t0) / epochs


def _sync(device) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


# --------------------------------------------------------------------------- parts

def part_gpus(r: Runner) -> None:
    import torch

    from orchestrator.cluster import _local_gpus

    nvml, torch_count = _local_gpus(), torch.cuda.device_count()
    names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch_count))
    r.add(Row("gpus", "NVML count (Ray) vs torch", f"{nvml} vs {torch_count} ({names})",
              "ok" if nvml == torch_count else "FAILED"))


def part_stages(sizes: Sizes) -> Callable[[Runner], None]:
    def run(r: Runner) -> None:
        import torch

        for model in MODELS:
            try:
                torch.cuda.reset_peak_memory_stats()
                done = run_chain(stage_spec(model, sizes), "cuda")
                peak = torch.cuda.max_memory_allocated()
                r.add(Row("stages", f"{model} on cuda", f"{chain_summary(done)}; peak {gib(peak)}"))
            except Exception as err:  # noqa: BLE001 - the next model still runs
                r.add(Row("stages", f"{model} on cuda", one_line(err), "FAILED"))
            finally:
                _free_cuda_cache()
    return run


def forward_errors(model, x) -> dict[str, float]:
    """Relative error of the logits of one eval-mode forward pass in each half precision vs fp32 (TF32 off)."""
    import torch

    from workers.training.loop import autocast_for

    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        model.eval()
        with torch.no_grad():
            reference = model(x).float()
            errors = {}
            for precision in FORWARD_TOLERANCE:
                with autocast_for(precision, x.device):
                    errors[precision] = relative_error(model(x).float(), reference)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn
        model.train()
    return errors


def part_precision(sizes: Sizes) -> Callable[[Runner], None]:
    def run(r: Runner) -> None:
        import copy

        import torch

        from workers.models import build_model
        from workers.training.loop import Recipe, train

        data = load_data({"dataset": synthetic(sizes.precision_train, 2048, [3, 32, 32], noise=1.0)}, "cuda")
        torch.manual_seed(0)
        init = build_model("resnet20", data.input_shape, data.num_classes).cuda()
        for precision, err in forward_errors(copy.deepcopy(init), data.x_test[:512]).items():
            tol = FORWARD_TOLERANCE[precision]
            r.add(Row("precision", f"{precision} forward vs fp32", f"relative error {err:.2e} (tolerance {tol:g})",
                      "ok" if err <= tol else "FAILED"))
        ipe = math.ceil(len(data.x_train) / 128)
        runs = {}
        for name, precision, seed in (("fp32", "fp32", 0), ("fp32 other order", "fp32", 1),
                                      ("bf16", "bf16", 0), ("fp16", "fp16", 0)):
            recipe = Recipe(epochs=sizes.precision_epochs, batch_size=128, lr=0.05, precision=precision)
            result = train(copy.deepcopy(init), data, recipe, seed, 0, ipe * sizes.precision_epochs)
            runs[name] = (result.test_accuracy, result.curve[-1]["train_loss"], result.seconds)
        ref, loss, seconds = runs["fp32"]
        spread = abs(runs["fp32 other order"][0] - ref)
        r.add(Row("precision", "fp32 training", f"acc {ref:.3f}, loss {loss:.3f}, {seconds:.1f} s; "
                                                f"another data order: acc {runs['fp32 other order'][0]:.3f}"))
        for name in ("bf16", "fp16"):
            acc, loss, seconds = runs[name]
            ok = accuracy_agrees(acc, ref, spread)
            r.add(Row("precision", f"{name} training vs fp32",
                      f"acc {acc:.3f} ({acc - ref:+.3f}; tolerance {max(ACCURACY_TOLERANCE, 2 * spread):.3f}), "
                      f"loss {loss:.3f}, {seconds:.1f} s", "ok" if ok else "FAILED"))
    return run


class BenchTrial(TrialActorBody):
    """A trial actor as the sweep runs it (memory cap included), plus what the benchmark asks of it."""

    def memory_cap(self) -> dict:
        """The cap it runs under, and whether the allocator holds it to it: an allocation of 1.1 x the cap
        must fail, one of 0.5 x the cap must succeed."""
        import torch

        total = torch.cuda.get_device_properties(0).total_memory
        fraction = torch.cuda.get_per_process_memory_fraction()
        cap = fraction * total
        over_refused = under_ok = False
        try:
            block = torch.empty(int(1.1 * cap) // 4, dtype=torch.float32, device="cuda")
            del block
        except torch.cuda.OutOfMemoryError:
            over_refused = True
        try:
            block = torch.empty(int(0.5 * cap) // 4, dtype=torch.float32, device="cuda")
            torch.cuda.synchronize()
            under_ok = True
            del block
        except torch.cuda.OutOfMemoryError:
            pass
        torch.cuda.empty_cache()
        return {"pid": os.getpid(), "device": self.device, "fraction": fraction, "cap": cap,
                "over_refused": over_refused, "under_ok": under_ok}

    def warm_up(self, dataset: dict, batch_size: int, seed: int) -> bool:
        """Data on the device, a fresh ResNet-20 and 20 steps (cuDNN's algorithm search) before timing."""
        import torch

        from workers.models import build_model
        from workers.training.loop import Recipe, train

        self.data = self._dataset(dataset)
        torch.manual_seed(seed)
        self.model = build_model("resnet20", self.data.input_shape, self.data.num_classes).to(self.device)
        self.recipe = Recipe(epochs=100_000, batch_size=batch_size, lr=0.05, eval_every=100_000)  # no evaluation
        self.seed = seed
        train(self.model, self.data, self.recipe, seed, 0, 20, evaluate_at_end=False)
        _sync(self.device)
        return True

    def timed_steps(self, iterations: int) -> tuple[float, float]:
        """(start, end) wall-clock time of `iterations` training steps, comparable across processes."""
        from workers.training.loop import train

        _sync(self.device)
        start = time.time()
        train(self.model, self.data, self.recipe, self.seed, 20, 20 + iterations, evaluate_at_end=False)
        _sync(self.device)
        return start, time.time()


class PrivateRay:
    """A private loopback cluster for the actor parts, started on first use, stopped at the end."""

    def __init__(self):
        self.ray = None

    def get(self):
        if self.ray is None:
            import ray

            from orchestrator import cluster

            os.environ.pop("RAY_ADDRESS", None)  # this benchmark's own cluster, never a shared one
            cluster.connect(None, dashboard=False)
            self.ray = ray
        return self.ray

    def stop(self) -> None:
        if self.ray is not None:
            self.ray.shutdown()
            self.ray = None


def _actor_class(ray, gpu_share: float):
    return ray.remote(num_cpus=1, num_gpus=gpu_share)(BenchTrial)


def _kill(ray, actors) -> None:
    for a in actors:
        ray.kill(a)


def part_actors(sizes: Sizes, cluster: PrivateRay, budget: Budget, scratch: str) -> Callable[[Runner], None]:
    def run(r: Runner) -> None:
        ray = cluster.get()
        share = 1.0 / sizes.actors
        # A store each: four actors saving the same stage's artifact at once would race for one file.
        actors = [_actor_class(ray, share).remote(1, share, tempfile.mkdtemp(dir=scratch))
                  for _ in range(sizes.actors)]
        try:
            timeout = max(30.0, budget.left())
            caps = [ray.get(a.memory_cap.remote(), timeout=timeout) for a in actors]  # one at a time
            for i, c in enumerate(caps):
                ok = (c["device"] == "cuda" and abs(c["fraction"] - share) < 1e-6 and c["over_refused"]
                      and c["under_ok"])
                r.add(Row("actors", f"actor {i} memory cap",
                          f"pid {c['pid']} {c['device']}, fraction {c['fraction']:.3f} = {gib(c['cap'])}; "
                          f"1.1x cap refused: {c['over_refused']}, 0.5x cap allowed: {c['under_ok']}",
                          "ok" if ok else "FAILED"))
            spec = stage_spec("resnet20", sizes, gpus_per_trial=share)
            plan = plan_of(spec)
            init, warm = [s for s in plan.stages.values() if s.kind in ("init", "warmup")][:2]
            t0 = time.perf_counter()
            firsts = ray.get([a.run.remote(init.payload(plan.config), []) for a in actors], timeout=timeout)
            metas = ray.get([a.run.remote(warm.payload(plan.config), ["init"], outputs)
                             for a, (_, outputs) in zip(actors, firsts)], timeout=timeout)
            wall = time.perf_counter() - t0
            for i, ((meta0, _), (meta, _)) in enumerate(zip(firsts, metas)):
                cap_mb = caps[i]["cap"] / 2 ** 20
                ok = (meta0["status"] == meta["status"] == "ok" and meta["device"] == "cuda"
                      and (meta["cuda_peak_mb"] or 0) <= cap_mb)
                detail = (f"{meta['status']} on {meta['device']}, {meta['seconds']:.1f} s, CUDA peak "
                          f"{meta['cuda_peak_mb'] or 0:.0f} MiB of {cap_mb:.0f}"
                          + ("" if meta["status"] == "ok" else f": {meta.get('error', '')[:80]}"))
                r.add(Row("actors", f"actor {i} ran init + warm-up", detail, "ok" if ok else "FAILED"))
            r.add(Row("actors", f"{sizes.actors} at once", f"{wall:.1f} s wall for {2 * sizes.actors} stages"))
        finally:
            _kill(ray, actors)


def part_resnet20(sizes: Sizes, measured: dict) -> Callable[[Runner], None]:
    def run(r: Runner) -> None:
        import torch

        free, total = torch.cuda.mem_get_info()
        measured["total"] = total
        measured["context"] = max(0, (total - free) - torch.cuda.memory_reserved())
        for batch in (128, 512):
            _free_cuda_cache()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            data = load_data({"dataset": synthetic(sizes.cifar_train, sizes.cifar_test, [3, 32, 32])}, "cuda")
            seconds = time_epochs("resnet20", data, batch, sizes.timed_epochs)
            peak, reserved = torch.cuda.max_memory_allocated() - base, torch.cuda.max_memory_reserved()
            measured.setdefault("per_trial", {})[batch] = reserved
            r.add(Row("resnet20", f"batch {batch}",
                      f"{seconds:.2f} s/epoch ({sizes.cifar_train} samples and one test pass, "
                      f"{sizes.cifar_train / seconds:,.0f} samples/s); peak {gib(peak)} allocated, "
                      f"{gib(reserved)} reserved (data included)"))
            del data
    return run


def part_packing(sizes: Sizes, measured: dict, cluster: PrivateRay, budget: Budget,
                 scratch: str) -> Callable[[Runner], None]:
    def run(r: Runner) -> None:
        if "per_trial" in measured:
            per_trial, context, total = measured["per_trial"][128], measured["context"], measured["total"]
            fit = trials_that_fit(total, per_trial, context)
            r.add(Row("packing", "ResNet-20 trials that fit",
                      f"{fit} (GPU {gib(total)} x {MEMORY_HEADROOM:g} / ({gib(per_trial)} peak reserved at batch "
                      f"128 + {gib(context)} CUDA context)); gpus_per_trial >= {1 / max(fit, 1):.3f}"))
        else:
            r.add(Row("packing", "ResNet-20 trials that fit", "needs the resnet20 part's peak memory", "skipped"))
        ray = cluster.get()
        dataset = synthetic(sizes.packing_train, 1000, [3, 32, 32])
        single = None
        for n in sizes.packing_counts:
            if budget.left() < 25 + 4 * n:
                r.add(Row("packing", f"{n} at once", f"{budget.left():.0f} s left", "skipped"))
                continue
            share = 1.0 / n
            actors = [_actor_class(ray, share).remote(1, share, tempfile.mkdtemp(dir=scratch))
                      for _ in range(n)]
            try:
                timeout = max(30.0, budget.left())
                ray.get([a.warm_up.remote(dataset, 128, i) for i, a in enumerate(actors)], timeout=timeout)
                spans = ray.get([a.timed_steps.remote(sizes.packing_iterations) for a in actors], timeout=timeout)
                wall = max(e for _, e in spans) - min(s for s, _ in spans)
                rate = samples_per_s(n, sizes.packing_iterations, 128, wall)
                single = rate if n == 1 else single
                scale = f", {rate / single:.2f}x one trial" if single else ""
                r.add(Row("packing", f"{n} at once ({share:.3f} GPU each)",
                          f"{rate:,.0f} samples/s ({sizes.packing_iterations} steps of 128 each in {wall:.1f} s{scale})"))
            except Exception as err:  # noqa: BLE001 - fewer or more trials may still work
                r.add(Row("packing", f"{n} at once", one_line(err), "FAILED"))
            finally:
                _kill(ray, actors)
    return run


# --------------------------------------------------------------------------- main

def no_gpu_line() -> str | None:
    """The one line to print where this machine has no usable CUDA GPU, else None."""
    import torch

    if not torch.cuda.is_available():
        return (f"benchmarks/gpu.py: no CUDA GPU here (torch {torch.__version__}, "
                f"torch.cuda.is_available() is False): nothing to benchmark")
    return None


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (about half the time)")
    parser.add_argument("--budget-s", type=float, default=420.0, help="stop starting parts after this many seconds")
    parser.add_argument("--only", default=",".join(PARTS), help=f"comma-separated parts of: {', '.join(PARTS)}")
    args = parser.parse_args(argv)
    only = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = sorted(set(only) - set(PARTS))
    if unknown:
        parser.error(f"--only: unknown part(s) {', '.join(unknown)}; known: {', '.join(PARTS)}")
    line = no_gpu_line()
    if line:
        print(line)
        return 0

    import torch

    sizes = QUICK if args.quick else Sizes()
    budget = Budget(args.budget_s)
    runner = Runner(budget)
    cluster, measured = PrivateRay(), {}
    scratch = tempfile.mkdtemp(prefix="gpu-bench-")  # the trial actors' stores
    t0 = time.perf_counter()
    # SIGTERM (a timeout, a scheduler) takes the Ctrl-C path, so the table of what ran still prints.
    signal.signal(signal.SIGTERM, _interrupt)
    parts = {"gpus": (5, part_gpus), "stages": (60, part_stages(sizes)), "precision": (40, part_precision(sizes)),
             "actors": (60, part_actors(sizes, cluster, budget, scratch)),
             "resnet20": (40, part_resnet20(sizes, measured)),
             "packing": (90, part_packing(sizes, measured, cluster, budget, scratch))}
    props = torch.cuda.get_device_properties(0)
    header = (f"GPU benchmark: {props.name}, {gib(props.total_memory)}, torch {torch.__version__}, "
              f"CUDA {torch.version.cuda}{', quick sizes' if args.quick else ''}")
    try:
        for name in PARTS:
            if name in only:
                estimate, fn = parts[name]
                runner.part(name, estimate, fn)
    except KeyboardInterrupt:
        runner.rows.append(Row("(run)", "interrupted", f"after {time.perf_counter() - t0:.0f} s", "skipped"))
    finally:
        try:
            cluster.stop()
        except Exception as err:  # noqa: BLE001 - the table matters more
            runner.rows.append(Row("(run)", "ray shutdown", one_line(err), "FAILED"))
        shutil.rmtree(scratch, ignore_errors=True)
        print(format_table(runner.rows, header + f"; {time.perf_counter() - t0:.0f} s"))
    return 1 if any(r.status == "FAILED" for r in runner.rows) else 0


if __name__ == "__main__":
    sys.exit(main())
