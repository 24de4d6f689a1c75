// Argument checks, dtype dispatch and error reporting shared by the CPU and CUDA op implementations.
#pragma once

#include <torch/library.h>
#include <torch/types.h>

#include <string>

#include "../csrc/common/filter.h"
#include "../csrc/common/logprob.h"
#include "../csrc/common/philox.h"
#include "../csrc/common/types.h"
#include "../csrc/common/verify.h"

namespace edlm {
namespace bind {

// Calls body with `scalar_t` bound to the kernel's storage type for logits' dtype.
#define EDLM_DISPATCH_LOGITS(dtype, op, ...)                                                                  \
  [&] {                                                                                                       \
    switch (dtype) {                                                                                          \
      case at::kFloat: {                                                                                      \
        using scalar_t = float;                                                                               \
        return __VA_ARGS__();                                                                                 \
      }                                                                                                       \
      case at::kHalf: {                                                                                       \
        using scalar_t = ::edlm::f16_t;                                                                       \
        return __VA_ARGS__();                                                                                 \
      }                                                                                                       \
      case at::kBFloat16: {                                                                                   \
        using scalar_t = ::edlm::bf16_t;                                                                      \
        return __VA_ARGS__();                                                                                 \
      }                                                                                                       \
      default:                                                                                                \
        TORCH_CHECK_TYPE(false, op, ": logits must be float32, float16 or bfloat16, got ", dtype);            \
    }                                                                                                         \
  }()

inline Precision parse_precision(const std::string& p, const char* op) {
  if (p == "fp64") return Precision::kFP64;
  if (p == "fp32-gumbel") return Precision::kFP32Gumbel;
  TORCH_CHECK_VALUE(false, op, ": precision must be 'fp64' or 'fp32-gumbel', got '", p, "'");
}

inline void check_logits(const at::Tensor& logits, int64_t dims, const char* op) {
  TORCH_CHECK_TYPE(logits.scalar_type() == at::kFloat || logits.scalar_type() == at::kHalf ||
                       logits.scalar_type() == at::kBFloat16,
                   op, ": logits must be float32, float16 or bfloat16, got ", logits.scalar_type());
  TORCH_CHECK_VALUE(logits.dim() == dims, op, ": logits must have ", dims, " dimensions, got shape ",
                    logits.sizes());
  const int64_t V = logits.size(-1);
  TORCH_CHECK_VALUE(V >= 1 && V <= 0x7FFFFFFFll, op, ": logits' vocabulary size must be in [1, 2^31 - 1], got ", V);
  TORCH_CHECK_VALUE(logits.stride(-1) == 1 || logits.size(-1) == 1, op,
                    ": logits must have a contiguous last dimension (stride 1), got strides ", logits.strides(),
                    "; call .contiguous() on it first");
}

inline void check_temperature(double temperature, const char* op) {
  TORCH_CHECK_VALUE(temperature >= 0.0 && temperature < 1.0 / 0.0, op,
                    ": temperature must be a finite number >= 0, got ", temperature);
}

inline RngArgs make_rng(int64_t seed, int64_t offset, int64_t row_offset, int64_t rows, const char* op) {
  TORCH_CHECK_VALUE(seed >= 0, op, ": seed must be >= 0, got ", seed);
  TORCH_CHECK_VALUE(offset >= 0 && uint64_t(offset) < kMaxOffset, op, ": offset must be in [0, 2^40), got ", offset);
  TORCH_CHECK_VALUE(row_offset >= 0 && uint64_t(row_offset) + uint64_t(rows) <= kMaxRow, op,
                    ": row_offset + rows must be within [0, 2^48], got row_offset ", row_offset);
  return RngArgs{uint64_t(seed), uint64_t(offset), uint64_t(row_offset)};
}

inline void check_same_device(const at::Tensor& a, const at::Tensor& b, const char* an, const char* bn,
                              const char* op) {
  TORCH_CHECK_VALUE(a.device() == b.device(), op, ": ", an, " and ", bn, " must be on the same device, got ",
                    a.device(), " and ", b.device());
}

// x_t: int64 [B, L] matching logits [B, L, V]; mask_id within [0, V).
// allow_none: mask_id -1 means "no mask": every position is drawn and no id is excluded (sample_scored only).
inline void check_masked_inputs(const at::Tensor& logits, const at::Tensor& x_t, int64_t mask_id, const char* op,
                                bool allow_none = false) {
  check_logits(logits, 3, op);
  check_same_device(logits, x_t, "logits", "x_t", op);
  TORCH_CHECK_TYPE(x_t.scalar_type() == at::kLong, op, ": x_t must be int64, got ", x_t.scalar_type());
  TORCH_CHECK_VALUE(x_t.dim() == 2 && x_t.size(0) == logits.size(0) && x_t.size(1) == logits.size(1), op,
                    ": x_t must have shape [B, L] = ", logits.sizes().slice(0, 2), ", got ", x_t.sizes());
  TORCH_CHECK_VALUE((mask_id >= 0 || (allow_none && mask_id == -1)) && mask_id < logits.size(-1), op,
                    ": mask_id must be in [0, V) = [0, ", logits.size(-1), ")", allow_none ? " or -1 (none)" : "",
                    ", got ", mask_id);
}

template <typename T>
Logits3<T> view3(const at::Tensor& logits) {
  const auto* p = reinterpret_cast<const T*>(logits.const_data_ptr());
  if (logits.dim() == 2) return Logits3<T>{p, logits.size(0), 1, logits.size(1), logits.stride(0), 0};
  return Logits3<T>{p, logits.size(0), logits.size(1), logits.size(2), logits.stride(0), logits.stride(1)};
}

// What a status code says of the row it names.
inline const char* status_text(int32_t code) {
  switch (code) {
    case kNaN:
      return "contains NaN";
    case kPosInf:
      return "contains +inf";
    case kNotFinite:
      return "contains NaN or +inf";
    case kNoFinite:
      return "has no finite logit (all -inf, or every finite entry excluded)";
    case kInfiniteWeight:
      return "contains -inf (an infinite weight)";
    case kNoWeight:
      return "has every energy +inf (no candidate has weight)";
    case kBadTarget:
      return "has a target outside [0, V) (give it weight 0 to skip the row)";
    default:
      return "failed";
  }
}

// Raises for a failed op.  `what` names the rows ("logits", "energies"); L > 0 names a row as [b, l].
inline void raise_status(Status s, const char* op, const char* what, int64_t L, int64_t V) {
  if (s.row < 0) return;
  TORCH_CHECK_VALUE(s.code != kBadExclude, op, ": exclude ids must be in [0, V) = [0, ", V, ")");
  TORCH_CHECK_VALUE(s.code != kBadPUnmask, op, ": p_unmask must lie in [0, 1]; p_unmask[", s.row / (L > 0 ? L : 1),
                    "] does not");
  if (L > 0) {
    TORCH_CHECK_VALUE(false, op, ": ", what, "[", s.row / L, ", ", s.row % L, "] ", status_text(s.code));
  }
  TORCH_CHECK_VALUE(false, op, ": ", what, " row ", s.row, " ", status_text(s.code));
}

// What every sampling op takes besides its tensors, checked once: the temperature, the precision, the RNG stream,
// and the draws per row the stream has room for (fp32-gumbel spends a quarter Philox block per entry and draw).
struct DrawArgs {
  RngArgs rng;
  Precision precision;
  FilterArgs filter;
};

// top_k 0, top_p 1 and min_p 0 switch a filter off.
inline FilterArgs filter_args(int64_t top_k, double top_p, double min_p, Precision precision, const char* op) {
  TORCH_CHECK_VALUE(top_k >= 0, op, ": top_k must be >= 0 (0: off), got ", top_k);
  TORCH_CHECK_VALUE(top_p > 0.0 && top_p <= 1.0, op, ": top_p must be in (0, 1] (1: off), got ", top_p);
  TORCH_CHECK_VALUE(min_p >= 0.0 && min_p <= 1.0, op, ": min_p must be in [0, 1] (0: off), got ", min_p);
  FilterArgs f;
  f.top_k = top_k;
  f.top_p = top_p;
  f.min_p = min_p;
  TORCH_CHECK_VALUE(!filters_on(f) || precision == Precision::kFP64, op,
                    ": top_k, top_p and min_p need precision 'fp64' (the fp32-gumbel emulation has no filters)");
  return f;
}

inline DrawArgs draw_args(double temperature, const std::string& precision, int64_t seed, int64_t offset,
                          int64_t row_offset, int64_t rows, int64_t draws, int64_t V, int64_t top_k, double top_p,
                          double min_p, const char* op) {
  check_temperature(temperature, op);
  const Precision prec = parse_precision(precision, op);
  const DrawArgs d{make_rng(seed, offset, row_offset, rows, op), prec, filter_args(top_k, top_p, min_p, prec, op)};
  if (d.precision == Precision::kFP32Gumbel) {
    TORCH_CHECK_VALUE(uint64_t(draws) * uint64_t((V + 3) / 4) + 1 < kMaxSub, op,
                      ": fp32-gumbel supports draws per row * V / 4 < 2^40");
  } else {
    TORCH_CHECK_VALUE(uint64_t(draws) < kMaxSub, op, ": draws per row must be < 2^40");
  }
  return d;
}

// Validated arguments and allocated outputs, shared by the CPU and CUDA implementations.
struct CategoricalArgs : DrawArgs {
  at::Tensor logits, exclude, tokens, logp;
};

inline CategoricalArgs prepare_categorical(const at::Tensor& logits, int64_t num_samples, int64_t seed,
                                           int64_t offset, double temperature,
                                           const c10::optional<at::Tensor>& exclude, const std::string& precision,
                                           int64_t top_k, double top_p, double min_p, int64_t row_offset) {
  const char* op = "edlm_engine.ops.categorical";
  check_logits(logits, 2, op);
  TORCH_CHECK_VALUE(num_samples >= 1, op, ": num_samples must be >= 1, got ", num_samples);
  CategoricalArgs a{draw_args(temperature, precision, seed, offset, row_offset, logits.size(0), num_samples,
                              logits.size(1), top_k, top_p, min_p, op)};
  a.logits = logits;
  if (exclude.has_value() && exclude->numel() > 0) {
    check_same_device(logits, *exclude, "logits", "exclude", op);
    TORCH_CHECK_TYPE(exclude->scalar_type() == at::kLong, op, ": exclude must be int64, got ",
                     exclude->scalar_type());
    // Sorted, not deduplicated (a unique costs a host sync on a GPU); the kernels check the range and report it
    // through the status word, the op's one read-back.
    a.exclude = std::get<0>(exclude->reshape({-1}).sort()).contiguous();
  }
  const auto opts = logits.options();
  a.tokens = at::empty({logits.size(0), num_samples}, opts.dtype(at::kLong));
  a.logp = at::empty({logits.size(0), num_samples}, opts.dtype(at::kDouble));
  return a;
}

struct MaskedArgs : DrawArgs {
  at::Tensor x_t, p_unmask, out;
};

inline MaskedArgs prepare_sample_masked(const at::Tensor& logits, const at::Tensor& x_t, int64_t mask_id,
                                        const at::Tensor& p_unmask, int64_t seed, int64_t offset, double temperature,
                                        const std::string& precision, int64_t top_k, double top_p, double min_p,
                                        int64_t row_offset) {
  const char* op = "edlm_engine.ops.sample_masked";
  check_masked_inputs(logits, x_t, mask_id, op);
  check_same_device(logits, p_unmask, "logits", "p_unmask", op);
  const int64_t B = logits.size(0);
  TORCH_CHECK_TYPE(p_unmask.is_floating_point(), op, ": p_unmask must be a float tensor, got ",
                   p_unmask.scalar_type());
  TORCH_CHECK_VALUE(p_unmask.dim() == 0 || (p_unmask.dim() == 1 && p_unmask.size(0) == B), op,
                    ": p_unmask must be a scalar or have shape [B] = [", B, "], got ", p_unmask.sizes());
  MaskedArgs a{draw_args(temperature, precision, seed, offset, row_offset, B * logits.size(1), 1, logits.size(2),
                         top_k, top_p, min_p, op)};
  // Its range is checked by the kernels, per row, through the status word (no read-back here).
  a.p_unmask = p_unmask.to(at::kDouble).expand({B}).contiguous();
  a.x_t = x_t.contiguous();
  a.out = at::empty_like(a.x_t);
  return a;
}

struct CandidateArgs : DrawArgs {
  at::Tensor x_t, x0, log_q;
};

inline CandidateArgs prepare_sample_candidates(const at::Tensor& logits, const at::Tensor& x_t, int64_t mask_id,
                                               int64_t k, int64_t seed, int64_t offset, double temperature,
                                               const std::string& precision, int64_t top_k, double top_p,
                                               double min_p, int64_t row_offset) {
  const char* op = "edlm_engine.ops.sample_candidates";
  check_masked_inputs(logits, x_t, mask_id, op);
  TORCH_CHECK_VALUE(k >= 1, op, ": k must be >= 1, got ", k);
  CandidateArgs a{draw_args(temperature, precision, seed, offset, row_offset, logits.size(0) * logits.size(1), k,
                            logits.size(2), top_k, top_p, min_p, op)};
  a.x_t = x_t.contiguous();
  const auto opts = x_t.options();
  a.x0 = at::empty({k, logits.size(0), logits.size(1)}, opts);
  a.log_q = at::empty({k, logits.size(0)}, opts.dtype(at::kDouble));
  return a;
}

struct ScoredArgs : DrawArgs {
  at::Tensor x_t, tokens, scores, argmax;
};

inline ScoredArgs prepare_sample_scored(const at::Tensor& logits, const at::Tensor& x_t, int64_t mask_id, int64_t seed,
                                       int64_t offset, double temperature, int64_t top_k, double top_p, double min_p,
                                       int64_t row_offset) {
  const char* op = "edlm_engine.ops.sample_scored";
  check_masked_inputs(logits, x_t, mask_id, op, /*allow_none=*/true);
  ScoredArgs a{draw_args(temperature, "fp64", seed, offset, row_offset, logits.size(0) * logits.size(1), 1,
                         logits.size(2), top_k, top_p, min_p, op)};
  a.x_t = x_t.contiguous();
  a.tokens = at::empty_like(a.x_t);
  a.scores = at::empty({kNumScores, logits.size(0), logits.size(1)}, x_t.options().dtype(at::kDouble));
  a.argmax = at::empty_like(a.x_t);
  return a;
}

struct ResampleArgs {
  at::Tensor energies, index, ess;
  RngArgs rng;
};

inline ResampleArgs prepare_importance_resample(const at::Tensor& energies, int64_t seed, int64_t offset,
                                                double temperature, int64_t row_offset) {
  const char* op = "edlm_engine.ops.importance_resample";
  TORCH_CHECK_TYPE(energies.is_floating_point(), op, ": energies must be a float tensor, got ",
                   energies.scalar_type());
  TORCH_CHECK_VALUE(energies.dim() == 2 && energies.size(1) >= 1, op, ": energies must have shape [B, k], k >= 1, got ",
                    energies.sizes());
  check_temperature(temperature, op);
  ResampleArgs a;
  a.rng = make_rng(seed, offset, row_offset, energies.size(0), op);
  a.energies = energies.to(at::kDouble).contiguous();
  const auto opts = energies.options();
  a.index = at::empty({energies.size(0)}, opts.dtype(at::kLong));
  a.ess = at::empty({energies.size(0)}, opts.dtype(at::kDouble));
  return a;
}

inline at::Tensor prepare_uniform(const at::Tensor& like, int64_t seed, int64_t offset, int64_t row_offset,
                                  RngArgs* rng) {
  *rng = make_rng(seed, offset, row_offset, like.numel(), "edlm_engine.ops.uniform");
  return at::empty(like.sizes(), like.options().dtype(at::kDouble));
}

// speculative_verify: denoiser logits [B, W + 1, V] shared by the K particles of a sequence, AR logits
// [B K, W + 1, Va], drafts [B K, W], n_valid [B K].
struct VerifyTensors {
  at::Tensor drafts, n_valid, n_acc, fix, log_q, log_pa, log_pi;
  RngArgs rng;
  FilterArgs filter;
  int64_t K, W;
};

inline VerifyTensors prepare_speculative_verify(const at::Tensor& d_logits, const at::Tensor& ar_logits,
                                                const at::Tensor& drafts, const at::Tensor& n_valid, double poe_weight,
                                                double temperature, int64_t mask_id, int64_t top_k, double top_p,
                                                double min_p, int64_t seed, int64_t offset, int64_t row_offset) {
  const char* op = "edlm_engine.ops.speculative_verify";
  check_logits(d_logits, 3, op);
  check_logits(ar_logits, 3, op);
  check_same_device(d_logits, ar_logits, "d_logits", "ar_logits", op);
  check_same_device(d_logits, drafts, "d_logits", "drafts", op);
  check_same_device(d_logits, n_valid, "d_logits", "n_valid", op);
  TORCH_CHECK_TYPE(ar_logits.scalar_type() == d_logits.scalar_type(), op, ": ar_logits must have d_logits' dtype ",
                   d_logits.scalar_type(), ", got ", ar_logits.scalar_type());
  const int64_t B = d_logits.size(0), W = d_logits.size(1) - 1, N = ar_logits.size(0);
  TORCH_CHECK_VALUE(W >= 1, op, ": d_logits must hold W + 1 >= 2 positions per sequence, got ", d_logits.sizes());
  TORCH_CHECK_VALUE(ar_logits.size(1) == W + 1 && (B > 0 ? N >= B && N % B == 0 : N == 0), op,
                    ": ar_logits must have shape [B K, W + 1 = ", W + 1, ", Va] (K >= 1 particles per sequence) for "
                    "d_logits ", d_logits.sizes(), ", got ", ar_logits.sizes());
  TORCH_CHECK_TYPE(drafts.scalar_type() == at::kLong && n_valid.scalar_type() == at::kLong, op,
                   ": drafts and n_valid must be int64, got ", drafts.scalar_type(), " and ", n_valid.scalar_type());
  TORCH_CHECK_VALUE(drafts.dim() == 2 && drafts.size(0) == N && drafts.size(1) == W, op, ": drafts must have shape [",
                    N, ", ", W, "], got ", drafts.sizes());
  TORCH_CHECK_VALUE(n_valid.dim() == 1 && n_valid.size(0) == N, op, ": n_valid must have shape [", N, "], got ",
                    n_valid.sizes());
  TORCH_CHECK_VALUE(poe_weight >= 0.0 && poe_weight <= 1.0, op, ": poe_weight must be in [0, 1], got ", poe_weight);
  TORCH_CHECK_VALUE(temperature > 0.0 && temperature < 1.0 / 0.0, op, ": temperature must be > 0 and finite, got ",
                    temperature);
  TORCH_CHECK_VALUE(mask_id >= -1 && mask_id < d_logits.size(2), op, ": mask_id must be in [0, V) = [0, ",
                    d_logits.size(2), ") or -1 (none), got ", mask_id);
  VerifyTensors a;
  // Slot s of particle n is uniform row (row_offset + n)(W + 1) + s: check the factors before multiplying.
  TORCH_CHECK_VALUE(row_offset >= 0 && uint64_t(row_offset) + uint64_t(N) <= kMaxRow / uint64_t(W + 1), op,
                    ": row_offset + particles must be at most 2^48 / (W + 1) = ", kMaxRow / uint64_t(W + 1),
                    " (each particle takes W + 1 uniform rows), got row_offset ", row_offset, " with ", N, " particles");
  a.rng = make_rng(seed, offset, row_offset * (W + 1), N * (W + 1), op);
  a.rng.row_offset = uint64_t(row_offset);
  a.filter = filter_args(top_k, top_p, min_p, Precision::kFP64, op);
  a.K = B > 0 ? N / B : 1;
  a.W = W;
  a.drafts = drafts.contiguous();
  a.n_valid = n_valid.contiguous();
  const auto opts = drafts.options();
  a.n_acc = at::empty({N}, opts);
  a.fix = at::empty({N}, opts);
  a.log_q = at::empty({N, W + 1}, opts.dtype(at::kDouble));
  a.log_pa = at::empty_like(a.log_q);
  a.log_pi = at::empty_like(a.log_q);
  return a;
}

template <typename T>
VerifyArgs<T> verify_args(const VerifyTensors& a, const at::Tensor& d_logits, const at::Tensor& ar_logits,
                          double poe_weight, double temperature, int64_t mask_id) {
  return VerifyArgs<T>{view3<T>(d_logits), view3<T>(ar_logits), a.drafts.const_data_ptr<int64_t>(),
                       a.n_valid.const_data_ptr<int64_t>(), a.K, a.W, poe_weight, temperature, mask_id, a.filter};
}

inline void raise_verify_status(Status s, int64_t V) {
  const char* op = "edlm_engine.ops.speculative_verify";
  TORCH_CHECK_VALUE(s.code != kBadTarget, op, ": drafts[", s.row, "] holds a token its q cannot draw (the mask id, an id outside [0, ", V,
                    "), a -inf logit, or one the filters cut): drafts come from q");
  raise_status(s, op, "the logits of particle", 0, V);
}

inline VerifyOut verify_out(VerifyTensors& a) {
  return VerifyOut{a.n_acc.mutable_data_ptr<int64_t>(), a.fix.mutable_data_ptr<int64_t>(),
                   a.log_q.mutable_data_ptr<double>(), a.log_pa.mutable_data_ptr<double>(),
                   a.log_pi.mutable_data_ptr<double>()};
}

// token_logprob ([R, V] logits, [R] targets) and sequence_logprob ([N, L, V], [N, L]).
struct LogprobArgs {
  at::Tensor targets, weights, rows;
};

inline LogprobArgs prepare_logprob(const at::Tensor& logits, const at::Tensor& targets,
                                   const c10::optional<at::Tensor>& weights, int64_t dims, const char* op) {
  check_logits(logits, dims, op);
  check_same_device(logits, targets, "logits", "targets", op);
  TORCH_CHECK_TYPE(targets.scalar_type() == at::kLong, op, ": targets must be int64, got ", targets.scalar_type());
  const auto lead = logits.sizes().slice(0, dims - 1);
  TORCH_CHECK_VALUE(targets.sizes() == lead, op, ": targets must have shape ", lead, ", got ", targets.sizes());
  LogprobArgs a;
  a.targets = targets.contiguous();
  if (weights.has_value()) {
    check_same_device(logits, *weights, "logits", "weights", op);
    TORCH_CHECK_TYPE(weights->is_floating_point() || weights->scalar_type() == at::kBool, op,
                     ": weights must be bool or float, got ", weights->scalar_type());
    TORCH_CHECK_VALUE(weights->sizes() == lead, op, ": weights must have shape ", lead, ", got ", weights->sizes());
    a.weights = weights->to(at::kDouble).contiguous();
  }
  a.rows = at::empty(lead, logits.options().dtype(at::kDouble));
  return a;
}

}  // namespace bind
}  // namespace edlm
