"""Learning-rate schedules: PyTorch's LinearLR, CosineAnnealingLR and LambdaLR, and Ho et al.'s
LinearWarmup (the Trainer's).

The PyTorch ones behave as torch.optim.lr_scheduler's: built on an optimizer, they note each
group's lr as "initial_lr" (base_lrs) and set the lr of epoch 0; each step() then sets every
param group's lr for the next epoch, k = last_epoch:

    LinearLR           lr_k = base · (s + (e - s) · min(k, n) / n)      s, e, n: start_factor,
                                                                        end_factor, total_iters
    CosineAnnealingLR  lr_k = η_min + (base - η_min) · (1 + cos(π k / T_max)) / 2
                       (Loshchilov & Hutter 2017, SGDR, eq. 5, without restarts)
    LambdaLR           lr_k = base · f(k)

Each lr is computed from the closed form above (PyTorch's recursive form is the same number up
to rounding), so an lr set by hand lasts until the next step(). state_dict() holds JSON-able
numbers only: LambdaLR's functions are not saved (PyTorch pickles callable objects); build it
with the same functions, then load_state_dict.
"""
import math

from ..validate import check_int, check_number
from .optimizer import Optimizer


class LRScheduler:
    """What the schedules share: base_lrs, last_epoch, step(), get_last_lr(), checkpoints.
    A subclass gives lr_at(k) (every group's lr at epoch k) and `hyper_names`, the constructor
    arguments its state_dict keeps, which `_checked(**hyper)` checks."""

    hyper_names = ()

    def __init__(self, optimizer, last_epoch=-1):
        name = type(self).__name__
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{name}: {type(optimizer).__name__} is not an optimizer of "
                            "minidiff.optim (SGD, Adam, AdamW)")
        self.optimizer = optimizer
        last_epoch = check_int(f"{name}: last_epoch", last_epoch, -1)
        for i, group in enumerate(optimizer.param_groups):
            if last_epoch == -1:
                group.setdefault("initial_lr", group["lr"])
            elif "initial_lr" not in group:
                raise ValueError(f"{name}: last_epoch={last_epoch} resumes a schedule, but "
                                 f"param_groups[{i}] has no 'initial_lr'; pass last_epoch=-1 "
                                 "and load_state_dict")
        self.base_lrs = [check_number(f"{name}: param_groups[{i}]['initial_lr']",
                                      g["initial_lr"], 0.0)
                         for i, g in enumerate(optimizer.param_groups)]
        self.last_epoch = last_epoch
        self.step()                                            # the lr of epoch last_epoch + 1

    def step(self):
        """Next epoch: set every param group's lr to the schedule's; call after opt.step()."""
        self.last_epoch += 1
        self._last_lr = self.lr_at(self.last_epoch)
        for group, lr in zip(self.optimizer.param_groups, self._last_lr):
            group["lr"] = lr

    def get_last_lr(self):
        """The lrs the last step() set, one per param group."""
        return list(self._last_lr)

    def state_dict(self):
        """{"kind", the constructor's arguments, "base_lrs", "last_epoch"}: JSON-able."""
        return {"kind": type(self).__name__, **{k: getattr(self, k) for k in self.hyper_names},
                "base_lrs": list(self.base_lrs), "last_epoch": self.last_epoch}

    def load_state_dict(self, sd):
        """All or nothing; the optimizer's lrs are its own state_dict's, as in PyTorch."""
        name = type(self).__name__
        try:
            expected = {"kind", "base_lrs", "last_epoch", *self.hyper_names}
            missing, unexpected = sorted(expected - set(sd)), sorted(set(sd) - expected)
            if missing or unexpected:
                raise ValueError(f"missing {missing}, unexpected {unexpected}")
            if sd["kind"] != name:
                raise ValueError(f"state is for {sd['kind']!r}, not {name}")
            hyper = self._checked(**{k: sd[k] for k in self.hyper_names})
            last_epoch = check_int("last_epoch", sd["last_epoch"], 0)
            n, base = len(self.base_lrs), sd["base_lrs"]
            if not isinstance(base, (list, tuple)) or len(base) != n:
                raise ValueError(f"base_lrs: need a list of {n} lrs, got {base!r:.60}")
            base = [check_number(f"base_lrs[{i}]", b, 0.0) for i, b in enumerate(base)]
        except ValueError as e:
            raise ValueError(f"{name}.load_state_dict: nothing was loaded; {e}") from None
        vars(self).update(hyper, base_lrs=base, last_epoch=last_epoch)
        self._last_lr = self.lr_at(last_epoch)
        return self

    def _checked(self):
        return {}


class LinearLR(LRScheduler):
    """lr_k = base · (start_factor + (end_factor - start_factor) · min(k, total_iters) /
    total_iters): a linear warm-up from base · start_factor, then base · end_factor."""

    hyper_names = ("start_factor", "end_factor", "total_iters")

    def __init__(self, optimizer, start_factor=1.0 / 3, end_factor=1.0, total_iters=5,
                 last_epoch=-1):
        vars(self).update(self._checked(start_factor, end_factor, total_iters))
        super().__init__(optimizer, last_epoch)

    def _checked(self, start_factor, end_factor, total_iters):
        return {"start_factor": check_number("LinearLR: start_factor", start_factor, 0.0, 1.0,
                                             lo_open=True),
                "end_factor": check_number("LinearLR: end_factor", end_factor, 0.0, 1.0),
                "total_iters": check_int("LinearLR: total_iters", total_iters, 1)}

    def lr_at(self, k):
        """Every param group's lr at epoch k."""
        s, e, n = self.start_factor, self.end_factor, self.total_iters
        m = min(k, n)                                          # s + (e - s)·m/n, written so
        return [base * (s * (n - m) + e * m) / n for base in self.base_lrs]   # it is >= 0


class CosineAnnealingLR(LRScheduler):
    """lr_k = eta_min + (base - eta_min) · (1 + cos(π k / T_max)) / 2 (Loshchilov & Hutter
    2017, eq. 5): from base at k = 0 down to eta_min at k = T_max (and back up after it, as
    PyTorch's)."""

    hyper_names = ("T_max", "eta_min")

    def __init__(self, optimizer, T_max, eta_min=0.0, last_epoch=-1):
        vars(self).update(self._checked(T_max, eta_min))
        super().__init__(optimizer, last_epoch)

    def _checked(self, T_max, eta_min):
        return {"T_max": check_int("CosineAnnealingLR: T_max", T_max, 1),
                "eta_min": check_number("CosineAnnealingLR: eta_min", eta_min, 0.0)}

    def lr_at(self, k):
        """Every param group's lr at epoch k."""
        cos = (1 + math.cos(math.pi * k / self.T_max)) / 2
        return [self.eta_min + (base - self.eta_min) * cos for base in self.base_lrs]


class LambdaLR(LRScheduler):
    """lr_k = base · lr_lambda(k); lr_lambda is a function of the epoch, or a list of them,
    one per param group. Its functions are not in the state_dict."""

    def __init__(self, optimizer, lr_lambda, last_epoch=-1):
        groups = len(getattr(optimizer, "param_groups", ()))
        fns = list(lr_lambda) if isinstance(lr_lambda, (list, tuple)) else [lr_lambda] * groups
        if len(fns) != groups or not all(callable(f) for f in fns):
            raise ValueError(f"LambdaLR: lr_lambda must be a function of the epoch, or a list "
                             f"of {groups} (one per param group), got {lr_lambda!r:.60}")
        self.lr_lambdas = fns
        super().__init__(optimizer, last_epoch)

    def lr_at(self, k):
        """Every param group's lr at epoch k; each lr_lambda(k) must be a number >= 0."""
        return [base * check_number(f"LambdaLR: lr_lambda({k}) of param group {i}", f(k), 0.0)
                for i, (base, f) in enumerate(zip(self.base_lrs, self.lr_lambdas))]


class LinearWarmup:
    """Learning rate base_lr · min(k / warmup_steps, 1) for the update after k updates.

    As in Ho et al.'s code (diffusion_tf/utils.py, get_warmed_up_lr, with TF's global step k
    counting completed updates), so the very first update has lr 0 (LinearLR's start_factor
    must be > 0). Call step() after each optimizer.step(); construction sets the lr of the
    first update. warmup_steps=0: constant. It sets every param group's lr.
    """

    def __init__(self, optimizer, warmup_steps, base_lr):
        self.optimizer = optimizer
        self.warmup_steps = check_int("LinearWarmup: warmup_steps", warmup_steps, 0)
        self.base_lr = check_number("LinearWarmup: base_lr", base_lr, 0.0)
        self.last_step = 0                                     # k: updates taken so far
        self.optimizer.lr = self.lr_at(0)

    def lr_at(self, k):
        """The lr of the update after k updates."""
        if self.warmup_steps == 0:
            return self.base_lr
        return self.base_lr * min(k / self.warmup_steps, 1.0)  # Ho et al.'s linear warm-up

    def step(self):
        """One more update taken: set and return the next one's lr."""
        self.last_step += 1
        self.optimizer.lr = self.lr_at(self.last_step)
        return self.optimizer.lr

    def state_dict(self):
        """{"warmup_steps", "base_lr", "last_step"}: the format of every checkpoint."""
        return {"warmup_steps": self.warmup_steps, "base_lr": self.base_lr,
                "last_step": self.last_step}

    def load_state_dict(self, sd):
        """Take a state_dict() (a checkpoint's is checked by run_state) and set the lr."""
        self.warmup_steps, self.base_lr = int(sd["warmup_steps"]), float(sd["base_lr"])
        self.last_step = int(sd["last_step"])
        self.optimizer.lr = self.lr_at(self.last_step)
        return self
