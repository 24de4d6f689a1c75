// CUDA implementations of the ops defined in ops.cpp; compiled only in the CUDA build.
// The stream comes from c10's header: ATen/cuda/CUDAContext.h pulls in cuBLAS, cuSPARSE and cuSOLVER headers
// that a toolkit may lack.
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>
#include <torch/types.h>

#include "../csrc/cuda/logprob.cuh"
#include "../csrc/cuda/sampling.cuh"
#include "common.h"

namespace edlm {
namespace bind {
namespace {

void check_cuda(cudaError_t err, const char* op) {
  TORCH_CHECK(err == cudaSuccess, op, ": CUDA error: ", cudaGetErrorString(err));
}

// Device status word, read back once after the launch; the read is the op's only host sync.
struct DeviceStatus {
  at::Tensor word;
  explicit DeviceStatus(const at::Device& dev)
      : word(at::full({1}, -1, at::TensorOptions().dtype(at::kLong).device(dev))) {}
  unsigned long long* ptr() { return reinterpret_cast<unsigned long long*>(word.mutable_data_ptr<int64_t>()); }
  Status read() const { return unpack_status(static_cast<unsigned long long>(word.item<int64_t>())); }
};

// Null when the kernels read no tile stats (no rows, or an argmax at temperature 0).
struct Workspace {
  at::Tensor bytes;
  Workspace(const at::Tensor& like, int64_t rows, int64_t V, bool reads_tiles) {
    const auto n = int64_t(cuda::workspace_bytes(rows, V, reads_tiles));
    if (n > 0) bytes = at::empty({n}, like.options().dtype(at::kByte));
  }
  void* ptr() { return bytes.defined() ? bytes.mutable_data_ptr() : nullptr; }
};

std::tuple<at::Tensor, at::Tensor> categorical_cuda(const at::Tensor& logits, int64_t num_samples, int64_t seed,
                                                    int64_t offset, double temperature,
                                                    const c10::optional<at::Tensor>& exclude,
                                                    c10::string_view precision, int64_t top_k, double top_p,
                                                    double min_p, int64_t row_offset) {
  const char* op = "edlm_engine.ops.categorical";
  const c10::cuda::CUDAGuard guard(logits.device());
  auto a = prepare_categorical(logits, num_samples, seed, offset, temperature, exclude, std::string(precision), top_k,
                               top_p, min_p, row_offset);
  const int64_t* ex = a.exclude.defined() ? a.exclude.const_data_ptr<int64_t>() : nullptr;
  const int64_t n_ex = a.exclude.defined() ? a.exclude.numel() : 0;
  Workspace ws(logits, logits.size(0), logits.size(1), temperature > 0.0);
  DeviceStatus st(logits.device());
  const cudaError_t err = EDLM_DISPATCH_LOGITS(logits.scalar_type(), op, [&] {
    return cuda::categorical(view3<scalar_t>(logits), num_samples, a.rng, temperature, a.filter, ex, n_ex, a.precision,
                             a.tokens.mutable_data_ptr<int64_t>(), a.logp.mutable_data_ptr<double>(),
                             ws.ptr(), st.ptr(), c10::cuda::getCurrentCUDAStream());
  });
  check_cuda(err, op);
  raise_status(st.read(), op, "logits", 0, logits.size(-1));
  return {a.tokens, a.logp};
}

at::Tensor sample_masked_cuda(const at::Tensor& logits, const at::Tensor& x_t, int64_t mask_id,
                              const at::Tensor& p_unmask, int64_t seed, int64_t offset, double temperature,
                              c10::string_view precision, int64_t top_k, double top_p, double min_p,
                              int64_t row_offset) {
  const char* op = "edlm_engine.ops.sample_masked";
  const c10::cuda::CUDAGuard guard(logits.device());
  auto a = prepare_sample_masked(logits, x_t, mask_id, p_unmask, seed, offset, temperature, std::string(precision),
                                 top_k, top_p, min_p, row_offset);
  Workspace ws(logits, logits.size(0) * logits.size(1), logits.size(2), temperature > 0.0);
  DeviceStatus st(logits.device());
  const cudaError_t err = EDLM_DISPATCH_LOGITS(logits.scalar_type(), op, [&] {
    return cuda::sample_masked(view3<scalar_t>(logits), a.x_t.const_data_ptr<int64_t>(), mask_id,
                               a.p_unmask.const_data_ptr<double>(), a.rng, temperature, a.filter, a.precision,
                               a.out.mutable_data_ptr<int64_t>(), ws.ptr(), st.ptr(),
                               c10::cuda::getCurrentCUDAStream());
  });
  check_cuda(err, op);
  raise_status(st.read(), op, "logits", logits.size(1), logits.size(2));
  return a.out;
}

std::tuple<at::Tensor, at::Tensor> sample_candidates_cuda(const at::Tensor& logits, const at::Tensor& x_t,
                                                          int64_t mask_id, int64_t k, int64_t seed, int64_t offset,
                                                          double temperature, c10::string_view precision,
                                                          int64_t top_k, double top_p, double min_p,
                                                          int64_t row_offset) {
  const char* op = "edlm_engine.ops.sample_candidates";
  const c10::cuda::CUDAGuard guard(logits.device());
  auto a = prepare_sample_candidates(logits, x_t, mask_id, k, seed, offset, temperature, std::string(precision),
                                     top_k, top_p, min_p, row_offset);
  const int64_t rows = logits.size(0) * logits.size(1);
  Workspace ws(logits, rows, logits.size(2), temperature > 0.0);
  auto lp = at::empty({rows * k}, logits.options().dtype(at::kDouble));
  DeviceStatus st(logits.device());
  const cudaError_t err = EDLM_DISPATCH_LOGITS(logits.scalar_type(), op, [&] {
    return cuda::sample_candidates(view3<scalar_t>(logits), a.x_t.const_data_ptr<int64_t>(), mask_id, k, a.rng,
                                   temperature, a.filter, a.precision, a.x0.mutable_data_ptr<int64_t>(),
                                   a.log_q.mutable_data_ptr<double>(), lp.mutable_data_ptr<double>(),
                                   ws.ptr(), st.ptr(), c10::cuda::getCurrentCUDAStream());
  });
  check_cuda(err, op);
  raise_status(st.read(), op, "logits", logits.size(1), logits.size(2));
  return {a.x0, a.log_q};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> sample_scored_cuda(const at::Tensor& logits, const at::Tensor& x_t, int64_t mask_id,
                                                      int64_t seed, int64_t offset, double temperature, int64_t top_k,
                                                      double top_p, double min_p, int64_t row_offset) {
  const char* op = "edlm_engine.ops.sample_scored";
  const c10::cuda::CUDAGuard guard(logits.device());
  auto a = prepare_sample_scored(logits, x_t, mask_id, seed, offset, temperature, top_k, top_p, min_p, row_offset);
  Workspace ws(logits, logits.size(0) * logits.size(1), logits.size(2), true);
  DeviceStatus st(logits.device());
  const cudaError_t err = EDLM_DISPATCH_LOGITS(logits.scalar_type(), op, [&] {
    return cuda::sample_scored(view3<scalar_t>(logits), a.x_t.const_data_ptr<int64_t>(), mask_id, a.rng, temperature,
                               a.filter, a.tokens.mutable_data_ptr<int64_t>(), a.scores.mutable_data_ptr<double>(),
                               a.argmax.mutable_data_ptr<int64_t>(), ws.ptr(), st.ptr(),
                               c10::cuda::getCurrentCUDAStream());
  });
  check_cuda(err, op);
  raise_status(st.read(), op, "logits", logits.size(1), logits.size(2));
  return {a.tokens, a.scores, a.argmax};
}

std::tuple<at::Tensor, at::Tensor> importance_resample_cuda(const at::Tensor& energies, int64_t seed,
                                                            int64_t offset, double temperature, int64_t row_offset) {
  const char* op = "edlm_engine.ops.importance_resample";
  const c10::cuda::CUDAGuard guard(energies.device());
  auto a = prepare_importance_resample(energies, seed, offset, temperature, row_offset);
  DeviceStatus st(energies.device());
  check_cuda(cuda::importance_resample(a.energies.const_data_ptr<double>(), a.energies.size(0), a.energies.size(1),
                                       a.rng, temperature, a.index.mutable_data_ptr<int64_t>(),
                                       a.ess.mutable_data_ptr<double>(), st.ptr(), c10::cuda::getCurrentCUDAStream()),
             op);
  raise_status(st.read(), op, "energies", 0, 0);
  return {a.index, a.ess};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> speculative_verify_cuda(
    const at::Tensor& d_logits, const at::Tensor& ar_logits, const at::Tensor& drafts, const at::Tensor& n_valid,
    double poe_weight, double temperature, int64_t mask_id, int64_t top_k, double top_p, double min_p, int64_t seed,
    int64_t offset, int64_t row_offset) {
  const char* op = "edlm_engine.ops.speculative_verify";
  const c10::cuda::CUDAGuard guard(d_logits.device());
  auto a = prepare_speculative_verify(d_logits, ar_logits, drafts, n_valid, poe_weight, temperature, mask_id, top_k,
                                      top_p, min_p, seed, offset, row_offset);
  const auto bytes = int64_t(cuda::verify_workspace_bytes(ar_logits.size(0), d_logits.size(2), ar_logits.size(2)));
  const at::Tensor ws = at::empty({bytes}, d_logits.options().dtype(at::kByte));
  DeviceStatus st(d_logits.device());
  const cudaError_t err = EDLM_DISPATCH_LOGITS(d_logits.scalar_type(), op, [&] {
    return cuda::speculative_verify(verify_args<scalar_t>(a, d_logits, ar_logits, poe_weight, temperature, mask_id),
                                    a.rng, verify_out(a), ws.mutable_data_ptr(), st.ptr(),
                                    c10::cuda::getCurrentCUDAStream());
  });
  check_cuda(err, op);
  raise_verify_status(st.read(), d_logits.size(-1));
  return {a.n_acc, a.fix, a.log_q, a.log_pa, a.log_pi};
}

at::Tensor uniform_cuda(const at::Tensor& like, int64_t seed, int64_t offset, int64_t row_offset) {
  const c10::cuda::CUDAGuard guard(like.device());
  RngArgs rng;
  at::Tensor out = prepare_uniform(like, seed, offset, row_offset, &rng);
  check_cuda(cuda::uniform(out.numel(), rng, out.mutable_data_ptr<double>(), c10::cuda::getCurrentCUDAStream()),
             "edlm_engine.ops.uniform");
  return out;
}

at::Tensor logprob_cuda(const at::Tensor& logits, const at::Tensor& targets,
                        const c10::optional<at::Tensor>& weights, int64_t dims, const char* op) {
  const c10::cuda::CUDAGuard guard(logits.device());
  auto a = prepare_logprob(logits, targets, weights, dims, op);
  const double* w = a.weights.defined() ? a.weights.const_data_ptr<double>() : nullptr;
  DeviceStatus st(logits.device());
  const auto stream = c10::cuda::getCurrentCUDAStream();
  const cudaError_t err = EDLM_DISPATCH_LOGITS(logits.scalar_type(), op, [&] {
    return cuda::token_logprob(view3<scalar_t>(logits), a.targets.const_data_ptr<int64_t>(), w,
                               a.rows.mutable_data_ptr<double>(), st.ptr(), stream);
  });
  check_cuda(err, op);
  raise_status(st.read(), op, "logits", dims == 3 ? logits.size(1) : 0, logits.size(-1));
  if (dims == 2) return a.rows;
  at::Tensor out = at::empty({logits.size(0)}, a.rows.options());
  check_cuda(cuda::sum_rows(a.rows.const_data_ptr<double>(), logits.size(0), logits.size(1),
                            out.mutable_data_ptr<double>(), stream),
             op);
  return out;
}

at::Tensor token_logprob_cuda(const at::Tensor& logits, const at::Tensor& targets,
                              const c10::optional<at::Tensor>& weights) {
  return logprob_cuda(logits, targets, weights, 2, "edlm_engine.ops.token_logprob");
}

at::Tensor sequence_logprob_cuda(const at::Tensor& logits, const at::Tensor& targets,
                                 const c10::optional<at::Tensor>& weights) {
  return logprob_cuda(logits, targets, weights, 3, "edlm_engine.ops.sequence_logprob");
}

}  // namespace
}  // namespace bind
}  // namespace edlm

TORCH_LIBRARY_IMPL(edlm_engine, CUDA, m) {
  m.impl("categorical", &edlm::bind::categorical_cuda);
  m.impl("sample_masked", &edlm::bind::sample_masked_cuda);
  m.impl("sample_candidates", &edlm::bind::sample_candidates_cuda);
  m.impl("sample_scored", &edlm::bind::sample_scored_cuda);
  m.impl("importance_resample", &edlm::bind::importance_resample_cuda);
  m.impl("speculative_verify", &edlm::bind::speculative_verify_cuda);
  m.impl("uniform", &edlm::bind::uniform_cuda);
  m.impl("token_logprob", &edlm::bind::token_logprob_cuda);
  m.impl("sequence_logprob", &edlm::bind::sequence_logprob_cuda);
}
