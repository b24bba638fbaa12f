"""The science commands: `metalearn`, `validate`, `hessian` (one configuration at a time, with the
original DiversityNN flags; the metalearn flags are generated from MetaConfig)."""
from __future__ import annotations

import argparse

from dnn_search import checks
from dnn_search.cli.flags import add_config_flags, add_device, checked, flag, positive_int
# The metalearn flags are generated from MetaConfig, so the parser needs it (and torch) anyway; the
# jobs and orchestration modules stay lazy: a command imports only what it runs.
from dnn_search.metalearn import MetaConfig


def _add_metalearn(sub) -> None:
    p = sub.add_parser(
        "metalearn", help="meta-learn activation functions (docs/design.md)",
        description="Meta-learn n activation functions f_i(x) = base(x) + 0.2 g_i(x): at every outer step a "
                    "fresh network is trained with a differentiable RMSprop, and the exact meta-gradient of "
                    "its mean training loss updates the activations. Writes the original .txt file plus an "
                    ".npz (exact weights) and a .json (metadata) under --output_folder. The dataset fixes "
                    "the task (its loss and metrics).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_config_flags(p, MetaConfig)
    p.add_argument("--data_path", default=None, help="folder with the MNIST/CIFAR files (and the MNIST-1D cache)")
    p.add_argument("--output_folder", default="results/metalearn", help="where the activation files go")
    p.add_argument("--runs", type=positive_int, default=1, help="independent runs (run r uses seed + r)")
    add_device(p)
    flag(p, "--verbose", "print progress lines more often")
    flag(p, "--save_curve", "also write STEM_curve.csv: one row per step (meta-loss, gradient norms, metrics)")
    flag(p, "--save_model", "also write STEM_state.pt: the full learner state (weights, momentum, RNG)")
    p.set_defaults(handler=_run_metalearn)


def _run_metalearn(args) -> None:
    from dnn_search import jobs
    cfg = MetaConfig.from_dict(vars(args))
    jobs.metalearn(cfg, runs=args.runs, data_path=args.data_path, output_folder=args.output_folder,
                   use_gpu=args.use_gpu, gpu_no=args.gpu_no, save_curve=args.save_curve,
                   save_model=args.save_model, verbose=args.verbose)


def _add_validate(sub) -> None:
    p = sub.add_parser(
        "validate", help="retrain ordinary networks with learned activations (docs/design.md)",
        description="Train D -> 200 -> C networks using the base function (pure), a standard activation of the "
                    "field (std:relu, std:gelu, std:silu, std:tanh, std:elu), one learned "
                    "activation on every neuron (single k) or all of them in blocks (diverse), over --runs seeds, "
                    "and report mean ± std of the task's metrics on the test split and on a validation split "
                    "carved from the training data and never trained on (accuracy and loss for classification). "
                    "The same seed gives every mode the same initialisation and batch order. "
                    "Writes validation.parquet. Flags left unset "
                    "are taken from the activation file's metadata (or its original file name).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--act_path", required=True, help="activation file: our .npz (exact) or an original .txt (interpolated)")
    p.add_argument("--validation_mode", default="all",
                   help="comma-separated: pure, std:<relu|gelu|silu|tanh|elu>, std (all five), diverse (or 0/false), "
                        "k (1-based single activation), or all (pure, std, every k, and diverse when n >= 2)")
    p.add_argument("--dataset", default=None, help="a registered dataset (default: the file's)")
    p.add_argument("--data_path", default=None, help="folder with the MNIST/CIFAR files")
    p.add_argument("--activation", default=None, help="base function, if the file does not say")
    p.add_argument("--runs", type=positive_int, default=5, help="seeds per mode")
    p.add_argument("--seed", type=int, default=0, help="first seed")
    p.add_argument("--epochs", type=positive_int, default=None, help="training epochs (default: file's or 5)")
    p.add_argument("--optimizer", choices=("sgd", "rmsprop"), default="sgd",
                   help="sgd: heavy-ball momentum (the original's validation); rmsprop: exactly the meta-learning "
                        "inner update (v starts at 1, eps outside the root, decay --inner_mu)")
    p.add_argument("--inner_lr", type=float, default=None, help="learning rate (default: file's or 0.01)")
    p.add_argument("--inner_mu", type=float, default=None,
                   help="SGD momentum, or rmsprop's decay (default: file's or 0.8)")
    p.add_argument("--inner_batch_size", type=positive_int, default=None, help="batch size (default: 200)")
    p.add_argument("--inner_hidden_size", type=positive_int, default=None, help="hidden neurons (default: 200)")
    p.add_argument("--val_fraction", type=checked("float", checks.unit_interval), default=0.1,
                   help="share of the training data held out (never trained on) for the val_* metrics that "
                        "comparisons pick on (0: train on all of it, no val_* metrics)")
    p.add_argument("--rollout_steps", type=positive_int, default=None,
                   help="forecast horizon in time steps, for tasks with trajectories (default: a test "
                        "trajectory's whole length)")
    p.add_argument("--rollout_trajectories", type=positive_int, default=None,
                   help="test trajectories forecast, for tasks with trajectories (default: all)")
    p.add_argument("--output_folder", default=None, help="default: the activation file's folder")
    add_device(p)
    flag(p, "--save_curve", "store the per-epoch test metrics in validation.parquet")
    flag(p, "--save_model", "save each trained network (state dict + .json) under OUTPUT/models/")
    p.set_defaults(handler=_run_validate)


def _run_validate(args) -> None:
    from dnn_search import jobs
    jobs.validate(args.act_path, validation_mode=args.validation_mode, dataset=args.dataset,
                  data_path=args.data_path, runs=args.runs, seed=args.seed, epochs=args.epochs, lr=args.inner_lr,
                  momentum=args.inner_mu, batch_size=args.inner_batch_size, hidden_size=args.inner_hidden_size,
                  activation=args.activation, output_folder=args.output_folder, use_gpu=args.use_gpu,
                  gpu_no=args.gpu_no, save_curve=args.save_curve, save_model=args.save_model,
                  val_fraction=args.val_fraction, optimizer=args.optimizer, rollout_steps=args.rollout_steps,
                  rollout_trajectories=args.rollout_trajectories)


def _add_hessian(sub) -> None:
    p = sub.add_parser(
        "hessian", help="Hessian spectrum of a saved validation model (docs/design.md)",
        description="Top-k Hessian eigenvalues (power iteration), trace (Hutchinson) and spectral density "
                    "(stochastic Lanczos quadrature) of a model saved by `validate --save_model`, on a seeded "
                    "sample of the training split, with PyHessian. Writes MODEL_hessian.json and MODEL_density.png.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model_path", required=True, help="a .pt written by validate --save_model")
    p.add_argument("--act_path", default=None,
                   help="activation file to rebuild the network from when the model's .json is missing")
    p.add_argument("--dataset", default=None, help="default: the model's dataset")
    p.add_argument("--data_path", default=None, help="folder with the MNIST/CIFAR files")
    p.add_argument("--num_samples", type=positive_int, default=1000, help="training samples in the loss")
    p.add_argument("--top_k", type=positive_int, default=3, help="number of top eigenvalues")
    p.add_argument("--iters", type=positive_int, default=100, help="iterations (power, Hutchinson, Lanczos)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output_folder", default=None, help="default: the model's folder")
    add_device(p)
    p.set_defaults(handler=_run_hessian)


def _run_hessian(args) -> None:
    from dnn_search import jobs
    jobs.hessian(args.model_path, act_path=args.act_path, dataset=args.dataset, data_path=args.data_path,
                 num_samples=args.num_samples, top_k=args.top_k, iters=args.iters, seed=args.seed,
                 use_gpu=args.use_gpu, gpu_no=args.gpu_no, output_folder=args.output_folder)
