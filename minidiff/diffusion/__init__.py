"""The diffusion math of Ho et al. 2020, with DDIM and flow matching beside it.

    schedules.py            β_t schedules (float64) and their checks
    gaussian_diffusion.py   GaussianDiffusion, all of Ho et al. 2020 but the bound's terms:
                            the forward process and its posterior, p_θ, the losses of
                            Algorithm 1 (with Nichol & Dhariwal 2021's hybrid), Algorithm 2,
                            and the bound in bits/dim; the choices are names, checked once
    likelihood.py           normal_kl, discretized decoder (Ho et al. 2020, Eq. 13), the
                            bound's terms in bits/dim, as functions of arrays
    ddim.py                 DDIM sampling over timestep subsequences (Song et al. 2021)
    flow_matching.py        the straight-path flow matching loss and Euler sampler
                            (Lipman et al. 2023)
    _checks.py              the array checks of the public entry points

Time arrays are 0-based, as in Ho et al.'s code: index t holds the paper's step t+1.
"""
from .ddim import ddim_sample_loop, ddim_sample_loop_progressive, ddim_step, ddim_timesteps
from .flow_matching import (FLOW_TIME_SCALE, FlowMatching, flow_euler_sample,
                            flow_euler_sample_progressive, flow_matching_loss, flow_path,
                            flow_velocity_target)
from .gaussian_diffusion import (LOSSES, MU_MSE_WEIGHTS, PARAMETERIZATIONS, VARIANCES,
                                 GaussianDiffusion, Prediction, calc_bpd_loop, extract, prior_bpd)
from .likelihood import (approx_standard_normal_cdf, discretized_gaussian_log_likelihood,
                         mean_flat, normal_kl)
from .schedules import (check_betas, constant_beta_schedule, cosine_beta_schedule,
                        get_beta_schedule, linear_beta_schedule, quadratic_beta_schedule,
                        sigmoid_beta_schedule)
