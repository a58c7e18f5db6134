"""The trainer: AdamW with linear warm-up, fixed seeds, live progress, periodic evaluation,
interruptible and resumable, with atomic checkpoints.

Reproducibility: the model is initialised from `seed`, and the batch of step `s` is
`task.batch(batch_size, seed, s)` (a pure function of the step), so a run that is interrupted and
resumed computes exactly the same updates as one that was not (bit-for-bit on the same device).

Files (all written atomically: temporary file + `os.replace`):

- resumable checkpoint (`save_checkpoint`): one safetensors file with the model weights
  (`model.<name>`) and AdamW's state (`optim.<name>.exp_avg`, `.exp_avg_sq`, `.step`); the
  trainer state (step, history, configs) as JSON in its metadata. Loaded with safetensors only:
  nothing is unpickled.
- model files (`save_model`): `cw.save` files, loadable with `cw.load`, whose metadata also holds
  the recipe, the training config, the data description and the metrics history.

Ctrl-C (SIGINT) sets a flag that the loop checks after each complete step; the trainer then writes
the resumable checkpoint and returns, so an interrupt never leaves a half-updated state.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch
import torch.nn.functional as F

from ..model import ModelConfig, Transformer
from ..model.io import atomic_save_safetensors as _atomic_save_safetensors
from ..model.io import atomic_write_bytes
from ..model.io import save as save_model_file
from .tasks import Task

CHECKPOINT_FORMAT = "circwidgets-train-checkpoint-1"


@dataclass
class TrainConfig:
    """Optimisation settings. `lr` is reached after `warmup` linear steps, then held constant
    (`schedule="constant"`), cosine-decayed to `lr * min_lr_frac` at `steps` (`"cosine"`), or held
    constant and decayed linearly to `lr * min_lr_frac` over the last `decay_steps` steps (`"wsd"`,
    warm-up / stable / decay: its stable part is a constant-lr run, so a constant-lr run can be
    continued into a decay without changing any step it has taken).

    Snapshots are log-spaced over `snapshot_span` steps (default `steps`) and kept up to `steps`:
    a run cut short of its first plan keeps the snapshot steps it already has."""

    steps: int = 1000
    batch_size: int = 32
    lr: float = 1e-3
    warmup: int = 100
    schedule: str = "constant"
    min_lr_frac: float = 0.1
    decay_steps: int = 0  # "wsd" only: length of the final linear decay
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.99)
    grad_clip: float | None = 1.0
    seed: int = 0
    eval_every: int = 100
    checkpoint_every: int = 500
    n_snapshots: int = 0  # log-spaced model snapshots kept along the way (0 = none)
    snapshot_dtype: str = "float32"
    eval_batches: int = 4
    icl_seq_len: int | None = None  # repeated-token eval: one block length (None: the engine's sweep)
    icl_n_seqs: int = 16
    # several block lengths (e.g. 10, 23, 50, 100): head scores are averaged over them, so a head that
    # attends a fixed distance back (right for one length only) does not pass for an induction head;
    # both None: the engine's sweep (engine.REPEAT_LENS cut to n_ctx)
    icl_seq_lens: tuple[int, ...] | None = None
    snapshot_span: int | None = None  # steps the snapshots are log-spaced over (None: `steps`)
    # "bfloat16": the training forward pass runs under torch.autocast (matmuls in bfloat16, weights, AdamW
    # state and the loss in float32). On a CPU with AVX512-BF16 / AMX a step takes ~0.6x the time; the
    # evaluations (held-out loss, head scores) always run in float32. None: float32 throughout.
    autocast: str | None = None

    SCHEDULES = ("constant", "cosine", "wsd")
    AUTOCAST = (None, "bfloat16")  # no float16: without a gradient scaler its small gradients underflow

    SNAPSHOT_DTYPES = ("float32", "float16", "bfloat16", "float64")

    def __post_init__(self) -> None:
        def integer(name: str, lo: int) -> None:
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < lo:
                raise ValueError(f"{name}={v!r} must be an integer >= {lo}")

        def number(name: str, lo: float) -> None:
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v < lo:
                raise ValueError(f"{name}={v!r} must be a finite number >= {lo:g}")

        for name, lo in (("steps", 1), ("batch_size", 1), ("warmup", 0), ("decay_steps", 0), ("seed", -(2**63)),
                         ("eval_every", 1), ("checkpoint_every", 1), ("n_snapshots", 0), ("eval_batches", 1),
                         ("icl_n_seqs", 1)):
            integer(name, lo)
        number("lr", 0.0)
        number("weight_decay", 0.0)
        if self.grad_clip is not None:
            number("grad_clip", 0.0)
        for name in ("betas", "icl_seq_lens"):  # JSON (`--set train.betas=[0.9, 0.95]`) gives lists
            if isinstance(getattr(self, name), list):
                setattr(self, name, tuple(getattr(self, name)))
        if self.icl_seq_len is not None:
            integer("icl_seq_len", 2)
        lens = self.icl_seq_lens
        if lens is not None and not (isinstance(lens, tuple) and lens and all(
                isinstance(n, int) and not isinstance(n, bool) and n >= 2 for n in lens)):
            # a repeat of length 1 has no position whose token follows from context
            raise ValueError(f"icl_seq_lens={lens!r} must be a non-empty list of integers >= 2 (repeat lengths)")
        b = self.betas
        if not (isinstance(b, (tuple, list)) and len(b) == 2
                and all(isinstance(x, (int, float)) and not isinstance(x, bool) and 0 <= x < 1 for x in b)):
            raise ValueError(f"betas={b!r} must be two numbers in [0, 1)")
        if self.snapshot_dtype not in self.SNAPSHOT_DTYPES:
            raise ValueError(f"snapshot_dtype={self.snapshot_dtype!r} is not one of {self.SNAPSHOT_DTYPES}")
        if self.schedule not in self.SCHEDULES:
            raise ValueError(f"schedule={self.schedule!r} is not one of {self.SCHEDULES}")
        if self.schedule == "wsd" and not 0 < self.decay_steps <= self.steps - self.warmup:
            raise ValueError(f"decay_steps={self.decay_steps} must be in 1..steps - warmup "
                             f"({self.steps - self.warmup}) for schedule='wsd'")
        if not 0.0 <= self.min_lr_frac <= 1.0:
            raise ValueError(f"min_lr_frac={self.min_lr_frac} must be in [0, 1]")
        if self.snapshot_span is not None:
            integer("snapshot_span", 1)
        if self.autocast not in self.AUTOCAST:
            raise ValueError(f"autocast={self.autocast!r} is not one of {self.AUTOCAST}")

    def lr_at(self, step: int) -> float:
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        if self.schedule == "cosine":
            t = min(1.0, (step - self.warmup) / max(1, self.steps - self.warmup))
            return self.lr * (self.min_lr_frac + (1 - self.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * t)))
        if self.schedule == "wsd":
            t = min(1.0, max(0, step - (self.steps - self.decay_steps)) / self.decay_steps)
            return self.lr * (1 - (1 - self.min_lr_frac) * t)
        return self.lr

    def snapshot_steps(self) -> list[int]:
        """Steps at which a model snapshot is kept: 0, `steps`, and `n_snapshots - 2` more log-spaced
        from `min(50, span)` to `span` (`snapshot_span`, default `steps`), those up to `steps`."""
        if self.n_snapshots <= 0:
            return []
        span = self.snapshot_span or self.steps
        n, lo = self.n_snapshots, min(50, span)
        pts = {0, self.steps}
        for i in range(n - 1):
            pts.add(int(round(lo * (span / lo) ** (i / max(1, n - 2)))))
        return sorted(p for p in pts if p <= self.steps)

    def continues(self, saved: TrainConfig, step: int) -> str | None:
        """Why this config cannot continue a run saved with `saved` at `step`, or None when it can:
        every field equal except the ones that only shape the future (`steps`, the lr schedule after
        `step`, snapshots after `step`)."""
        future = ("steps", "schedule", "min_lr_frac", "decay_steps", "snapshot_span")
        if dataclasses.replace(saved, **{f: getattr(self, f) for f in future}) != self:
            return "settings other than the steps and the future lr schedule differ"
        if any(self.lr_at(s) != saved.lr_at(s) for s in range(step)):
            return f"the lr schedule differs from the saved one before step {step}"
        if [s for s in self.snapshot_steps() if s <= step] != [s for s in saved.snapshot_steps() if s <= step]:
            return f"the snapshot steps up to step {step} differ from the saved run's"
        return None

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        d = dict(d)
        for k in ("betas", "icl_seq_lens"):
            if d.get(k) is not None:
                d[k] = tuple(d[k])
        return cls(**d)


def lm_loss(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy (nats): logits `[batch, pos, vocab]`, tokens `[batch, pos]`."""
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), tokens[:, 1:].flatten())


class TrainingDivergedError(RuntimeError):
    """The training loss or the weights became NaN / inf: the run stopped without saving that state."""


class _InterruptFlag:
    """Turns SIGINT and SIGTERM into a flag for the duration of a `with` block (main thread only): the
    loop stops at the end of the step and writes its checkpoint, so `kill PID` of a background run (or a
    machine shutting down) loses no steps. A second SIGINT exits at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.set = False

    @contextlib.contextmanager
    def installed(self):
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        old = {s: signal.getsignal(s) for s in self.SIGNALS}

        def handler(signum, frame):
            if self.set and signum == signal.SIGINT:  # second Ctrl-C: the user really wants out
                signal.signal(signal.SIGINT, old[signal.SIGINT])
                raise KeyboardInterrupt
            self.set = True

        for s in self.SIGNALS:
            signal.signal(s, handler)
        try:
            yield self
        finally:
            for s, h in old.items():
                signal.signal(s, h)


class TrainerCallback(Protocol):
    """What a trainer calls, in order: `on_train_begin(trainer)` when a `train()` run starts,
    `on_step(trainer, running_loss)` every 10 steps, `on_eval(trainer, record)` after each evaluation
    (the record `history` gets), `on_train_end(trainer)` when the run ends for any reason (finished,
    `request_stop()` / Ctrl-C, time limit, error). Every method is optional."""

    def on_train_begin(self, trainer: Trainer) -> None: ...
    def on_step(self, trainer: Trainer, loss: float) -> None: ...
    def on_eval(self, trainer: Trainer, record: dict) -> None: ...
    def on_train_end(self, trainer: Trainer) -> None: ...


CallbackFactory = Callable[["Trainer"], list]
_DEFAULT_CALLBACK_FACTORIES: list[CallbackFactory] = []


def register_default_callbacks(factory: CallbackFactory) -> CallbackFactory:
    """Register `factory(trainer) -> [callbacks]`, asked by every trainer built with `callbacks=None`
    when a run starts. This is how a layer above adds to training without `train` importing it: the
    widgets layer registers its notebook monitor (`circwidgets.widgets.monitor`). Registering the same
    factory twice has no effect. Returns the factory (usable as a decorator)."""
    if factory not in _DEFAULT_CALLBACK_FACTORIES:
        _DEFAULT_CALLBACK_FACTORIES.append(factory)
    return factory


def default_callbacks(trainer: Trainer) -> list:
    """The callbacks of every registered factory. A factory that fails gives none (with a warning):
    a monitor must never stop training."""
    out: list = []
    for factory in _DEFAULT_CALLBACK_FACTORIES:
        try:
            out += list(factory(trainer))
        except Exception as e:  # noqa: BLE001 - e.g. no front end: train with plain progress bars
            import warnings

            warnings.warn(f"no {getattr(factory, '__qualname__', factory)} callbacks: {e}", stacklevel=3)
    return out


def _call(callbacks, event: str, *args) -> None:
    for cb in callbacks or ():
        fn = getattr(cb, event, None)
        if fn is not None:
            fn(*args)


@dataclass
class Trainer:
    """Train `model` on `task`.

    `extra_metadata` (str -> str) is written into every model file (recipe name, data description,
    tokenizer JSON, ...). `out_dir` holds `checkpoint.safetensors` (resumable), `model.safetensors`
    (final), `snapshots/step_XXXXXX.safetensors` and `metrics.json`.
    """

    model: Transformer
    task: Task
    config: TrainConfig
    out_dir: str | os.PathLike | None = None
    extra_metadata: dict[str, str] = field(default_factory=dict)
    device: str | torch.device = "cpu"
    progress: bool = True
    time_limit: float | None = None  # seconds of training after which the run stops (and saves)
    eval_fn: Callable[[Trainer], dict] | None = None  # extra metrics merged into each eval record
    # `TrainerCallback`s; None: those of the registered factories (`register_default_callbacks`), e.g. a
    # live monitor when training in a notebook
    callbacks: list[TrainerCallback] | None = None

    def __post_init__(self) -> None:
        self.device = torch.device(self.device)
        self.model = self.model.to(self.device)
        self.step = 0
        self.history: list[dict] = []
        self.tokens_seen = 0
        self.train_seconds = 0.0
        self.stopped_by: str | None = None
        self._running = (0.0, 0)  # sum and count of training losses since the last evaluation
        self.optimizer = self._make_optimizer()
        self._interrupt = _InterruptFlag()
        self._check_eval_lengths()

    def _check_eval_lengths(self) -> None:
        """The in-context evaluation's repeat lengths fit the model (`BOS + r + r` within n_ctx): refused
        here, before any step, rather than at the first evaluation."""
        from ..engine.heads import induction_tokens

        c = self.config
        for n in c.icl_seq_lens or ((c.icl_seq_len,) if c.icl_seq_len is not None else ()):
            try:
                induction_tokens(self.model, n)
            except ValueError as e:
                raise ValueError(f"train.icl_seq_len(s): repeat length {n} does not fit this model: {e}") from None

    def request_stop(self) -> None:
        """Stop the current `train()` run after the step in progress, as Ctrl-C does (`stopped_by`
        "interrupt", resumable checkpoint written when there is an `out_dir`). Safe to call from another
        thread or a callback; a run started later is not affected."""
        self._interrupt.set = True

    # ------------------------------------------------------------------ optimiser
    def _param_names(self) -> list[str]:
        return [n for n, _ in self.model.named_parameters()]

    def _make_optimizer(self) -> torch.optim.AdamW:
        c = self.config
        # no weight decay on embeddings' positions? keep one group: these models are tiny and
        # the same rule for every weight keeps the circuits comparable.
        kw = {"fused": True} if self.device.type == "cuda" else {}
        return torch.optim.AdamW(self.model.parameters(), lr=c.lr, betas=c.betas, weight_decay=c.weight_decay, **kw)

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self) -> dict:
        """Held-out loss, in-context loss on repeated random tokens, per-head induction and
        previous-token scores (engine definitions)."""
        from ..engine.heads import detection_lengths, in_context_loss, scores_by_length

        c, m = self.config, self.model
        was_training = m.training
        m.eval()
        losses = []
        for i in range(c.eval_batches):
            if hasattr(self.task, "tokens"):  # a corpus: held-out split
                toks = self.task.batch(c.batch_size, c.seed, i, split="val")
            else:  # synthetic: a seed the training stream never uses
                toks = self.task.batch(c.batch_size, c.seed + 1_000_003, i)
            losses.append(lm_loss(m(toks.to(self.device)), toks.to(self.device)).item())
        rec = {"step": self.step, "tokens": self.tokens_seen, "time": round(self.train_seconds, 2),
               "lr": c.lr_at(max(self.step - 1, 0)), "val_loss": sum(losses) / len(losses)}
        # the engine's detection sweep (several repeat lengths: engine.heads.detection_lengths)
        lens = detection_lengths(m, c.icl_seq_lens or c.icl_seq_len)
        icl = in_context_loss(m, seq_len=lens, n_seqs=c.icl_n_seqs, seed=12345)
        rec["icl_first"], rec["icl_repeated"] = icl.first, icl.repeated
        if len(lens) > 1:
            rec["icl_repeated_by_len"] = {str(n): round(r, 4) for n, (_, r) in icl.by_length.items()}
        if m.cfg.n_layers:
            scs = scores_by_length(m, lens, n_seqs=c.icl_n_seqs, seed=12345, kinds=("previous_token", "induction"))
            ind = sum(s["induction"] for s in scs.values()) / len(scs)  # [layer, head], mean over block lengths
            prev = sum(s["previous_token"] for s in scs.values()) / len(scs)
            rec["induction"] = [[round(float(x), 4) for x in row] for row in ind]
            rec["previous_token"] = [[round(float(x), 4) for x in row] for row in prev]
            rec["max_induction"] = max(max(r) for r in rec["induction"])
            rec["max_previous_token"] = max(max(r) for r in rec["previous_token"])
            if len(lens) > 1:  # the best head's score at each length (the target: high at every length)
                best = divmod(int(ind.flatten().argmax()), ind.shape[1])
                rec["induction_by_len"] = {str(n): round(float(s["induction"][best]), 4) for n, s in scs.items()}
        if self.eval_fn is not None:
            rec.update(self.eval_fn(self))
        m.train(was_training)
        return rec

    # ------------------------------------------------------------------ training
    def train(self, steps: int | None = None) -> Trainer:
        """Train until `steps` (default `config.steps`) or the time limit; Ctrl-C stops after the
        current step and saves a resumable checkpoint. Returns self."""
        from tqdm.auto import tqdm

        c = self.config
        end = c.steps if steps is None else steps
        if self.step >= end:
            return self
        snaps = set(c.snapshot_steps())
        m, opt = self.model, self.optimizer
        self._cbs = self.callbacks if self.callbacks is not None else default_callbacks(self)
        self.stopped_by = None
        # a stop (Ctrl-C / monitor button) ends one run, not the next one; cleared before the callbacks
        # begin, so a stop requested while the run starts (`on_train_begin`) is honoured
        self._interrupt.set = False
        _call(self._cbs, "on_train_begin", self)
        m.train()
        running = torch.tensor(self._running[0], device=self.device)
        n_running = self._running[1]
        if self.step == 0 and not self.history:
            self._record(self.evaluate())
            if 0 in snaps:
                self.save_snapshot()
        t_start = time.perf_counter()
        seconds_before = self.train_seconds
        bar = tqdm(total=end, initial=self.step, desc=self.extra_metadata.get("recipe", "train"),
                   disable=not self.progress, dynamic_ncols=True, unit="step")
        try:
            with self._interrupt.installed() as flag:
                while self.step < end:
                    for g in opt.param_groups:
                        g["lr"] = c.lr_at(self.step)
                    toks = self.task.batch(c.batch_size, c.seed, self.step).to(self.device, non_blocking=True)
                    with self._deterministic():
                        with self._autocast():
                            logits = m(toks)
                        loss = lm_loss(logits, toks)
                        opt.zero_grad(set_to_none=True)
                        loss.backward()
                        if c.grad_clip:
                            torch.nn.utils.clip_grad_norm_(m.parameters(), c.grad_clip)
                        opt.step()
                    self.step += 1
                    self.tokens_seen += toks.numel()
                    running += loss.detach()
                    n_running += 1
                    bar.update(1)
                    self.train_seconds = seconds_before + time.perf_counter() - t_start
                    saves = (self.step % c.eval_every == 0 or self.step == c.steps or self.step in snaps
                             or (self.out_dir is not None and self.step % c.checkpoint_every == 0))
                    if saves or self.step % 10 == 0 or self.step == end or flag.set:
                        self._check_finite(running)  # before any evaluation or file sees the new weights
                    if self.step % 10 == 0 or self.step == end:
                        bar.set_postfix(loss=f"{(running / n_running).item():.3f}", refresh=False)
                        _call(self._cbs, "on_step", self, (running / n_running).item())
                    if self.step % c.eval_every == 0 or self.step == c.steps:
                        rec = self.evaluate()
                        rec["train_loss"] = (running / max(n_running, 1)).item()
                        running.zero_()
                        n_running = 0
                        self._record(rec)
                        post = {"loss": f"{rec['train_loss']:.3f}", "val": f"{rec['val_loss']:.3f}"}
                        if "max_induction" in rec:
                            post["ind"] = f"{rec['max_induction']:.2f}"
                        bar.set_postfix(post, refresh=True)
                        if not self.progress:  # logs (e.g. a batch job): one line per evaluation
                            print(f"step {self.step} t={self.train_seconds:.0f}s "
                                  + " ".join(f"{k}={v}" for k, v in post.items()), flush=True)
                    if self.step in snaps:
                        self.save_snapshot()
                    if self.out_dir is not None and self.step % c.checkpoint_every == 0:
                        self._running = (float(running.item()), n_running)  # a resume continues this mean
                        self.save_checkpoint()
                    if flag.set:
                        self.stopped_by = "interrupt"
                        break
                    if self.time_limit is not None and self.train_seconds >= self.time_limit:
                        self.stopped_by = "time_limit"
                        break
        finally:
            bar.close()
            _call(self._cbs, "on_train_end", self)
        # an interrupted run records no extra evaluation (so that resuming gives the same history
        # as an uninterrupted run); a run cut short by its time limit is over: evaluate its end.
        if self.stopped_by == "time_limit" and self.history[-1]["step"] != self.step:
            self._check_finite(running)
            rec = self.evaluate()
            if n_running:
                rec["train_loss"] = (running / n_running).item()
            self._record(rec)
            running.zero_()
            n_running = 0
        self._running = (float(running.item()), n_running)
        if self.stopped_by == "time_limit" and c.n_snapshots > 0:
            self.save_snapshot()
        if self.out_dir is not None:
            self.save_checkpoint()
            if self.stopped_by == "interrupt":
                print(f"interrupted at step {self.step}: resumable checkpoint in {self.checkpoint_path}")
        return self

    def _check_finite(self, running: torch.Tensor | None = None) -> None:
        """`TrainingDivergedError` when the running training loss or a weight is NaN / inf; nothing is
        written, so the last checkpoint on disk (from a step whose weights were finite) stays resumable."""
        if running is not None and not math.isfinite(float(running.item())):
            what = "the training loss"
        else:
            bad = [n for n, p in self.model.named_parameters() if not bool(torch.isfinite(p).all())]
            if not bad:
                return
            what = f"the weights {bad}"
        where = ""
        if self.out_dir is not None:
            ck = self.checkpoint_path
            where = (f"; the last good checkpoint ({ck}) was left as it was" if ck.exists()
                     else "; no checkpoint was written")
        where += "; start over with other settings (e.g. a lower lr) with --fresh / fresh=True"
        raise TrainingDivergedError(f"training diverged: {what} became NaN or inf by step {self.step}; stopped "
                                    f"without saving this state{where}")

    @contextlib.contextmanager
    def _deterministic(self):
        """On a CPU, one training step with PyTorch's deterministic algorithms (restored after): with more
        than one thread, the embedding's backward pass otherwise adds its gradients in a racy order, so two
        runs of the same recipe drifted apart (1e-9 after 5 steps, 2e-2 in W_E after 100)."""
        if self.device.type != "cpu":  # CUDA's deterministic mode needs CUBLAS_WORKSPACE_CONFIG: left alone
            yield
            return
        before, warn_only = torch.are_deterministic_algorithms_enabled(), \
            torch.is_deterministic_algorithms_warn_only_enabled()
        torch.use_deterministic_algorithms(True)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(before, warn_only=warn_only)

    def _autocast(self) -> contextlib.AbstractContextManager:
        c = self.config.autocast
        if c is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=getattr(torch, c))

    def _record(self, rec: dict) -> None:
        self.history.append(rec)
        _call(getattr(self, "_cbs", None), "on_eval", self, rec)
        if self.out_dir is not None:
            d = Path(self.out_dir)
            d.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(d / "metrics.json", json.dumps(self.history, indent=1).encode())

    # ------------------------------------------------------------------ files
    @property
    def checkpoint_path(self) -> Path:
        if self.out_dir is None:
            raise ValueError("this Trainer has no out_dir")
        return Path(self.out_dir) / "checkpoint.safetensors"

    def _state_json(self) -> str:
        return json.dumps({
            "step": self.step, "tokens_seen": self.tokens_seen, "train_seconds": self.train_seconds,
            "running_loss": list(self._running),
            "history": self.history, "train_config": dataclasses.asdict(self.config),
            "task": self.task.describe() if not hasattr(self.task, "tokens") else {"task": "CorpusTask"},
        })

    def save_checkpoint(self, path: str | os.PathLike | None = None) -> Path:
        """Write a resumable checkpoint (model + AdamW state + trainer state) atomically."""
        path = Path(path) if path else self.checkpoint_path
        self._check_finite()  # never replace a good checkpoint with NaN weights
        names = self._param_names()
        tensors = {f"model.{n}": p.detach().cpu().contiguous() for n, p in self.model.named_parameters()}
        sd = self.optimizer.state_dict()
        for idx, st in sd["state"].items():
            for k, v in st.items():
                tensors[f"optim.{names[idx]}.{k}"] = torch.as_tensor(v).detach().cpu().contiguous()
        groups = [{k: v for k, v in g.items() if k != "params"} for g in sd["param_groups"]]
        meta = {"format": CHECKPOINT_FORMAT, "config": self.model.cfg.to_json(), "trainer": self._state_json(),
                "param_groups": json.dumps(groups), **self.extra_metadata}
        return _atomic_save_safetensors(tensors, path, meta)

    def load_checkpoint(self, path: str | os.PathLike | None = None) -> Trainer:
        """Restore model, optimizer and trainer state from `save_checkpoint`'s file. A damaged file
        raises `ModelFileError` naming it, with how to start over."""
        path = Path(path) if path else self.checkpoint_path
        meta, tensors, state = _read_checkpoint(path, self._param_names())
        cfg = ModelConfig.from_dict(json.loads(meta["config"]))
        if cfg != self.model.cfg:
            raise ValueError(f"{path}: checkpoint config {cfg} does not match the model's {self.model.cfg}")
        saved_cfg = TrainConfig.from_dict(state["train_config"])
        why = self.config.continues(saved_cfg, state["step"])
        if why:
            raise ValueError(f"{path}: this run cannot continue the checkpoint ({why}): {saved_cfg} vs {self.config}")
        with torch.no_grad():
            for n, p in self.model.named_parameters():
                p.copy_(tensors[f"model.{n}"].to(p.device))
        names = self._param_names()
        groups = json.loads(meta["param_groups"])
        for g in groups:
            if "betas" in g:
                g["betas"] = tuple(g["betas"])
        osd = {"state": {}, "param_groups": [{**g, "params": list(range(len(names)))} for g in groups]}
        for i, n in enumerate(names):
            st = {k.rsplit(".", 1)[1]: v for k, v in tensors.items() if k.startswith(f"optim.{n}.")}
            if st:
                osd["state"][i] = st
        self.optimizer.load_state_dict(osd)
        self.step = state["step"]
        self.tokens_seen = state["tokens_seen"]
        self.train_seconds = state["train_seconds"]
        self.history = state["history"]
        self._running = (float(state["running_loss"][0]), int(state["running_loss"][1]))
        return self

    def model_metadata(self) -> dict[str, str]:
        return {**self.extra_metadata, "step": str(self.step), "tokens_seen": str(self.tokens_seen),
                "train_seconds": f"{self.train_seconds:.1f}",
                "train_config": json.dumps(dataclasses.asdict(self.config)), "metrics": json.dumps(self.history)}

    def save_model(self, path: str | os.PathLike, dtype: torch.dtype | None = None) -> Path:
        """The model as a `cw.save` file (loadable by `cw.load`) with the training record in its metadata."""
        return save_model_file(self.model, path, dtype=dtype, extra_metadata=self.model_metadata())

    def save_snapshot(self) -> Path | None:
        if self.out_dir is None:
            return None
        self._check_finite()  # a snapshot of NaN weights is never kept
        dtype = getattr(torch, self.config.snapshot_dtype)
        return self.save_model(Path(self.out_dir) / "snapshots" / f"step_{self.step:06d}.safetensors", dtype=dtype)


_RESUME_HINT = ("cannot resume from it: delete it (or pass --fresh / fresh=True) to start the run over, "
                "or copy a good checkpoint in its place")


def _read_checkpoint(path: Path, param_names: list[str]) -> tuple[dict[str, str], dict[str, torch.Tensor], dict]:
    """(metadata, tensors, trainer state) of a checkpoint, checked; `ModelFileError` naming the file,
    the problem and how to start over otherwise (never a raw safetensors or JSON error)."""
    from ..model.io import ModelFileError, read_safetensors

    def bad(why: str) -> ModelFileError:
        return ModelFileError(f"{path}: {why}; {_RESUME_HINT}")

    try:
        meta, tensors = read_safetensors(path, float_only=False)
    except ModelFileError as e:
        raise ModelFileError(f"{e}; {_RESUME_HINT}") from e
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise bad("not a circwidgets training checkpoint")
    try:
        state, *_ = (json.loads(meta[k]) for k in ("trainer", "config", "param_groups"))
    except (KeyError, ValueError) as e:
        raise bad(f"checkpoint metadata is incomplete or not JSON ({type(e).__name__}: {e})") from e
    if not isinstance(state, dict):
        raise bad("checkpoint trainer state is not a JSON object")
    for key in ("step", "tokens_seen"):
        v = state.get(key)
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise bad(f"checkpoint {key} must be an integer >= 0, got {v!r}")
    secs = state.get("train_seconds")
    if not isinstance(secs, (int, float)) or isinstance(secs, bool) or not 0 <= secs < float("inf"):
        raise bad(f"checkpoint train_seconds must be a finite number >= 0, got {secs!r}")
    run = state.get("running_loss")
    if not (isinstance(run, list) and len(run) == 2 and isinstance(run[0], (int, float)) and math.isfinite(run[0])
            and isinstance(run[1], int) and run[1] >= 0):
        raise bad(f"checkpoint running_loss must be [finite sum, count >= 0], got {run!r}")
    if not isinstance(state.get("history"), list) or not isinstance(state.get("train_config"), dict):
        raise bad("checkpoint trainer state has no history or train_config")
    try:  # a foreign, newer or damaged config: named as such, not a TypeError from the dataclass
        TrainConfig.from_dict(state["train_config"])
    except (TypeError, ValueError) as e:
        raise bad(f"checkpoint train_config is not a valid TrainConfig ({e})") from e
    missing = [n for n in param_names if f"model.{n}" not in tensors]
    if missing:
        raise bad(f"checkpoint has no weights for {missing}")
    return meta, tensors, state
