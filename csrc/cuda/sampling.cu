// CUDA sampling kernels.  A block takes one row at a time (blocks stride over the rows); warps take tiles and
// draws.  Every floating-point reduction follows the canonical order of row_sampler.h (lane-sequential,
// xor-butterfly, tile-sequential), so the tokens equal the CPU kernel's bit for bit.  Build with -fmad=false so no multiply-add is fused.
#include <stdint.h>

#include "../common/gumbel.h"
#include "../common/philox.h"
#include "../common/resample.h"
#include "../common/row_sampler.h"
#include "sampling.cuh"
#include "status.cuh"

namespace edlm {
namespace cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;

enum class Mode : int { kCategorical = 0, kMasked = 1, kCandidates = 2 };

struct RowJob {
  int64_t num_samples;    // draws per row (k for candidates, 1 for masked)
  const int64_t* x_t;     // masked/candidates
  int64_t mask_id;
  const double* p_unmask;  // masked: [B]
  int64_t* tokens;        // categorical: [rows, n]; masked: x_s [rows]; candidates: x0 [k, rows]
  double* logp;           // categorical: [rows, n]; candidates: [rows, k]; masked: unused
};

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

template <Mode M>
__device__ void write_draw(const RowJob& job, int64_t r, int64_t rows, int64_t j, int64_t tok, double lp) {
  if (M == Mode::kCategorical) {
    job.tokens[r * job.num_samples + j] = tok;
    job.logp[r * job.num_samples + j] = lp;
  } else if (M == Mode::kMasked) {
    job.tokens[r] = tok;
  } else {
    job.tokens[j * rows + r] = tok;
    job.logp[r * job.num_samples + j] = lp;
  }
}

// Block-wide state of the row in hand.  Faults are ORed as bits and read as one code, so a row holding a NaN and
// a +inf reports what the CPU reports, whichever warp sees which (status.h).
struct RowShared {
  uint32_t fault_bits;
  int32_t code;
  RowSummary sum;
  float best[kWarps];
  int64_t arg[kWarps];
  double lane[kWarps][kLanes];
};

// Checks that need no read of the logits, and the copy or Bernoulli that may settle the row without one.
// Returns true when the row is done.  Every thread computes the same answer, so the block leaves together.
template <typename T, Mode M>
__device__ bool settle_without_reading(const Logits3<T>& lg, const RowJob& job, RngArgs rng, int64_t r, int64_t rows,
                                       Precision precision, double temperature, const int64_t* excl, int64_t n_excl,
                                       unsigned long long* status) {
  const bool lead = threadIdx.x == 0;
  if (M == Mode::kCategorical) {
    if (valid_exclude(excl, n_excl, lg.V)) return false;
    if (lead) report(status, r, kBadExclude);
    return true;
  }
  if (M == Mode::kMasked && !valid_probability(job.p_unmask[r / lg.L])) {
    if (lead) report(status, r, kBadPUnmask);
    return true;
  }
  const int64_t xt = job.x_t[r];
  if (xt != job.mask_id) {
    if (lead) {
      if (M == Mode::kMasked)
        job.tokens[r] = xt;
      else
        for (int64_t j = 0; j < job.num_samples; ++j) job.tokens[j * rows + r] = xt;
    }
    return true;
  }
  // fp32-gumbel takes the reference's masked step (gumbel_masked_scan): the mask entry competes in the argmax.
  if (M == Mode::kMasked && !(precision == Precision::kFP32Gumbel && temperature > 0.0)) {
    const Philox4 blk = random_block(rng.seed, rng.offset, rng.row_offset + uint64_t(r), 0);
    if (!(uniform53(blk.v[2], blk.v[3]) < job.p_unmask[r / lg.L])) {
      if (lead) job.tokens[r] = job.mask_id;
      return true;
    }
  }
  return false;
}

// Temperature 0: the first index of the largest drawable logit.
template <typename T, Mode M>
__device__ void argmax_row(const RowInput<T>& in, const RowJob& job, int64_t r, int64_t rows, RowShared& sh,
                           unsigned long long* status) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  float best = 0.0f;
  int64_t arg = -1;
  int32_t st = kOk;
  for (int64_t t = warp; t < num_tiles(in.V); t += kWarps)
    lane_argmax(in, lane_begin(t, lane, in.V), lane_end(t, lane, in.V), &best, &arg, &st);
  if (st != kOk) atomicOr(&sh.fault_bits, status_bit(st));
  block_argmax(&best, &arg, sh.best, sh.arg);
  if (threadIdx.x != 0) return;
  int32_t code = status_of_bits(sh.fault_bits);
  if (code == kOk && (arg < 0 || best == -1.0f / 0.0f)) code = kNoFinite;
  if (code != kOk)
    report(status, r, code);
  else
    for (int64_t j = 0; j < job.num_samples; ++j) write_draw<M>(job, r, rows, j, arg, 0.0);
}

// The pass over the row: tile stats into ts, then the summary into sh.sum.  False when the row failed.
template <typename T>
__device__ bool summarize_row_block(const RowInput<T>& in, TileStat* ts, int64_t r, RowShared& sh,
                                   unsigned long long* status) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t n_tiles = num_tiles(in.V);
  for (int64_t t = warp; t < n_tiles; t += kWarps) {
    const int64_t b = lane_begin(t, lane, in.V), e = lane_end(t, lane, in.V);
    int32_t st = kOk;
    const double m = warp_max(lane_max(in, b, e, &st));
    if (st != kOk) atomicOr(&sh.fault_bits, status_bit(st));
    const double s = m == neg_inf() ? 0.0 : warp_tree_sum(lane_sum(in, b, e, m));
    if (lane == 0) {
      ts[t].m = m;
      ts[t].c = s;
    }
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    int32_t code = status_of_bits(sh.fault_bits);
    if (code == kOk) code = summarize_row(ts, n_tiles, &sh.sum);
    if (code != kOk) report(status, r, code);
    sh.code = code;
  }
  __syncthreads();
  return sh.code == kOk;
}

// The reference-compatible truncated draws of precision "fp32-gumbel".
template <typename T, Mode M>
__device__ void gumbel_row(const RowInput<T>& in, const RowJob& job, RngArgs rng, int64_t r, int64_t rows,
                           int64_t L, RowShared& sh) {
  const uint64_t grow = rng.row_offset + uint64_t(r);
  const int64_t chunk = ((in.V + kThreads - 1) / kThreads + 3) / 4 * 4;
  const int64_t b = threadIdx.x * chunk < in.V ? threadIdx.x * chunk : in.V;
  const int64_t e = b + chunk < in.V ? b + chunk : in.V;
  if (M == Mode::kMasked) {
    float best = 0.0f;
    int64_t arg = -1;
    gumbel_masked_scan(in, b, e, sh.sum, job.p_unmask[r / L], job.mask_id, rng.seed, rng.offset, grow, &best, &arg);
    block_argmax(&best, &arg, sh.best, sh.arg);
    if (threadIdx.x == 0) job.tokens[r] = arg;
    return;
  }
  const float m = block_max_f32(lane_max_f32(in, b, e), sh.best);
  for (int64_t j = 0; j < job.num_samples; ++j) {
    float best = 0.0f;
    int64_t arg = -1;
    gumbel_scan(in, b, e, m, rng.seed, rng.offset, grow, j, &best, &arg);
    block_argmax(&best, &arg, sh.best, sh.arg);
    if (threadIdx.x == 0) write_draw<M>(job, r, rows, j, arg, token_logp(in, sh.sum, arg));
  }
}

// Exact draws: each warp takes draws j, finds the tile by binary search and the entry with its 32 lanes.
template <typename T, Mode M>
__device__ void exact_draws(const RowInput<T>& in, const TileStat* ts, const RowJob& job, RngArgs rng, int64_t r,
                            int64_t rows, RowShared& sh) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const RowSummary sum = sh.sum;
  for (int64_t j = warp; j < job.num_samples; j += kWarps) {
    const Philox4 blk = random_block(rng.seed, rng.offset, rng.row_offset + uint64_t(r), uint64_t(j));
    const double target = uniform53(blk.v[0], blk.v[1]) * sum.Z;
    const int64_t t = select_tile(ts, sum.n_tiles, target);
    sh.lane[warp][lane] = lane_sum(in, lane_begin(t, lane, in.V), lane_end(t, lane, in.V), ts[t].m);
    __syncwarp();
    if (lane == 0) {
      double rem = tile_remainder(ts, t, sum, target);
      const int l = select_lane(sh.lane[warp], &rem);
      const int64_t tok = select_in_lane(in, lane_begin(t, l, in.V), lane_end(t, l, in.V), ts[t].m, rem);
      write_draw<M>(job, r, rows, j, tok, token_logp(in, sum, tok));
    }
    __syncwarp();
  }
}

template <typename T, Mode M>
__device__ void sample_row(const Logits3<T>& lg, const RowJob& job, RngArgs rng, double temperature,
                           const int64_t* excl, int64_t n_excl, Precision precision, TileStat* ts, int64_t r,
                           RowShared& sh, unsigned long long* status) {
  const int64_t rows = lg.B * lg.L;
  if (settle_without_reading<T, M>(lg, job, rng, r, rows, precision, temperature, excl, n_excl, status)) return;
  // The mask id is never a draw of the masked-diffusion ops; categorical takes the caller's list.
  const int64_t mask_excl = job.mask_id;
  const bool own_excl = M != Mode::kCategorical;
  const RowInput<T> in{lg.row(r / lg.L, r % lg.L), lg.V, temperature > 0 ? 1.0 / temperature : 1.0,
                       own_excl ? &mask_excl : excl, own_excl ? 1 : n_excl};
  if (threadIdx.x == 0) sh.fault_bits = 0;
  __syncthreads();
  if (temperature == 0.0) return argmax_row<T, M>(in, job, r, rows, sh, status);
  if (!summarize_row_block(in, ts, r, sh, status)) return;
  if (precision == Precision::kFP32Gumbel) return gumbel_row<T, M>(in, job, rng, r, rows, lg.L, sh);
  exact_draws<T, M>(in, ts, job, rng, r, rows, sh);
}

// Blocks stride over the rows: any row count fits one launch, and the workspace holds one row's tile stats per
// block (null at temperature 0, which needs none).
template <typename T, Mode M>
__global__ void __launch_bounds__(kThreads) row_kernel(Logits3<T> lg, RowJob job, RngArgs rng, double temperature,
                                                       const int64_t* excl, int64_t n_excl, Precision precision,
                                                       TileStat* workspace, unsigned long long* status) {
  __shared__ RowShared sh;
  const int64_t rows = lg.B * lg.L;
  TileStat* ts = workspace ? workspace + int64_t(blockIdx.x) * num_tiles(lg.V) : nullptr;
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    __syncthreads();  // the previous row's last reads of sh and ts are done before this row writes them
    sample_row<T, M>(lg, job, rng, temperature, excl, n_excl, precision, ts, r, sh, status);
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
  if (st != kOk) report(status, b, st);
}

__global__ void uniform_kernel(int64_t n, RngArgs rng, double* out) {
  const int64_t r = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (r >= n) return;
  const Philox4 blk = random_block(rng.seed, rng.offset, rng.row_offset + uint64_t(r), 0);
  out[r] = uniform53(blk.v[2], blk.v[3]);
}

// Blocks for a launch over `rows` rows: enough to fill any current GPU several times over, and few enough that
// the per-block workspace stays within kWorkspaceBudget even at V = 2^31 - 1.
constexpr int64_t kMaxBlocks = 4096;
constexpr int64_t kWorkspaceBudget = int64_t(64) << 20;

int64_t grid_blocks(int64_t rows, int64_t V) {
  const int64_t per_block = num_tiles(V) * int64_t(sizeof(TileStat));
  int64_t blocks = rows < kMaxBlocks ? rows : kMaxBlocks;
  if (blocks * per_block > kWorkspaceBudget) blocks = kWorkspaceBudget / per_block;
  return blocks > 1 ? blocks : 1;
}

template <typename T, Mode M>
cudaError_t launch_rows(Logits3<T> lg, const RowJob& job, RngArgs rng, double temperature, const int64_t* excl,
                        int64_t n_excl, Precision precision, void* workspace, unsigned long long* status,
                        cudaStream_t stream) {
  const int64_t rows = lg.B * lg.L;
  if (rows == 0) return cudaSuccess;
  row_kernel<T, M><<<unsigned(grid_blocks(rows, lg.V)), kThreads, 0, stream>>>(
      lg, job, rng, temperature, excl, n_excl, precision, static_cast<TileStat*>(workspace), status);
  return cudaGetLastError();
}

}  // namespace

size_t workspace_bytes(int64_t rows, int64_t V, double temperature) {
  if (rows == 0 || temperature == 0.0) return 0;
  return size_t(grid_blocks(rows, V)) * size_t(num_tiles(V)) * sizeof(TileStat);
}

template <typename T>
cudaError_t categorical(Logits3<T> lg, int64_t num_samples, RngArgs rng, double temperature, const int64_t* excl,
                        int64_t n_excl, Precision precision, int64_t* tokens, double* logp, void* workspace,
                        unsigned long long* status, cudaStream_t stream) {
  const RowJob job{num_samples, nullptr, -1, nullptr, tokens, logp};
  return launch_rows<T, Mode::kCategorical>(lg, job, rng, temperature, excl, n_excl, precision, workspace, status,
                                            stream);
}

template <typename T>
cudaError_t sample_masked(Logits3<T> lg, const int64_t* x_t, int64_t mask_id, const double* p_unmask, RngArgs rng,
                          double temperature, Precision precision, int64_t* x_s, void* workspace,
                          unsigned long long* status, cudaStream_t stream) {
  const RowJob job{1, x_t, mask_id, p_unmask, x_s, nullptr};
  return launch_rows<T, Mode::kMasked>(lg, job, rng, temperature, nullptr, 0, precision, workspace, status, stream);
}

template <typename T>
cudaError_t sample_candidates(Logits3<T> lg, const int64_t* x_t, int64_t mask_id, int64_t k, RngArgs rng,
                              double temperature, Precision precision, int64_t* x0, double* log_q, double* logp_ws,
                              void* workspace, unsigned long long* status, cudaStream_t stream) {
  const RowJob job{k, x_t, mask_id, nullptr, x0, logp_ws};
  const int64_t rows = lg.B * lg.L;
  if (rows * k > 0) {  // with nothing to draw logp_ws may be null
    cudaError_t err = cudaMemsetAsync(logp_ws, 0, size_t(rows * k) * sizeof(double), stream);
    if (err == cudaSuccess)
      err = launch_rows<T, Mode::kCandidates>(lg, job, rng, temperature, nullptr, 0, precision, workspace, status,
                                              stream);
    if (err != cudaSuccess) return err;
  }
  const int64_t n = lg.B * k;  // L = 0 still gives log_q = 0 for each of the B sequences
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
