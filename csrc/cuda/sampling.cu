// CUDA sampling kernels.  One block per row; warps take tiles and draws.  Every floating-point reduction
// follows the canonical order of row_sampler.h (lane-sequential, xor-butterfly, tile-sequential), so the
// tokens equal the CPU kernel's bit for bit.  Build with -fmad=false so no multiply-add is fused.
#include <stdint.h>

#include "../common/philox.h"
#include "../common/resample.h"
#include "../common/row_sampler.h"
#include "sampling.cuh"

namespace edlm {
namespace cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;

enum class Mode : int { kCategorical = 0, kMasked = 1, kCandidates = 2 };

struct RowJob {
  Mode mode;
  int64_t num_samples;    // draws per row (k for candidates, 1 for masked)
  const int64_t* x_t;     // masked/candidates
  int64_t mask_id;
  const double* p_unmask;  // masked: [B]
  int64_t* tokens;        // categorical: [rows, n]; masked: x_s [rows]; candidates: x0 [k, rows]
  double* logp;           // categorical: [rows, n]; candidates: [rows, k]; masked: unused
};

__device__ void report(unsigned long long* status, int64_t row, int32_t code) {
  atomicMin(status, (static_cast<unsigned long long>(row) << 8) | static_cast<unsigned long long>(code));
}

__device__ double warp_max(double v) {
  for (int off = 16; off >= 1; off /= 2) {
    const double o = __shfl_xor_sync(0xffffffffu, v, off);
    v = o > v ? o : v;
  }
  return v;
}

// Same association as tree32: lane l < off adds lane l + off.
__device__ double warp_tree_sum(double v) {
  for (int off = 16; off >= 1; off /= 2) v = v + __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

// Reduce (best, arg) across the block: larger score wins, ties go to the lower index.
__device__ void block_argmax(float* best, int64_t* arg, float* s_best, int64_t* s_arg) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int off = 16; off >= 1; off /= 2) {
    const float ob = __shfl_xor_sync(0xffffffffu, *best, off);
    const int64_t oa = __shfl_xor_sync(0xffffffffu, *arg, off);
    if (oa >= 0 && (*arg < 0 || ob > *best || (ob == *best && oa < *arg))) {
      *best = ob;
      *arg = oa;
    }
  }
  if (lane == 0) {
    s_best[warp] = *best;
    s_arg[warp] = *arg;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < kWarps; ++w) {
      if (s_arg[w] >= 0 && (s_arg[0] < 0 || s_best[w] > s_best[0] || (s_best[w] == s_best[0] && s_arg[w] < s_arg[0]))) {
        s_best[0] = s_best[w];
        s_arg[0] = s_arg[w];
      }
    }
  }
  __syncthreads();
  *best = s_best[0];
  *arg = s_arg[0];
  __syncthreads();
}

__device__ float block_max_f32(float v, float* s) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int off = 16; off >= 1; off /= 2) {
    const float o = __shfl_xor_sync(0xffffffffu, v, off);
    v = o > v ? o : v;
  }
  if (lane == 0) s[warp] = v;
  __syncthreads();
  if (threadIdx.x == 0)
    for (int w = 1; w < kWarps; ++w) s[0] = s[w] > s[0] ? s[w] : s[0];
  __syncthreads();
  v = s[0];
  __syncthreads();
  return v;
}

template <typename T>
__device__ void write_draw(const RowJob& job, int64_t r, int64_t rows, int64_t j, int64_t tok, double lp) {
  if (job.mode == Mode::kCategorical) {
    job.tokens[r * job.num_samples + j] = tok;
    job.logp[r * job.num_samples + j] = lp;
  } else if (job.mode == Mode::kMasked) {
    job.tokens[r] = tok;
  } else {
    job.tokens[j * rows + r] = tok;
    job.logp[r * job.num_samples + j] = lp;
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads) row_kernel(Logits3<T> lg, RowJob job, RngArgs rng, double temperature,
                                                       const int64_t* excl, int64_t n_excl, Precision precision,
                                                       TileStat* workspace, unsigned long long* status) {
  const int64_t rows = lg.B * lg.L;
  const int64_t r = blockIdx.x;
  if (r >= rows) return;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const uint64_t grow = rng.row_offset + uint64_t(r);
  const int64_t n = job.num_samples;

  if (job.mode != Mode::kCategorical) {
    const int64_t xt = job.x_t[r];
    if (xt != job.mask_id) {
      if (threadIdx.x == 0) {
        if (job.mode == Mode::kMasked)
          job.tokens[r] = xt;
        else
          for (int64_t j = 0; j < n; ++j) job.tokens[j * rows + r] = xt;
      }
      return;
    }
    // fp32-gumbel takes the reference's masked step (gumbel_masked_scan): the mask entry competes in the argmax.
    if (job.mode == Mode::kMasked && !(precision == Precision::kFP32Gumbel && temperature > 0.0)) {
      const Philox4 blk = random_block(rng.seed, rng.offset, grow, 0);
      if (!(uniform53(blk.v[2], blk.v[3]) < job.p_unmask[r / lg.L])) {
        if (threadIdx.x == 0) job.tokens[r] = job.mask_id;
        return;
      }
    }
  }

  // The mask id is never a draw of the masked-diffusion ops; categorical takes the caller's list.
  const int64_t mask_excl = job.mask_id;
  const bool own_excl = job.mode != Mode::kCategorical;
  const RowInput<T> in{lg.row(r / lg.L, r % lg.L), lg.V, temperature > 0 ? 1.0 / temperature : 1.0,
                       own_excl ? &mask_excl : excl, own_excl ? 1 : n_excl};
  const int64_t n_tiles = num_tiles(lg.V);
  __shared__ int32_t s_status;
  __shared__ RowSummary s_sum;
  __shared__ float s_best[kWarps];
  __shared__ int64_t s_arg[kWarps];
  __shared__ double s_lane[kWarps][kLanes];
  if (threadIdx.x == 0) s_status = kRowOk;
  __syncthreads();

  if (temperature == 0.0) {
    float best = 0.0f;
    int64_t arg = -1;
    int32_t st = kRowOk;
    for (int64_t t = warp; t < n_tiles; t += kWarps)
      lane_argmax(in, lane_begin(t, lane, lg.V), lane_end(t, lane, lg.V), &best, &arg, &st);
    if (st != kRowOk) atomicMax(&s_status, st);
    block_argmax(&best, &arg, s_best, s_arg);
    if (threadIdx.x == 0) {
      int32_t code = s_status;
      if (code == kRowOk && (arg < 0 || best == -1.0f / 0.0f)) code = kRowAllNegInf;
      if (code != kRowOk) report(status, r, code);
      else
        for (int64_t j = 0; j < n; ++j) write_draw<T>(job, r, rows, j, arg, 0.0);
    }
    return;
  }

  TileStat* ts = workspace + r * n_tiles;
  for (int64_t t = warp; t < n_tiles; t += kWarps) {
    const int64_t b = lane_begin(t, lane, lg.V), e = lane_end(t, lane, lg.V);
    int32_t st = kRowOk;
    const double m = warp_max(lane_max(in, b, e, &st));
    if (st != kRowOk) atomicMax(&s_status, st);
    const double s = m == neg_inf() ? 0.0 : warp_tree_sum(lane_sum(in, b, e, m));
    if (lane == 0) {
      ts[t].m = m;
      ts[t].c = s;
    }
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    int32_t code = s_status;
    if (code == kRowOk) code = summarize_row(ts, n_tiles, &s_sum);
    if (code != kRowOk) report(status, r, code);
    s_status = code;
  }
  __syncthreads();
  if (s_status != kRowOk) return;
  const RowSummary sum = s_sum;

  if (precision == Precision::kFP32Gumbel) {
    float m = -1.0f / 0.0f;
    const int64_t chunk = ((lg.V + kThreads - 1) / kThreads + 3) / 4 * 4;
    const int64_t b = threadIdx.x * chunk < lg.V ? threadIdx.x * chunk : lg.V;
    const int64_t e = b + chunk < lg.V ? b + chunk : lg.V;
    if (job.mode == Mode::kMasked) {
      float best = 0.0f;
      int64_t arg = -1;
      gumbel_masked_scan(in, b, e, sum, job.p_unmask[r / lg.L], job.mask_id, rng.seed, rng.offset, grow, &best,
                         &arg);
      block_argmax(&best, &arg, s_best, s_arg);
      if (threadIdx.x == 0) job.tokens[r] = arg;
      return;
    }
    const float lm = lane_max_f32(in, b, e);
    m = block_max_f32(lm, s_best);
    for (int64_t j = 0; j < n; ++j) {
      float best = 0.0f;
      int64_t arg = -1;
      gumbel_scan(in, b, e, m, rng.seed, rng.offset, grow, j, &best, &arg);
      block_argmax(&best, &arg, s_best, s_arg);
      if (threadIdx.x == 0) write_draw<T>(job, r, rows, j, arg, token_logp(in, sum, arg));
    }
    return;
  }

  for (int64_t j = warp; j < n; j += kWarps) {
    const Philox4 blk = random_block(rng.seed, rng.offset, grow, uint64_t(j));
    const double target = uniform53(blk.v[0], blk.v[1]) * sum.Z;
    const int64_t t = select_tile(ts, n_tiles, target);
    s_lane[warp][lane] = lane_sum(in, lane_begin(t, lane, lg.V), lane_end(t, lane, lg.V), ts[t].m);
    __syncwarp();
    if (lane == 0) {
      double rem = tile_remainder(ts, t, sum, target);
      const int l = select_lane(s_lane[warp], &rem);
      const int64_t tok = select_in_lane(in, lane_begin(t, l, lg.V), lane_end(t, l, lg.V), ts[t].m, rem);
      write_draw<T>(job, r, rows, j, tok, token_logp(in, sum, tok));
    }
    __syncwarp();
  }
}

__global__ void sum_log_q_kernel(const double* logp, int64_t B, int64_t L, int64_t k, double* log_q) {
  const int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i >= B * k) return;
  const int64_t j = i / B, b = i % B;
  double s = 0.0;
  for (int64_t l = 0; l < L; ++l) s += logp[(b * L + l) * k + j];
  log_q[j * B + b] = s;
}

__global__ void resample_kernel(const double* E, int64_t B, int64_t k, RngArgs rng, double temperature, int64_t* index,
                                double* ess, unsigned long long* status) {
  const int64_t b = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (b >= B) return;
  const Philox4 blk = random_block(rng.seed, rng.offset, rng.row_offset + uint64_t(b), 0);
  const int32_t st = resample_row(E + b * k, k, temperature, uniform53(blk.v[0], blk.v[1]), index + b, ess + b);
  if (st != kRowOk) report(status, b, st);
}

__global__ void uniform_kernel(int64_t n, RngArgs rng, double* out) {
  const int64_t r = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (r >= n) return;
  const Philox4 blk = random_block(rng.seed, rng.offset, rng.row_offset + uint64_t(r), 0);
  out[r] = uniform53(blk.v[2], blk.v[3]);
}

template <typename T>
cudaError_t launch_rows(Logits3<T> lg, const RowJob& job, RngArgs rng, double temperature, const int64_t* excl,
                        int64_t n_excl, Precision precision, void* workspace, unsigned long long* status,
                        cudaStream_t stream) {
  const int64_t rows = lg.B * lg.L;
  if (rows == 0) return cudaSuccess;
  if (rows > 0x7FFFFFFFll) return cudaErrorInvalidValue;
  row_kernel<T><<<unsigned(rows), kThreads, 0, stream>>>(lg, job, rng, temperature, excl, n_excl, precision,
                                                         static_cast<TileStat*>(workspace), status);
  return cudaGetLastError();
}

}  // namespace

size_t workspace_bytes(int64_t rows, int64_t V) { return size_t(rows) * size_t(num_tiles(V)) * sizeof(TileStat); }

template <typename T>
cudaError_t categorical(Logits3<T> lg, int64_t num_samples, RngArgs rng, double temperature, const int64_t* excl,
                        int64_t n_excl, Precision precision, int64_t* tokens, double* logp, void* workspace,
                        unsigned long long* status, cudaStream_t stream) {
  const RowJob job{Mode::kCategorical, num_samples, nullptr, -1, nullptr, tokens, logp};
  return launch_rows(lg, job, rng, temperature, excl, n_excl, precision, workspace, status, stream);
}

template <typename T>
cudaError_t sample_masked(Logits3<T> lg, const int64_t* x_t, int64_t mask_id, const double* p_unmask, RngArgs rng,
                          double temperature, Precision precision, int64_t* x_s, void* workspace,
                          unsigned long long* status, cudaStream_t stream) {
  const RowJob job{Mode::kMasked, 1, x_t, mask_id, p_unmask, x_s, nullptr};
  return launch_rows(lg, job, rng, temperature, nullptr, 0, precision, workspace, status, stream);
}

template <typename T>
cudaError_t sample_candidates(Logits3<T> lg, const int64_t* x_t, int64_t mask_id, int64_t k, RngArgs rng,
                              double temperature, Precision precision, int64_t* x0, double* log_q, double* logp_ws,
                              void* workspace, unsigned long long* status, cudaStream_t stream) {
  const RowJob job{Mode::kCandidates, k, x_t, mask_id, nullptr, x0, logp_ws};
  const int64_t rows = lg.B * lg.L;
  cudaError_t err = cudaMemsetAsync(logp_ws, 0, size_t(rows * k) * sizeof(double), stream);
  if (err != cudaSuccess) return err;
  err = launch_rows(lg, job, rng, temperature, nullptr, 0, precision, workspace, status, stream);
  if (err != cudaSuccess) return err;
  const int64_t n = lg.B * k;
  if (n == 0) return cudaSuccess;
  sum_log_q_kernel<<<unsigned((n + 255) / 256), 256, 0, stream>>>(logp_ws, lg.B, lg.L, k, log_q);
  return cudaGetLastError();
}

cudaError_t importance_resample(const double* E, int64_t B, int64_t k, RngArgs rng, double temperature, int64_t* index,
                                double* ess, unsigned long long* status, cudaStream_t stream) {
  if (B == 0) return cudaSuccess;
  resample_kernel<<<unsigned((B + 127) / 128), 128, 0, stream>>>(E, B, k, rng, temperature, index, ess, status);
  return cudaGetLastError();
}

cudaError_t uniform(int64_t n, RngArgs rng, double* out, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  uniform_kernel<<<unsigned((n + 255) / 256), 256, 0, stream>>>(n, rng, out);
  return cudaGetLastError();
}

#define EDLM_INSTANTIATE(T)                                                                                    \
  template cudaError_t categorical<T>(Logits3<T>, int64_t, RngArgs, double, const int64_t*, int64_t, Precision, \
                                      int64_t*, double*, void*, unsigned long long*, cudaStream_t);            \
  template cudaError_t sample_masked<T>(Logits3<T>, const int64_t*, int64_t, const double*, RngArgs, double,    \
                                        Precision, int64_t*, void*, unsigned long long*, cudaStream_t);        \
  template cudaError_t sample_candidates<T>(Logits3<T>, const int64_t*, int64_t, int64_t, RngArgs, double,      \
                                            Precision, int64_t*, double*, double*, void*, unsigned long long*, \
                                            cudaStream_t);
EDLM_INSTANTIATE(float)
EDLM_INSTANTIATE(f16_t)
EDLM_INSTANTIATE(bf16_t)
#undef EDLM_INSTANTIATE

}  // namespace cuda
}  // namespace edlm
