"""One quantity from another at the same (x_t, t): the equations of the forward process solved
for what a parameterisation needs.

    x̂0 from ε     Ho et al. 2020, Eq. 15 (their Eq. 4 solved for x0)
    ε from x0      Ho et al. 2020, Eq. 4 solved for ε
    x0 from μ̃      Ho et al. 2020, Eq. 7 solved for x0
    μ_θ from ε     Ho et al. 2020, Eq. 11
    v, and x0 or ε from v      Salimans & Ho 2022, §4

`Conversions` is a part of GaussianDiffusion (its base class): the methods read its schedule
buffers. Each public method checks its arrays and calls its private twin, which trusts them and
is what the rest of the package calls. A twin takes an array x_t and, for the other input, an
array or a Tensor (the network's output; then the result is a Tensor too). t holds 0-based
indices: index t is the paper's step t+1.
"""
from ._checks import check_same_shape


class Conversions:
    def _x_t_and(self, name, a, x_t, t):
        """x_t, its timesteps and a second array of x_t's shape, checked: (x_t, t, a)."""
        x_t, a = self._x("x_t", x_t), self._x(name, a)
        check_same_shape("x_t", x_t, name, a)
        return x_t, self._t(t, x_t), a

    def predict_start_from_noise(self, x_t, t, eps):
        """x̂0 = (x_t - √(1 - ᾱ_t) ε) / √ᾱ_t (Ho et al. 2020, Eq. 15)."""
        return self._predict_start_from_noise(*self._x_t_and("eps", eps, x_t, t))

    def _predict_start_from_noise(self, x_t, t, eps):                     # Ho et al. 2020, Eq. 15
        return (x_t * self.extract(self.sqrt_recip_alphas_cumprod, t, x_t.shape)
                - eps * self.extract(self.sqrt_recipm1_alphas_cumprod, t, x_t.shape))

    def predict_noise_from_start(self, x_t, t, x0):
        """ε = (x_t - √ᾱ_t x0) / √(1 - ᾱ_t) (Ho et al. 2020, Eq. 4 solved for ε)."""
        return self._predict_noise_from_start(*self._x_t_and("x0", x0, x_t, t))

    def _predict_noise_from_start(self, x_t, t, x0):                       # Ho et al. 2020, Eq. 4
        return ((x_t * self.extract(self.sqrt_recip_alphas_cumprod, t, x_t.shape) - x0)
                / self.extract(self.sqrt_recipm1_alphas_cumprod, t, x_t.shape))

    def predict_start_from_mean(self, x_t, t, mean):
        """x0 = (μ̃ - coef2 · x_t) / coef1 (Ho et al. 2020, Eq. 7 solved for x0), for μ."""
        return self._predict_start_from_mean(*self._x_t_and("mean", mean, x_t, t))

    def _predict_start_from_mean(self, x_t, t, mean):                      # Ho et al. 2020, Eq. 7
        return ((mean - x_t * self.extract(self.posterior_mean_coef2, t, x_t.shape))
                / self.extract(self.posterior_mean_coef1, t, x_t.shape))

    def p_mean_from_noise(self, x_t, t, eps):
        """μ_θ = (x_t - β_t/√(1 - ᾱ_t) · ε) / √α_t (Ho et al. 2020, Eq. 11; with the true ε it
        is μ̃_t, Ho et al. 2020, Eq. 10)."""
        return self._p_mean_from_noise(*self._x_t_and("eps", eps, x_t, t))

    def _p_mean_from_noise(self, x_t, t, eps):                            # Ho et al. 2020, Eq. 11
        return ((x_t - eps * self.extract(self.eps_coef, t, x_t.shape))
                * self.extract(self.recip_sqrt_alphas, t, x_t.shape))

    def get_v(self, x0, t, noise):
        """v = √ᾱ_t ε - √(1 - ᾱ_t) x0 (Salimans & Ho 2022, §4)."""
        x0, noise = self._x("x0", x0), self._x("noise", noise)
        check_same_shape("x0", x0, "noise", noise)
        return self._get_v(x0, self._t(t, x0), noise)

    def _get_v(self, x0, t, noise):                                       # Salimans & Ho 2022, §4
        return (noise * self.extract(self.sqrt_alphas_cumprod, t, x0.shape)
                - x0 * self.extract(self.sqrt_one_minus_alphas_cumprod, t, x0.shape))

    def predict_start_from_v(self, x_t, t, v):
        """x0 = √ᾱ_t x_t - √(1 - ᾱ_t) v (Salimans & Ho 2022, §4)."""
        return self._predict_start_from_v(*self._x_t_and("v", v, x_t, t))

    def _predict_start_from_v(self, x_t, t, v):                           # Salimans & Ho 2022, §4
        return (x_t * self.extract(self.sqrt_alphas_cumprod, t, x_t.shape)
                - v * self.extract(self.sqrt_one_minus_alphas_cumprod, t, x_t.shape))

    def predict_noise_from_v(self, x_t, t, v):
        """ε = √(1 - ᾱ_t) x_t + √ᾱ_t v (Salimans & Ho 2022, §4); unused inside the package."""
        x_t, t, v = self._x_t_and("v", v, x_t, t)
        # Salimans & Ho 2022, §4
        return (x_t * self.extract(self.sqrt_one_minus_alphas_cumprod, t, x_t.shape)
                + v * self.extract(self.sqrt_alphas_cumprod, t, x_t.shape))
