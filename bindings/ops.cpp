// Op schemas (defined once) and their CPU implementations.
#include <torch/library.h>
#include <torch/types.h>

#include "../csrc/cpu/logprob.h"
#include "../csrc/cpu/sampling.h"
#include "../csrc/cpu/speculative.h"
#include "common.h"

namespace edlm {
namespace bind {
namespace {

std::tuple<at::Tensor, at::Tensor> categorical_cpu(const at::Tensor& logits, int64_t num_samples, int64_t seed,
                                                   int64_t offset, double temperature,
                                                   const c10::optional<at::Tensor>& exclude,
                                                   c10::string_view precision, int64_t top_k, double top_p,
                                                   double min_p, int64_t row_offset) {
  auto a = prepare_categorical(logits, num_samples, seed, offset, temperature, exclude, std::string(precision), top_k,
                               top_p, min_p, row_offset);
  const int64_t* ex = a.exclude.defined() ? a.exclude.const_data_ptr<int64_t>() : nullptr;
  const int64_t n_ex = a.exclude.defined() ? a.exclude.numel() : 0;
  const Status s = EDLM_DISPATCH_LOGITS(logits.scalar_type(), "edlm_engine.ops.categorical", [&] {
    return cpu::categorical(view3<scalar_t>(logits), num_samples, a.rng, temperature, a.filter, ex, n_ex, a.precision,
                            a.tokens.mutable_data_ptr<int64_t>(), a.logp.mutable_data_ptr<double>());
  });
  raise_status(s, "edlm_engine.ops.categorical", "logits", 0, logits.size(-1));
  return {a.tokens, a.logp};
}

at::Tensor sample_masked_cpu(const at::Tensor& logits, const at::Tensor& x_t, int64_t mask_id,
                             const at::Tensor& p_unmask, int64_t seed, int64_t offset, double temperature,
                             c10::string_view precision, int64_t top_k, double top_p, double min_p,
                             int64_t row_offset) {
  auto a = prepare_sample_masked(logits, x_t, mask_id, p_unmask, seed, offset, temperature, std::string(precision),
                                 top_k, top_p, min_p, row_offset);
  const Status s = EDLM_DISPATCH_LOGITS(logits.scalar_type(), "edlm_engine.ops.sample_masked", [&] {
    return cpu::sample_masked(view3<scalar_t>(logits), a.x_t.const_data_ptr<int64_t>(), mask_id,
                              a.p_unmask.const_data_ptr<double>(), a.rng, temperature, a.filter, a.precision,
                              a.out.mutable_data_ptr<int64_t>());
  });
  raise_status(s, "edlm_engine.ops.sample_masked", "logits", logits.size(1), logits.size(2));
  return a.out;
}

std::tuple<at::Tensor, at::Tensor> sample_candidates_cpu(const at::Tensor& logits, const at::Tensor& x_t,
                                                         int64_t mask_id, int64_t k, int64_t seed, int64_t offset,
                                                         double temperature, c10::string_view precision,
                                                         int64_t top_k, double top_p, double min_p,
                                                         int64_t row_offset) {
  auto a = prepare_sample_candidates(logits, x_t, mask_id, k, seed, offset, temperature, std::string(precision),
                                     top_k, top_p, min_p, row_offset);
  const Status s = EDLM_DISPATCH_LOGITS(logits.scalar_type(), "edlm_engine.ops.sample_candidates", [&] {
    return cpu::sample_candidates(view3<scalar_t>(logits), a.x_t.const_data_ptr<int64_t>(), mask_id, k, a.rng,
                                  temperature, a.filter, a.precision, a.x0.mutable_data_ptr<int64_t>(),
                                  a.log_q.mutable_data_ptr<double>());
  });
  raise_status(s, "edlm_engine.ops.sample_candidates", "logits", logits.size(1), logits.size(2));
  return {a.x0, a.log_q};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> sample_scored_cpu(const at::Tensor& logits, const at::Tensor& x_t, int64_t mask_id,
                                                     int64_t seed, int64_t offset, double temperature, int64_t top_k,
                                                     double top_p, double min_p, int64_t row_offset) {
  auto a = prepare_sample_scored(logits, x_t, mask_id, seed, offset, temperature, top_k, top_p, min_p, row_offset);
  const Status s = EDLM_DISPATCH_LOGITS(logits.scalar_type(), "edlm_engine.ops.sample_scored", [&] {
    return cpu::sample_scored(view3<scalar_t>(logits), a.x_t.const_data_ptr<int64_t>(), mask_id, a.rng, temperature,
                              a.filter, a.tokens.mutable_data_ptr<int64_t>(), a.scores.mutable_data_ptr<double>(),
                              a.argmax.mutable_data_ptr<int64_t>());
  });
  raise_status(s, "edlm_engine.ops.sample_scored", "logits", logits.size(1), logits.size(2));
  return {a.tokens, a.scores, a.argmax};
}

std::tuple<at::Tensor, at::Tensor> importance_resample_cpu(const at::Tensor& energies, int64_t seed, int64_t offset,
                                                           double temperature, int64_t row_offset) {
  auto a = prepare_importance_resample(energies, seed, offset, temperature, row_offset);
  const Status s = cpu::importance_resample(a.energies.const_data_ptr<double>(), a.energies.size(0),
                                            a.energies.size(1), a.rng, temperature,
                                            a.index.mutable_data_ptr<int64_t>(), a.ess.mutable_data_ptr<double>());
  raise_status(s, "edlm_engine.ops.importance_resample", "energies", 0, 0);
  return {a.index, a.ess};
}

at::Tensor uniform_cpu(const at::Tensor& like, int64_t seed, int64_t offset, int64_t row_offset) {
  RngArgs rng;
  at::Tensor out = prepare_uniform(like, seed, offset, row_offset, &rng);
  cpu::uniform(out.numel(), rng, out.mutable_data_ptr<double>());
  return out;
}

// Shared by token_logprob (dims 2) and sequence_logprob (dims 3, rows summed per sequence).
at::Tensor logprob_cpu(const at::Tensor& logits, const at::Tensor& targets, const c10::optional<at::Tensor>& weights,
                       int64_t dims, const char* op) {
  auto a = prepare_logprob(logits, targets, weights, dims, op);
  const double* w = a.weights.defined() ? a.weights.const_data_ptr<double>() : nullptr;
  const Status s = EDLM_DISPATCH_LOGITS(logits.scalar_type(), op, [&] {
    return cpu::token_logprob(view3<scalar_t>(logits), a.targets.const_data_ptr<int64_t>(), w,
                              a.rows.mutable_data_ptr<double>());
  });
  raise_status(s, op, "logits", dims == 3 ? logits.size(1) : 0, logits.size(-1));
  if (dims == 2) return a.rows;
  at::Tensor out = at::empty({logits.size(0)}, a.rows.options());
  cpu::sum_rows(a.rows.const_data_ptr<double>(), logits.size(0), logits.size(1), out.mutable_data_ptr<double>());
  return out;
}

at::Tensor token_logprob_cpu(const at::Tensor& logits, const at::Tensor& targets,
                             const c10::optional<at::Tensor>& weights) {
  return logprob_cpu(logits, targets, weights, 2, "edlm_engine.ops.token_logprob");
}

at::Tensor sequence_logprob_cpu(const at::Tensor& logits, const at::Tensor& targets,
                                const c10::optional<at::Tensor>& weights) {
  return logprob_cpu(logits, targets, weights, 3, "edlm_engine.ops.sequence_logprob");
}

using VerifyResult = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

VerifyResult speculative_verify_cpu(const at::Tensor& d_logits, const at::Tensor& ar_logits, const at::Tensor& drafts,
                                    const at::Tensor& n_valid, double poe_weight, double temperature, int64_t mask_id,
                                    int64_t top_k, double top_p, double min_p, int64_t seed, int64_t offset,
                                    int64_t row_offset) {
  const char* op = "edlm_engine.ops.speculative_verify";
  auto a = prepare_speculative_verify(d_logits, ar_logits, drafts, n_valid, poe_weight, temperature, mask_id, top_k,
                                      top_p, min_p, seed, offset, row_offset);
  const Status s = EDLM_DISPATCH_LOGITS(d_logits.scalar_type(), op, [&] {
    return cpu::speculative_verify(verify_args<scalar_t>(a, d_logits, ar_logits, poe_weight, temperature, mask_id),
                                   a.rng, verify_out(a));
  });
  raise_verify_status(s, d_logits.size(-1));
  return {a.n_acc, a.fix, a.log_q, a.log_pa, a.log_pi};
}

}  // namespace
}  // namespace bind
}  // namespace edlm

TORCH_LIBRARY(edlm_engine, m) {
  m.def(
      "categorical(Tensor logits, int num_samples, int seed, int offset, float temperature, Tensor? exclude, "
      "str precision, int top_k, float top_p, float min_p, int row_offset) -> (Tensor, Tensor)");
  m.def(
      "sample_masked(Tensor logits, Tensor x_t, int mask_id, Tensor p_unmask, int seed, int offset, "
      "float temperature, str precision, int top_k, float top_p, float min_p, int row_offset) -> Tensor");
  m.def(
      "sample_candidates(Tensor logits, Tensor x_t, int mask_id, int k, int seed, int offset, float temperature, "
      "str precision, int top_k, float top_p, float min_p, int row_offset) -> (Tensor, Tensor)");
  m.def(
      "sample_scored(Tensor logits, Tensor x_t, int mask_id, int seed, int offset, float temperature, int top_k, "
      "float top_p, float min_p, int row_offset) -> (Tensor, Tensor, Tensor)");
  m.def(
      "speculative_verify(Tensor d_logits, Tensor ar_logits, Tensor drafts, Tensor n_valid, float poe_weight, "
      "float temperature, int mask_id, int top_k, float top_p, float min_p, int seed, int offset, int row_offset) -> "
      "(Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def("importance_resample(Tensor energies, int seed, int offset, float temperature, int row_offset) -> (Tensor, Tensor)");
  m.def("uniform(Tensor like, int seed, int offset, int row_offset) -> Tensor");
  m.def("token_logprob(Tensor logits, Tensor targets, Tensor? weights) -> Tensor");
  m.def("sequence_logprob(Tensor logits, Tensor targets, Tensor? weights) -> Tensor");
}

TORCH_LIBRARY_IMPL(edlm_engine, CPU, m) {
  m.impl("categorical", &edlm::bind::categorical_cpu);
  m.impl("sample_masked", &edlm::bind::sample_masked_cpu);
  m.impl("sample_candidates", &edlm::bind::sample_candidates_cpu);
  m.impl("sample_scored", &edlm::bind::sample_scored_cpu);
  m.impl("speculative_verify", &edlm::bind::speculative_verify_cpu);
  m.impl("importance_resample", &edlm::bind::importance_resample_cpu);
  m.impl("uniform", &edlm::bind::uniform_cpu);
  m.impl("token_logprob", &edlm::bind::token_logprob_cpu);
  m.impl("sequence_logprob", &edlm::bind::sequence_logprob_cpu);
}
