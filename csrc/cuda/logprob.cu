// One block per row: a max pass and an exp-sum pass over the row (the second mostly from L2), float exp,
// per-thread float partial sums combined in float64.
#include <stdint.h>

#include "logprob.cuh"
#include "status.cuh"

namespace edlm {
namespace cuda {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxGrid = 0x7FFFFFFF;  // CUDA's limit on gridDim.x: more rows take more launches

template <typename T>
__global__ void __launch_bounds__(kThreads) token_logprob_kernel(Logits3<T> logits, const int64_t* targets, const double* weights,
                                                                 double* out, unsigned long long* status, int64_t first_row) {
  const int64_t r = first_row + blockIdx.x, R = logits.B * logits.L, V = logits.V;
  if (r >= R) return;
  const double w = weights ? weights[r] : 1.0;
  const int64_t tgt = targets[r];
  if (w == 0.0 || tgt < 0 || tgt >= V) {
    if (threadIdx.x == 0) {
      out[r] = 0.0;
      if (w != 0.0) report(status, r, kBadTarget);
    }
    return;
  }
  const T* x = logits.row(r / logits.L, r % logits.L);
  __shared__ float s_m[kThreads / 32];
  __shared__ double s_s[kThreads / 32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;

  float m = -1.0f / 0.0f;
  for (int64_t v = threadIdx.x; v < V; v += kThreads) {
    const float z = to_float(x[v]);
    m = z > m ? z : m;
  }
  for (int off = 16; off >= 1; off /= 2) {
    const float o = __shfl_xor_sync(0xffffffffu, m, off);
    m = o > m ? o : m;
  }
  if (lane == 0) s_m[warp] = m;
  __syncthreads();
  m = s_m[0];
  for (int i = 1; i < kThreads / 32; ++i) m = s_m[i] > m ? s_m[i] : m;

  float acc = 0.0f;
  double s = 0.0;
  int count = 0;
  for (int64_t v = threadIdx.x; v < V; v += kThreads) {
    acc += exp_f32(to_float(x[v]) - m);
    if (++count == 64) {  // bound the float partial sum's rounding
      s += double(acc);
      acc = 0.0f;
      count = 0;
    }
  }
  s += double(acc);
  for (int off = 16; off >= 1; off /= 2) s = s + __shfl_xor_sync(0xffffffffu, s, off);
  if (lane == 0) s_s[warp] = s;
  __syncthreads();
  if (threadIdx.x == 0) {
    double total = 0.0;
    for (int i = 0; i < kThreads / 32; ++i) total += s_s[i];
    if (m == -1.0f / 0.0f) {
      report(status, r, kNoFinite);
      out[r] = 0.0;
    } else if (!(total < 1.0 / 0.0) || m != m) {
      report(status, r, kNotFinite);
      out[r] = 0.0;
    } else {
      out[r] = w * logprob_from_lse(to_float(x[tgt]), m, total);
    }
  }
}

__global__ void sum_rows_kernel(const double* rows, int64_t N, int64_t L, double* out) {
  const int64_t n = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (n >= N) return;
  double s = 0.0;
  for (int64_t l = 0; l < L; ++l) s += rows[n * L + l];
  out[n] = s;
}

}  // namespace

template <typename T>
cudaError_t token_logprob(Logits3<T> logits, const int64_t* targets,
                          const double* weights, double* out, unsigned long long* status, cudaStream_t stream) {
  const int64_t R = logits.B * logits.L;
  if (R == 0) return cudaSuccess;
  for (int64_t first = 0; first < R; first += kMaxGrid) {
    const int64_t n = R - first < kMaxGrid ? R - first : kMaxGrid;
    token_logprob_kernel<T><<<unsigned(n), kThreads, 0, stream>>>(logits, targets, weights, out, status, first);
    const cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return err;
  }
  return cudaSuccess;
}

cudaError_t sum_rows(const double* rows, int64_t N, int64_t L, double* out, cudaStream_t stream) {
  if (N == 0) return cudaSuccess;
  sum_rows_kernel<<<unsigned((N + 127) / 128), 128, 0, stream>>>(rows, N, L, out);
  return cudaGetLastError();
}

template cudaError_t token_logprob<float>(Logits3<float>, const int64_t*, const double*,
                                          double*, unsigned long long*, cudaStream_t);
template cudaError_t token_logprob<f16_t>(Logits3<f16_t>, const int64_t*, const double*,
                                          double*, unsigned long long*, cudaStream_t);
template cudaError_t token_logprob<bf16_t>(Logits3<bf16_t>, const int64_t*, const double*,
                                           double*, unsigned long long*, cudaStream_t);

}  // namespace cuda
}  // namespace edlm
