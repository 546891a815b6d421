"""The diffusion math of Ho et al. 2020, with DDIM and flow matching beside it.

    schedules.py            β_t schedules (float64) and their checks
    gaussian_diffusion.py   GaussianDiffusion: q_*, p_*, training_losses, p_sample
                            (Ho et al. 2020, Algorithm 1 and one step of Algorithm 2)
    conversions.py          x̂0, ε, μ_θ and v from one another (Ho et al. 2020, Eq. 4, 7, 11,
                            15; Salimans & Ho 2022)
    sampling.py             the loop of Ho et al. 2020, Alg. 2, from x_T down to x_0
    parameterizations.py    ε | x0 | μ | v: network output → x̂0, μ_θ, and the L_simple target
    variances.py            fixed_large | fixed_small | learned_range: σ_t² of p_θ
    losses.py               simple | mu_mse | kl | hybrid (Ho et al. 2020, Eq. 14, 8, 5;
                            Nichol & Dhariwal 2021, Eq. 16)
    likelihood.py           normal_kl, discretized decoder (Ho et al. 2020, Eq. 13), bits/dim
    ddim.py                 DDIM sampling over timestep subsequences (Song et al. 2021)
    flow_matching.py        the straight-path flow matching loss and Euler sampler
                            (Lipman et al. 2023)

Time arrays are 0-based, as in Ho et al.'s code: index t holds the paper's step t+1.
"""
from .ddim import ddim_sample_loop, ddim_sample_loop_progressive, ddim_step, ddim_timesteps
from .flow_matching import (flow_euler_sample, flow_matching_loss, flow_path,
                            flow_velocity_target)
from .gaussian_diffusion import GaussianDiffusion, extract
from .likelihood import (approx_standard_normal_cdf, calc_bpd_loop,
                         discretized_gaussian_log_likelihood, mean_flat, normal_kl, prior_bpd)
from .schedules import (check_betas, constant_beta_schedule, cosine_beta_schedule,
                        get_beta_schedule, linear_beta_schedule, quadratic_beta_schedule,
                        sigmoid_beta_schedule)
