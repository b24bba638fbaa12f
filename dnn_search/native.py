"""Native CPU kernels for the fast inner step (C++), built once per installation.

Why: per inner step the B x H x Ho tile tanh(z * w1 + b1) is needed once forward (for f and f')
and once backward (for five reductions). Inductor re-evaluates tanh for each reduction and its
tanh does not vectorise well; here each direction is one pass over the tile with tanh computed
once per element by a vectorisable float32 approximation (float64 uses libm's tanh), parallel
over hidden neurons (each thread owns whole rows, so the reductions over the batch need no
atomics and their order does not depend on the thread count: results are reproducible). The
inner step's RMSprop update and its vector-Jacobian product are one call each for all four
parameters (at the smoke sizes dispatch overhead, not arithmetic, dominates a step).

The float32 tanh: tanh|x| = -m / (2 + m) with m = expm1(-2|x|), m from a round-to-nearest range
reduction (2^k by bit arithmetic, ln 2 in two parts) and a degree-7 Taylor polynomial of
expm1(r) on |r| <= ln2 / 2, |x| clamped at 9.02 where tanh rounds to 1.0f; sign restored with
copysign, NaN passed through. Measured alternatives (scripts/fit_tanh.py, tests/test_native.py):
one odd minimax rational x P(x^2) / Q(x^2) over [0, 9.02] is 5-6 ulp at best (rounding near 1
is amplified); a fitted rational below 0.625 with 1 - 2e / (1 + e) above is 3 ulp but 10 %
slower forward (both branches run on every lane); this form is 2 ulp (tested <= 4 ulp).

Built once per installation: scripts/setup.sh runs `python -m dnn_search.native --build`, which
compiles into the installation's kernel folder (`dnn_search.cache.kernel_dir()`:
`.venv/dnn_search_kernels`, or $DNN_SEARCH_KERNELS); every command then loads that build without
running the compiler (`dnn_search.native_build`: the build key, staging, locking, the fallbacks).
A build for other sources, flags, CPU or torch is never loaded: a changed source is rebuilt into the
same folder at first use. Where that folder is read-only, the build goes to the storage's cache
(logged); where no compiler works, setup says so once (a `.failed` marker), commands do not retry,
and `load()` returns None so callers use the torch.compile/eager kernels of dnn_search.fused.
DNN_SEARCH_NATIVE=0 turns the native kernels off.

Adding a kernel: write its C++ (it may use the prelude's helpers, e.g. `tanh_t`) as one more
`Kernel(name, source, functions)` row of `KERNELS`; the functions become attributes of the module
`load()` returns, and the new source changes the build key, so installations rebuild once.
"""
from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
import threading
from dataclasses import dataclass

from dnn_search import native_build
from dnn_search.cache import cache_dir, kernel_dir

from dnn_search import hnn_kernel

log = logging.getLogger(__name__)

# Included once, before every kernel: headers and the shared float32 tanh.
PRELUDE = r"""
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <cmath>
#include <cstring>
#include <vector>

static constexpr float kSat = 9.02f;           // tanh(x) rounds to 1.0f beyond 13 ln 2

static inline float tanh_f32(float x) {
  float a = std::fabs(x);
  float y = -2.0f * (a < kSat ? a : kSat);                 // in [-18.04, 0]
  float kf = (y * 1.44269504f + 12582912.0f) - 12582912.0f; // round(y / ln 2)
  float r = (y - kf * 0.693145752f) - kf * 1.42860677e-06f; // ln 2 split in two parts
  float pm1 = r * (1.0f + r * (0.5f + r * (1.66666672e-01f + r * (4.16666679e-02f
            + r * (8.33333377e-03f + r * (1.38888892e-03f + r * 1.98412701e-04f))))));
  int32_t bits = (static_cast<int32_t>(kf) + 127) << 23;    // 2^k, k in [-27, 0]
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  float em1 = scale * pm1 + (scale - 1.0f);                 // exp(y) - 1 without cancellation
  float res = -em1 / (2.0f + em1);
  res = a == a ? res : a;                                   // NaN stays NaN
  return std::copysign(res, x);
}
static inline double tanh_t(double x) { return std::tanh(x); }
static inline float tanh_t(float x) { return tanh_f32(x); }
"""


@dataclass(frozen=True)
class Kernel:
    """One group of native functions: C++ SOURCE defining the FUNCTIONS Python calls."""

    name: str
    source: str
    functions: tuple[str, ...]


TILE_KERNEL = r"""
// Arrays of shape (B, H) are row-major; each thread copies the columns of its neurons into
// small contiguous buffers (L2-resident gathers, cheaper than transposing whole arrays) so the
// innermost loop runs over the batch with unit stride, and writes its results back likewise.
template <typename T>
void forward_impl(const T* z, const T* w1, const T* b1, const T* w2, const T* b2, const T* d0,
                  const T* d1, T* f, T* fp, int64_t B, int64_t H, int64_t K) {
  const T s = T(0.2);
  at::parallel_for(0, H, 1, [&](int64_t h0, int64_t h1) {
    std::vector<T> buf(3 * B);
    T* Z = buf.data(); T* F = Z + B; T* FP = F + B;
    for (int64_t h = h0; h < h1; ++h) {
      for (int64_t b = 0; b < B; ++b) { Z[b] = z[b * H + h]; F[b] = 0; FP[b] = 0; }
      for (int64_t k = 0; k < K; ++k) {
        const T W1 = w1[h * K + k], B1 = b1[h * K + k], W2 = w2[h * K + k], W12 = W1 * W2;
#pragma omp simd
        for (int64_t b = 0; b < B; ++b) {
          T t = tanh_t(Z[b] * W1 + B1);
          F[b] += W2 * t;
          FP[b] += W12 * (T(1) - t * t);
        }
      }
      for (int64_t b = 0; b < B; ++b) {
        f[b * H + h] = d0[b * H + h] + s * (F[b] + b2[h]);
        fp[b * H + h] = d1[b * H + h] + s * FP[b];
      }
    }
  });
}

template <typename T>
void backward_impl(const T* z, const T* w1, const T* b1, const T* w2, const T* gf, const T* gfp,
                   const T* d1, const T* d2, T* gz, T* gw1, T* gb1, T* gw2, T* gb2,
                   int64_t B, int64_t H, int64_t K) {
  const T s = T(0.2);
  at::parallel_for(0, H, 1, [&](int64_t h0, int64_t h1) {
    std::vector<T> buf(4 * B);
    T* Z = buf.data(); T* C = Z + B; T* CP = C + B; T* GZ = CP + B;
    for (int64_t h = h0; h < h1; ++h) {
      T cb2 = 0;
      for (int64_t b = 0; b < B; ++b) {
        const int64_t i = b * H + h;
        Z[b] = z[i]; C[b] = gf[i]; CP[b] = gfp[i];
        GZ[b] = gf[i] * d1[i] + gfp[i] * d2[i];
        cb2 += gf[i];
      }
      // With e = sech2 (c - 2 w1 cp t), the per-element gradient of u is 0.2 w2 e; the weight
      // factors are pulled out of the batch sums, leaving four plain sums per (h, k).
      for (int64_t k = 0; k < K; ++k) {
        const T W1 = w1[h * K + k], B1 = b1[h * K + k], W2 = w2[h * K + k];
        const T W1x2 = T(2) * W1, gzk = s * W2 * W1;
        T E = 0, EZ = 0, CT = 0, Q = 0;
#pragma omp simd reduction(+ : E, EZ, CT, Q)
        for (int64_t b = 0; b < B; ++b) {
          const T c = C[b], cp = CP[b], zz = Z[b];
          T t = tanh_t(zz * W1 + B1);
          T sech2 = T(1) - t * t;
          T e = sech2 * (c - W1x2 * cp * t);
          E += e;
          EZ += e * zz;
          CT += c * t;
          Q += cp * sech2;
          GZ[b] += gzk * e;
        }
        gb1[h * K + k] = s * W2 * E;
        gw1[h * K + k] = s * W2 * (EZ + Q);
        gw2[h * K + k] = s * (CT + W1 * Q);
      }
      for (int64_t b = 0; b < B; ++b) gz[b * H + h] = GZ[b];
      gb2[h] = s * cb2;
    }
  });
}

// z, d0, d1, gf, gfp, d2: (B, H); weights (H, K); b2 (H,).
std::vector<torch::Tensor> forward(torch::Tensor z, torch::Tensor w1, torch::Tensor b1, torch::Tensor w2,
                                   torch::Tensor b2, torch::Tensor d0, torch::Tensor d1) {
  z = z.contiguous(); d0 = d0.contiguous(); d1 = d1.contiguous();
  w1 = w1.contiguous(); b1 = b1.contiguous(); w2 = w2.contiguous(); b2 = b2.contiguous();
  auto f = torch::empty_like(z), fp = torch::empty_like(z);
  int64_t B = z.size(0), H = z.size(1), K = w1.size(1);
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "dnn_search_forward", [&] {
    forward_impl<scalar_t>(z.data_ptr<scalar_t>(), w1.data_ptr<scalar_t>(), b1.data_ptr<scalar_t>(),
                           w2.data_ptr<scalar_t>(), b2.data_ptr<scalar_t>(), d0.data_ptr<scalar_t>(),
                           d1.data_ptr<scalar_t>(), f.data_ptr<scalar_t>(), fp.data_ptr<scalar_t>(), B, H, K);
  });
  return {f, fp};
}

std::vector<torch::Tensor> backward(torch::Tensor z, torch::Tensor w1, torch::Tensor b1, torch::Tensor w2,
                                    torch::Tensor gf, torch::Tensor gfp, torch::Tensor d1, torch::Tensor d2) {
  z = z.contiguous(); gf = gf.contiguous(); gfp = gfp.contiguous(); d1 = d1.contiguous(); d2 = d2.contiguous();
  w1 = w1.contiguous(); b1 = b1.contiguous(); w2 = w2.contiguous();
  auto gz = torch::empty_like(z), gw1 = torch::empty_like(w1), gb1 = torch::empty_like(b1),
       gw2 = torch::empty_like(w2), gb2 = torch::empty({z.size(1)}, z.options());
  int64_t B = z.size(0), H = z.size(1), K = w1.size(1);
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "dnn_search_backward", [&] {
    backward_impl<scalar_t>(z.data_ptr<scalar_t>(), w1.data_ptr<scalar_t>(), b1.data_ptr<scalar_t>(),
                            w2.data_ptr<scalar_t>(), gf.data_ptr<scalar_t>(), gfp.data_ptr<scalar_t>(),
                            d1.data_ptr<scalar_t>(), d2.data_ptr<scalar_t>(), gz.data_ptr<scalar_t>(),
                            gw1.data_ptr<scalar_t>(), gb1.data_ptr<scalar_t>(), gw2.data_ptr<scalar_t>(),
                            gb2.data_ptr<scalar_t>(), B, H, K);
  });
  return {gz, gw1, gb1, gw2, gb2};
}
"""

RMSPROP_KERNEL = r"""
// RMSprop of the inner step for all parameters in one call (forward), and its vector-Jacobian
// product (backward); the same expressions as dnn_search.inner_step's torch fallback.
template <typename T>
void rmsprop_forward_impl(const T* t, const T* g, const T* v, T* tn, T* vn, T* rn, int64_t n,
                          T mu, T lr, T eps) {
  const T m1 = T(1) - mu;
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) {
    T vv = mu * v[j] + m1 * g[j] * g[j];
    T r = std::sqrt(vv);
    vn[j] = vv; rn[j] = r;
    tn[j] = t[j] - lr * g[j] / (r + eps);
  }
}

template <typename T>
void rmsprop_backward_impl(const T* g, const T* r, const T* tb, const T* vb, T* gb, T* vo, int64_t n,
                           T mu, T lr, T eps) {
  const T two_m1 = T(2) * (T(1) - mu);
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) {
    // t' = t - lr g / d, d = sqrt(v') + eps, v' = mu v + (1 - mu) g^2
    T d = r[j] + eps;
    T scaled = tb[j] * lr / d;
    T v_total = vb[j] + scaled * g[j] / (d * 2 * r[j]);
    gb[j] = v_total * g[j] * two_m1 - scaled;
    vo[j] = v_total * mu;
  }
}

std::vector<torch::Tensor> rmsprop_forward(std::vector<torch::Tensor> theta, std::vector<torch::Tensor> grads,
                                           std::vector<torch::Tensor> second, double mu, double lr, double eps) {
  const size_t k = theta.size();
  std::vector<torch::Tensor> out(3 * k);
  for (size_t i = 0; i < k; ++i) {
    auto t = theta[i].contiguous(), g = grads[i].contiguous(), v = second[i].contiguous();
    auto tn = torch::empty_like(t), vn = torch::empty_like(t), rn = torch::empty_like(t);
    AT_DISPATCH_FLOATING_TYPES(t.scalar_type(), "dnn_search_rmsprop_forward", [&] {
      rmsprop_forward_impl<scalar_t>(t.data_ptr<scalar_t>(), g.data_ptr<scalar_t>(), v.data_ptr<scalar_t>(),
                                     tn.data_ptr<scalar_t>(), vn.data_ptr<scalar_t>(), rn.data_ptr<scalar_t>(),
                                     t.numel(), scalar_t(mu), scalar_t(lr), scalar_t(eps));
    });
    out[i] = tn; out[k + i] = vn; out[2 * k + i] = rn;
  }
  return out;
}

std::vector<torch::Tensor> rmsprop_backward(std::vector<torch::Tensor> grads, std::vector<torch::Tensor> roots,
                                            std::vector<torch::Tensor> theta_bars, std::vector<torch::Tensor> second_bars,
                                            double mu, double lr, double eps) {
  const size_t k = grads.size();
  std::vector<torch::Tensor> out(2 * k);
  for (size_t i = 0; i < k; ++i) {
    auto g = grads[i].contiguous(), r = roots[i].contiguous(), tb = theta_bars[i].contiguous(),
         vb = second_bars[i].contiguous();
    auto gb = torch::empty_like(g), vo = torch::empty_like(g);
    AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "dnn_search_rmsprop_backward", [&] {
      rmsprop_backward_impl<scalar_t>(g.data_ptr<scalar_t>(), r.data_ptr<scalar_t>(), tb.data_ptr<scalar_t>(),
                                      vb.data_ptr<scalar_t>(), gb.data_ptr<scalar_t>(), vo.data_ptr<scalar_t>(),
                                      g.numel(), scalar_t(mu), scalar_t(lr), scalar_t(eps));
    });
    out[i] = gb; out[k + i] = vo;
  }
  return out;
}
"""

TANH32_KERNEL = r"""
torch::Tensor tanh32(torch::Tensor x) {
  TORCH_CHECK(x.scalar_type() == torch::kFloat32, "tanh32 takes float32");
  x = x.contiguous();
  auto out = torch::empty_like(x);
  const float* src = x.data_ptr<float>();
  float* dst = out.data_ptr<float>();
  int64_t n = x.numel();
  at::parallel_for(0, n, 4096, [&](int64_t i0, int64_t i1) {
#pragma omp simd
    for (int64_t i = i0; i < i1; ++i) dst[i] = tanh_f32(src[i]);
  });
  return out;
}
"""

# The native kernels, compiled together into one module (one build, one load).
KERNELS = (
    Kernel("tile", TILE_KERNEL, ("forward", "backward")),
    Kernel("rmsprop", RMSPROP_KERNEL, ("rmsprop_forward", "rmsprop_backward")),
    Kernel("tanh32", TANH32_KERNEL, ("tanh32",)),
    Kernel("hnn", hnn_kernel.NATIVE_SOURCE, tuple(hnn_kernel.NATIVE_FUNCTIONS)),  # the HNN's f'/f'' tile
)

_FLAGS = ("-O3", "-march=native", "-fopenmp", "-fno-math-errno",
          # gcc defaults to 256-bit vectors even with AVX-512
          *(("-mprefer-vector-width=512",) if platform.machine() in ("x86_64", "AMD64") else ()))
_lock = threading.Lock()
_state: dict[str, object] = {}


def extension() -> native_build.Extension:
    """What is compiled: the prelude and every kernel of KERNELS, with the flags above."""
    return native_build.Extension(prefix="dnn_search_native", sources=(PRELUDE, *(k.source for k in KERNELS)),
                                  functions=tuple(f for k in KERNELS for f in k.functions),
                                  cflags=_FLAGS, ldflags=("-fopenmp",))


def enabled() -> bool:
    return os.environ.get("DNN_SEARCH_NATIVE", "1") != "0"


def load():
    """The compiled module, or None (disabled, or unavailable: the reason is logged once per process).
    Loaded from the installation's prebuilt kernels when they match; built (and kept) otherwise."""
    if not enabled():
        return None
    with _lock:
        if "module" not in _state:
            _state["module"], _state["report"] = native_build.load_or_build(
                extension(), kernel_dir(), lambda: cache_dir() / "torch_extensions")
        return _state["module"]


def load_report() -> native_build.LoadReport | None:
    """How `load()` obtained the kernels in this process (None before the first call)."""
    with _lock:
        return _state.get("report")  # type: ignore[return-value]


def build_installation() -> int:
    """The build step of scripts/setup.sh: the kernels into the installation's kernel folder.
    0 when they are there (built now or already), 1 when they cannot be built (the reason is
    logged and recorded, so commands use the torch kernels without retrying)."""
    if not enabled():
        log.info("native kernels: not built (DNN_SEARCH_NATIVE=0)")
        return 0
    ext, folder = extension(), kernel_dir()
    if native_build.load_prebuilt(folder, ext) is not None:
        log.info("native kernels: up to date in %s", folder / ext.module_name())
        return 0
    unwritable = native_build.writable_reason(folder)
    if unwritable is not None:
        log.warning("native kernels not built: %s; commands build them at first use into their storage's cache "
                    "(set DNN_SEARCH_KERNELS to a writable folder to build once)", unwritable)
        return 1
    try:
        native_build.build_into(folder, ext)
    except Exception as exc:  # no compiler, no headers, no ninja: recorded for the commands, and said once
        reason = f"{type(exc).__name__}: {str(exc).strip()}"
        native_build.failure_marker(folder, ext).write_text(reason + "\n")
        log.warning("native kernels not built (%s); dnn_search uses its torch kernels", reason.splitlines()[0][:300])
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dnn_search.native",
                                     description="Build the native kernels into the installation (scripts/setup.sh).")
    parser.add_argument("--build", action="store_true", help="build them (or check that they are up to date)")
    parser.add_argument("--where", action="store_true", help="print the folder commands load them from")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.where:
        print(kernel_dir() / extension().module_name())
    return build_installation() if args.build else 0


if __name__ == "__main__":
    sys.exit(main())
