"""Flow matching on the straight path from data to noise (Lipman et al. 2023, §4.1).

    x(t) = (1 - t) x0 + t x1,   x1 ~ N(0, I),   t in [0, 1]       the path
    dx/dt = x1 - x0                                              its velocity, the target

This is Lipman et al.'s optimal-transport path with σ_min = 0, with time running the other
way: here t = 0 is data and t = 1 is noise. A model v_θ(x, t) is trained by the MSE to the
velocity, and sampling integrates dx/dt = v_θ from t = 1 down to t = 0 with Euler steps.
Unlike GaussianDiffusion, t is continuous: the model is called as model(x_t, t) with a
constant Tensor x_t (B, ...) and a float array t (B,) in [0, 1].

`minidiff train --objective flow` uses FlowMatching, which offers the trainer
GaussianDiffusion's training_losses and hands the network 1000·t (FLOW_TIME_SCALE).
"""
import numpy as np

from .. import backend
from ..progress import bar
from ..autograd import no_grad
from ..tensor import Tensor
from ..validate import check_int
from ._checks import as_batch, check_same_shape
from .likelihood import mean_flat


def _dtype(x, dtype):
    if dtype is not None:
        return np.dtype(dtype)
    kind = getattr(x, "dtype", None)
    return kind if kind in (np.dtype(np.float32), np.dtype(np.float64)) else np.dtype(np.float32)


def _times(t, batch, dtype):
    t = backend.xp().asarray(t, dtype=dtype)
    if t.shape != (batch,) or not bool(((t >= 0) & (t <= 1)).all()):
        raise ValueError(f"t: must be an array of shape ({batch},) with values in [0, 1], "
                         f"got shape {tuple(t.shape)}")
    return t


def flow_path(x0, x1, t):
    """x(t) = (1 - t) x0 + t x1, per example (Lipman et al. 2023, §4.1, σ_min = 0)."""
    t = t.reshape((-1,) + (1,) * (x0.ndim - 1))                            # (B, 1, ...)
    return x0 * (1.0 - t) + x1 * t                                          # the straight path


def flow_velocity_target(x0, x1):
    """dx/dt = x1 - x0, the same at every t on the straight path (Lipman et al. 2023, §4.1)."""
    return x1 - x0


def flow_matching_loss(model, x0, t=None, noise=None, dtype=None):
    """‖v_θ(x(t), t) - (x1 - x0)‖² averaged over dims, a Tensor (B,) (Lipman et al. 2023, §4.1).

    t ~ U[0, 1] and x1 = noise ~ N(0, I) are drawn unless given.
    """
    dtype = _dtype(x0, dtype)
    x0 = as_batch("x0", x0, dtype)
    B = x0.shape[0]
    if t is None:
        t = backend.rng().random(B, dtype=dtype)
    t = _times(t, B, dtype)
    if noise is None:
        noise = backend.rng().standard_normal(x0.shape, dtype=dtype)
    x1 = as_batch("noise", noise, dtype, like_name="x0", like=x0)
    x_t = flow_path(x0, x1, t)
    out = model(Tensor(x_t), t)
    out = out if isinstance(out, Tensor) else Tensor(backend.xp().asarray(out, dtype=dtype))
    check_same_shape("model output", out, "x0", x0)
    return mean_flat((out - flow_velocity_target(x0, x1)) ** 2)             # the velocity MSE


def flow_euler_sample(model, shape=None, num_steps=100, x1=None, dtype=np.float32,
                      progress=False):
    """Integrate dx/dt = v_θ(x, t) from t = 1 (x1 ~ N(0, I), or the given x1) to t = 0 with
    `num_steps` Euler steps: x ← x - Δt · v_θ(x, t), Δt = 1/num_steps. progress: a bar."""
    for _, x in flow_euler_sample_progressive(model, shape, num_steps, x1, dtype, progress):
        pass
    return x


def flow_euler_sample_progressive(model, shape=None, num_steps=100, x1=None, dtype=np.float32,
                                  progress=False):
    """flow_euler_sample's states as they come: (t, x_t) for t = 1, 1 - Δt, …, 0, that is
    num_steps + 1 pairs, the last x_0 the sample. progress=True shows a bar on stderr."""
    num_steps = check_int("num_steps", num_steps, 1)
    dtype = np.dtype(dtype)
    if x1 is None:
        if shape is None:
            raise ValueError("shape: give the sample shape (B, ...) or x1, got neither")
        x1 = backend.rng().standard_normal(tuple(shape), dtype=dtype)
    x = as_batch("x1", x1, dtype)
    dt = 1.0 / num_steps
    yield 1.0, x
    for k in bar(range(num_steps), "euler", progress):
        t = backend.xp().full((x.shape[0],), 1.0 - k * dt, dtype=dtype)     # t_k = 1 - k Δt
        with no_grad():
            v = model(Tensor(x), t)
        v = v.data if isinstance(v, Tensor) else backend.xp().asarray(v, dtype=dtype)
        check_same_shape("model output", v, "x", x)
        x = x - v * dt                                                       # Euler, t → t - Δt
        yield round(1.0 - (k + 1) * dt, 6), x


# The network's time input: 1000·t, the range DDPM's integer timesteps span, so the sinusoidal
# embedding (Ho et al. 2020, App. B) tells times apart; fed t in [0, 1] itself, most of its
# frequencies (down to 1e-4 rad per unit) would turn less than a degree from t = 0 to t = 1.
FLOW_TIME_SCALE = 1000.0


class FlowMatching:
    """Flow matching as `minidiff train --objective flow` runs it: the trainer's interface of
    GaussianDiffusion (training_losses) and Euler's method, with the network called as
    model(x_t, FLOW_TIME_SCALE · t)."""

    def __init__(self, dtype=np.float32):
        self.dtype = np.dtype(dtype)

    def velocity(self, model):
        """v_θ(x, t) = model(x, 1000·t) for t in [0, 1]."""
        return lambda x_t, t: model(x_t, t * FLOW_TIME_SCALE)

    def training_losses(self, model, x0, t=None, noise=None):
        """The velocity MSE of each example, a Tensor (B,); t ~ U[0, 1] and the noise x1 are
        drawn unless given (flow_matching_loss)."""
        return flow_matching_loss(self.velocity(model), x0, t=t, noise=noise, dtype=self.dtype)

    def euler_sample_progressive(self, model, shape, num_steps, progress=False):
        """(t, x_t) from t = 1 (noise) to 0 by num_steps Euler steps of v_θ."""
        return flow_euler_sample_progressive(self.velocity(model), shape, num_steps,
                                             dtype=self.dtype, progress=progress)
