// CUDA sampling kernels.  A block takes one row at a time (blocks stride over the rows); warps take tiles and
// draws.  Every floating-point reduction follows the canonical order of row_sampler.h (lane-sequential,
// xor-butterfly, tile-sequential), so the tokens equal the CPU kernel's bit for bit.  Build with -fmad=false so no multiply-add is fused.
#include <stdint.h>

#include "../common/filter.h"
#include "../common/gumbel.h"
#include "../common/philox.h"
#include "../common/resample.h"
#include "../common/row_sampler.h"
#include "../common/verify.h"
#include "sampling.cuh"
#include "status.cuh"

namespace edlm {
namespace cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;

enum class Mode : int { kCategorical = 0, kMasked = 1, kCandidates = 2, kScored = 3 };

struct RowJob {
  int64_t num_samples;     // draws per row (k for candidates, 1 for masked and scored)
  const int64_t* x_t;      // masked/candidates/scored
  int64_t mask_id;
  const double* p_unmask;  // masked: [B]
  int64_t* tokens;         // categorical: [rows, n]; masked, scored: [rows]; candidates: x0 [k, rows]
  double* logp;            // categorical: [rows, n]; candidates: [rows, k]; scored: scores [4, rows]
  FilterArgs filter;
  int64_t* argmax = nullptr;  // scored: [rows]
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

__device__ int32_t warp_sum_int(int32_t v) {
  for (int off = 16; off >= 1; off /= 2) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

__device__ void warp_range(float* lo, float* hi) {
  for (int off = 16; off >= 1; off /= 2) {
    const float l = __shfl_xor_sync(0xffffffffu, *lo, off), h = __shfl_xor_sync(0xffffffffu, *hi, off);
    *lo = l < *lo ? l : *lo;
    *hi = h > *hi ? h : *hi;
  }
}

// The two largest of the warp's (top1, top2) pairs, in every lane.
__device__ void warp_top2(double* top1, double* top2) {
  for (int off = 16; off >= 1; off /= 2) {
    const double a = __shfl_xor_sync(0xffffffffu, *top1, off), b = __shfl_xor_sync(0xffffffffu, *top2, off);
    keep_top2(a, top1, top2);
    keep_top2(b, top1, top2);
  }
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
  } else if (M == Mode::kMasked || M == Mode::kScored) {
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
  // filters and scores (filter.h)
  double M, reduced, h_num, top1[kWarps], top2[kWarps];
  unsigned long long count;
  float x_lo, x_hi;
  int64_t n_drawable;
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
  if (xt != job.mask_id && job.mask_id >= 0) {  // sample_scored's mask_id -1: every position is drawn
    if (lead) {
      if (M == Mode::kCandidates)
        for (int64_t j = 0; j < job.num_samples; ++j) job.tokens[j * rows + r] = xt;
      else
        job.tokens[r] = xt;
      if (M == Mode::kScored) job.argmax[r] = xt;
      if (M == Mode::kScored) {
        const RowScores u = unread_scores();
        const double vals[kNumScores] = {u.p_draw, u.p_top1, u.p_top2, u.entropy};
        for (int i = 0; i < kNumScores; ++i) job.logp[i * rows + r] = vals[i];
      }
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

// The pass over the row: tile stats into ts, then the summary into sh.sum; with kScores also the entropy numerator
// (sh.h_num) and the second largest kept z (sh.top2[0]).  False when the row failed.
// Tile t of a row by one warp: its max and sum into ts[t] (lane 0 writes), faults ORed into sh.fault_bits.
template <typename In>
__device__ void tile_block(const In& in, int64_t t, TileStat* ts, RowShared& sh) {
  const int lane = threadIdx.x & 31;
  const int64_t b = lane_begin(t, lane, in.V), e = lane_end(t, lane, in.V);
  int32_t st = kOk;
  const double m = warp_max(lane_max(in, b, e, &st));
  if (st != kOk) atomicOr(&sh.fault_bits, status_bit(st));
  const double s = m == neg_inf() ? 0.0 : warp_tree_sum(lane_sum(in, b, e, m));
  if (lane == 0) {
    ts[t].m = m;
    ts[t].c = s;
    ts[t].w = 0.0;
  }
}

// Any row type of row_sampler.h; kScores only with RowInput.  An empty row (kNoFinite) is reported unless
// report_empty is false (verify's residual, whose emptiness is an answer).
template <typename In, bool kScores>
__device__ bool summarize_row_block(const In& in, TileStat* ts, int64_t r, RowShared& sh, unsigned long long* status,
                                    bool report_empty = true) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t n_tiles = num_tiles(in.V);
  double top1 = neg_inf(), top2 = neg_inf();
  for (int64_t t = warp; t < n_tiles; t += kWarps) {
    if constexpr (kScores) {  // the sum and the entropy terms from one exp per entry
      const int64_t b = lane_begin(t, lane, in.V), e = lane_end(t, lane, in.V);
      int32_t st = kOk;
      const double m = warp_max(lane_max(in, b, e, &st));
      if (st != kOk) atomicOr(&sh.fault_bits, status_bit(st));
      double s = 0.0, w = 0.0;
      if (m != neg_inf()) {
        w = warp_tree_sum(lane_entropy_terms(in, b, e, m, &s, &top1, &top2));
        s = warp_tree_sum(s);
      }
      if (lane == 0) {
        ts[t].m = m;
        ts[t].c = s;
        ts[t].w = w;
      }
    } else {
      tile_block(in, t, ts, sh);
    }
  }
  if constexpr (kScores) {
    warp_top2(&top1, &top2);
    if (lane == 0) {
      sh.top1[warp] = top1;
      sh.top2[warp] = top2;
    }
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    int32_t code = status_of_bits(sh.fault_bits);
    if (kScores && code == kOk) {
      sh.h_num = entropy_numerator(ts, n_tiles, tiles_max(ts, n_tiles));
      for (int w = 1; w < kWarps; ++w) {
        keep_top2(sh.top1[w], &sh.top1[0], &sh.top2[0]);
        keep_top2(sh.top2[w], &sh.top1[0], &sh.top2[0]);
      }
    }
    if (code == kOk) code = summarize_row(ts, n_tiles, &sh.sum);
    if (code != kOk && (report_empty || code != kNoFinite)) report(status, r, code);
    sh.code = code;
  }
  __syncthreads();
  return sh.code == kOk;
}

// A block-wide reduction's result in every thread (thread 0 computed it into sh.reduced).
__device__ double share(RowShared& sh) {
  __syncthreads();
  const double v = sh.reduced;
  __syncthreads();
  return v;
}

// The filters' cut (filter.h) into in->z_cut: a pass for each tile's max, range and count, then the searches,
// each candidate cut counted or weighed by the warps tile by tile and summed by thread 0 in tile order.
template <typename T>
__device__ bool find_cut_block(RowInput<T>* in, const FilterArgs& f, TileStat* ts, int64_t r, RowShared& sh,
                               unsigned long long* status) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t n_tiles = num_tiles(in->V);
  for (int64_t t = warp; t < n_tiles; t += kWarps) {
    const int64_t b = lane_begin(t, lane, in->V), e = lane_end(t, lane, in->V);
    int32_t st = kOk, n = 0;
    const double m = warp_max(lane_max(*in, b, e, &st));
    if (st != kOk) atomicOr(&sh.fault_bits, status_bit(st));
    float lo = 1.0f / 0.0f, hi = -1.0f / 0.0f;
    lane_range(*in, b, e, &lo, &hi, &n);
    warp_range(&lo, &hi);
    n = warp_sum_int(n);
    if (lane == 0) ts[t] = TileStat{m, 0.0, 0.0, lo, hi, n, 0};
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    sh.M = tiles_max(ts, n_tiles);
    sh.x_lo = 1.0f / 0.0f;
    sh.x_hi = -1.0f / 0.0f;
    sh.n_drawable = 0;
    for (int64_t t = 0; t < n_tiles; ++t) {
      sh.x_lo = ts[t].x_lo < sh.x_lo ? ts[t].x_lo : sh.x_lo;
      sh.x_hi = ts[t].x_hi > sh.x_hi ? ts[t].x_hi : sh.x_hi;
      sh.n_drawable += ts[t].n;
    }
    int32_t code = status_of_bits(sh.fault_bits);
    if (code == kOk && sh.M == neg_inf()) code = kNoFinite;
    if (code != kOk) report(status, r, code);
    sh.code = code;
  }
  __syncthreads();
  if (sh.code != kOk) return false;
  auto count = [&](double cut) {
    if (threadIdx.x == 0) sh.count = 0;
    __syncthreads();
    for (int64_t t = warp; t < n_tiles; t += kWarps) {
      const int64_t known = tile_count_bound(ts[t], in->inv_tau, cut);  // the same in every lane of the warp
      const int32_t c = known >= 0 ? 0 : warp_sum_int(lane_count(*in, lane_begin(t, lane, in->V),
                                                                 lane_end(t, lane, in->V), cut));
      if (lane == 0) atomicAdd(&sh.count, static_cast<unsigned long long>(known >= 0 ? known : c));
    }
    __syncthreads();
    if (threadIdx.x == 0) sh.reduced = double(sh.count);
    return int64_t(share(sh));
  };
  auto mass = [&](double cut) {
    RowInput<T> at = *in;
    at.z_cut = cut;
    for (int64_t t = warp; t < n_tiles; t += kWarps) {
      const double m = ts[t].m;
      const double sum = m < cut ? 0.0 : warp_tree_sum(lane_sum(at, lane_begin(t, lane, in->V),
                                                               lane_end(t, lane, in->V), m));
      if (lane == 0) ts[t].w = sum;
    }
    __syncthreads();
    if (threadIdx.x == 0) sh.reduced = tiles_mass(ts, n_tiles, sh.M);
    return share(sh);
  };
  in->z_cut = filter_cut(f, in->inv_tau, sh.x_lo, sh.x_hi, sh.n_drawable, sh.M, count, mass);
  return true;
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

// kScored: the drawn token (already in job.tokens[r]) and the scores of the filtered distribution.
template <typename T>
__device__ void write_scores(const RowInput<T>& in, const RowJob& job, int64_t r, int64_t rows, RowShared& sh) {
  __syncthreads();  // the draw's lane has written the token
  if (threadIdx.x != 0) return;
  const RowScores sc = row_scores(sh.sum, sh.h_num, sh.top2[0], load_z(in, job.tokens[r]));
  const double vals[kNumScores] = {sc.p_draw, sc.p_top1, sc.p_top2, sc.entropy};
  for (int i = 0; i < kNumScores; ++i) job.logp[i * rows + r] = vals[i];
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
  const bool no_mask = own_excl && job.mask_id < 0;
  RowInput<T> in = row_input(lg, r, temperature, no_mask ? nullptr : own_excl ? &mask_excl : excl,
                             no_mask ? 0 : own_excl ? 1 : n_excl);
  if (threadIdx.x == 0) sh.fault_bits = 0;
  __syncthreads();
  // Temperature 0 is the argmax, which every filter keeps; only the scored op still needs the distribution.
  if (temperature == 0.0 && M != Mode::kScored) return argmax_row<T, M>(in, job, r, rows, sh, status);
  if (filters_on(job.filter) && !find_cut_block(&in, job.filter, ts, r, sh, status)) return;
  if (!summarize_row_block<RowInput<T>, M == Mode::kScored>(in, ts, r, sh, status)) return;
  if (M == Mode::kScored && threadIdx.x == 0) {  // the argmax from the summary: one tile, not another pass
    job.argmax[r] = argmax_from_tiles(in, ts, sh.sum.n_tiles, sh.sum.M);
    if (temperature == 0.0) job.tokens[r] = job.argmax[r];
  }
  if (M == Mode::kScored && temperature == 0.0) return write_scores(in, job, r, rows, sh);
  if (precision == Precision::kFP32Gumbel) return gumbel_row<T, M>(in, job, rng, r, rows, lg.L, sh);
  exact_draws<T, M>(in, ts, job, rng, r, rows, sh);
  if (M == Mode::kScored) write_scores(in, job, r, rows, sh);
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

// ---- speculative verification (verify.h): a block per particle, its window positions in order.

// Where a particle's tile stats live in its block's workspace: q, p_AR, pi, then the residual's.
__host__ __device__ inline int64_t verify_tiles(int64_t V, int64_t Va) { return 3 * num_tiles(V) + num_tiles(Va); }

// Position j's summaries, shared by the block: q, p_AR and pi.
struct PositionShared {
  RowSummary q, pa, pi;
};

// One draw from a row summarized in ts and sum, by warp 0 as exact_draws does; the token in every thread.
template <typename In>
__device__ int64_t draw_block(const In& in, const TileStat* ts, const RowSummary& sum, RowShared& sh, double u) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (warp == 0) {
    const double target = u * sum.Z;
    const int64_t t = select_tile(ts, sum.n_tiles, target);
    sh.lane[0][lane] = lane_sum(in, lane_begin(t, lane, in.V), lane_end(t, lane, in.V), ts[t].m);
    __syncwarp();
    if (lane == 0) {
      double rem = tile_remainder(ts, t, sum, target);
      const int l = select_lane(sh.lane[0], &rem);
      sh.arg[0] = select_in_lane(in, lane_begin(t, l, in.V), lane_end(t, l, in.V), ts[t].m, rem);
    }
  }
  __syncthreads();
  const int64_t token = sh.arg[0];
  __syncthreads();
  return token;
}

// Position j's rows and their three normalizers in one pass: a warp takes tile t of the denoiser's and of the AR
// model's row and summarizes it for q, p_AR and pi while it is in cache.  The three rows' faults OR into one word
// and the summaries' codes merge lowest-first, as the CPU's position() merges them.
template <typename T>
__device__ bool position_block(const VerifyArgs<T>& args, int64_t n, int64_t j, TileStat* ts, RowShared& sh,
                               PositionShared& ps, unsigned long long* status, WindowPosition<T>* p) {
  const int warp = threadIdx.x >> 5;
  p->rows = window_rows(args, n, j, &args.mask_id);
  if (filters_on(args.filter) && !find_cut_block(&p->rows.q, args.filter, ts, n, sh, status)) return false;
  const int64_t tq = num_tiles(args.d.V), ta = num_tiles(args.a.V);
  TileStat *q = ts, *pa = ts + tq, *pi = ts + tq + ta;
  for (int64_t t = warp; t < (tq > ta ? tq : ta); t += kWarps) {
    if (t < tq) tile_block(p->rows.q, t, q, sh);
    if (t < ta) tile_block(p->rows.pa, t, pa, sh);
    if (t < tq) tile_block(p->rows.pi, t, pi, sh);
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    int32_t code = status_of_bits(sh.fault_bits);
    if (code == kOk)
      code = merge_status(merge_status(summarize_row(q, tq, &ps.q), summarize_row(pa, ta, &ps.pa)),
                          summarize_row(pi, tq, &ps.pi));
    if (code != kOk) report(status, n, code);
    sh.code = code;
  }
  __syncthreads();
  p->q = Normalized{ps.q.M, ps.q.log_Z};
  p->pa = Normalized{ps.pa.M, ps.pa.log_Z};
  p->pi = Normalized{ps.pi.M, ps.pi.log_Z};
  return sh.code == kOk;
}

// The CPU's verify_row with block-wide passes; every branch depends only on values all threads share.
template <typename T>
__device__ void verify_row_block(const VerifyArgs<T>& args, RngArgs rng, int64_t n, TileStat* ts, RowShared& sh,
                                 PositionShared& ps, unsigned long long* status, const VerifyOut& out) {
  const int64_t W = args.W, base = n * (W + 1);
  const int64_t n_valid = args.n_valid[n] < W + 1 ? args.n_valid[n] : W + 1;
  if (threadIdx.x == 0) {
    for (int64_t s = 0; s <= W; ++s) out.log_q[base + s] = out.log_pa[base + s] = out.log_pi[base + s] = 0.0;
    out.n_acc[n] = 0;
    out.fix[n] = -1;
    sh.fault_bits = 0;
  }
  __syncthreads();
  WindowPosition<T> at;
  int64_t j = 0;
  for (; j < (W < n_valid ? W : n_valid); ++j) {
    const int64_t y = args.drafts[n * W + j];
    if (bad_draft(args, y)) {
      if (threadIdx.x == 0) report(status, n, kBadTarget);
      return;
    }
    if (!position_block(args, n, j, ts, sh, ps, status, &at)) return;
    if (undrawable(at, y)) {
      if (threadIdx.x == 0) report(status, n, kBadTarget);
      return;
    }
    if (threadIdx.x == 0) write_log_probs(at, y, out, base + j);
    if (!accepts(at, y, verify_uniform(rng, n, W, j))) break;
  }
  if (threadIdx.x == 0) out.n_acc[n] = j;
  if (j >= n_valid) return;
  if (j == W && !position_block(args, n, j, ts, sh, ps, status, &at)) return;  // every draft passed: the next row
  const double u = verify_uniform(rng, n, W, W);
  const int64_t tq = num_tiles(args.d.V), ta = num_tiles(args.a.V);
  int64_t token = -1;
  if (j < W) {  // rejected at j: the residual, unless its mass is 0
    TileStat* res_ts = ts + 2 * tq + ta;
    const ResidualInput<T> res{at.rows.pi, at.rows.q, at.pi, at.q, args.d.V, at.rows.q.excl, at.rows.q.n_excl};
    if (summarize_row_block<ResidualInput<T>, false>(res, res_ts, n, sh, status, /*report_empty=*/false))
      token = draw_block(res, res_ts, sh.sum, sh, u);
    else if (sh.code != kNoFinite)
      return;
  }
  if (token < 0) token = draw_block(at.rows.pi, ts + tq + ta, ps.pi, sh, u);  // pi's tiles from its position pass
  if (threadIdx.x == 0) {
    out.fix[n] = token;
    write_log_probs(at, token, out, base + j);
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads) verify_kernel(VerifyArgs<T> args, RngArgs rng, VerifyOut out,
                                                          TileStat* workspace, unsigned long long* status) {
  __shared__ RowShared sh;
  __shared__ PositionShared ps;
  TileStat* ts = workspace + int64_t(blockIdx.x) * verify_tiles(args.d.V, args.a.V);
  for (int64_t n = blockIdx.x; n < args.a.B; n += gridDim.x) {
    __syncthreads();  // the previous particle's last reads of sh, ps and ts are done
    verify_row_block(args, rng, n, ts, sh, ps, status, out);
  }
}

// Blocks for a launch over `rows` rows: enough to fill any current GPU several times over, and few enough that
// the per-block workspace stays within kWorkspaceBudget even at V = 2^31 - 1.
constexpr int64_t kMaxBlocks = 4096;
constexpr int64_t kWorkspaceBudget = int64_t(64) << 20;

int64_t grid_blocks_for_tiles(int64_t rows, int64_t tiles_per_block) {
  const int64_t per_block = tiles_per_block * int64_t(sizeof(TileStat));
  int64_t blocks = rows < kMaxBlocks ? rows : kMaxBlocks;
  if (blocks * per_block > kWorkspaceBudget) blocks = kWorkspaceBudget / per_block;
  return blocks > 1 ? blocks : 1;
}

int64_t grid_blocks(int64_t rows, int64_t V) { return grid_blocks_for_tiles(rows, num_tiles(V)); }

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

size_t workspace_bytes(int64_t rows, int64_t V, bool reads_tiles) {
  if (rows == 0 || !reads_tiles) return 0;
  return size_t(grid_blocks(rows, V)) * size_t(num_tiles(V)) * sizeof(TileStat);
}

size_t verify_workspace_bytes(int64_t rows, int64_t V, int64_t Va) {
  if (rows == 0) return 0;
  const int64_t tiles = verify_tiles(V, Va);
  return size_t(grid_blocks_for_tiles(rows, tiles)) * size_t(tiles) * sizeof(TileStat);
}

template <typename T>
cudaError_t categorical(Logits3<T> lg, int64_t num_samples, RngArgs rng, double temperature, FilterArgs filter,
                        const int64_t* excl, int64_t n_excl, Precision precision, int64_t* tokens, double* logp,
                        void* workspace, unsigned long long* status, cudaStream_t stream) {
  const RowJob job{num_samples, nullptr, -1, nullptr, tokens, logp, filter};
  return launch_rows<T, Mode::kCategorical>(lg, job, rng, temperature, excl, n_excl, precision, workspace, status,
                                            stream);
}

template <typename T>
cudaError_t sample_masked(Logits3<T> lg, const int64_t* x_t, int64_t mask_id, const double* p_unmask, RngArgs rng,
                          double temperature, FilterArgs filter, Precision precision, int64_t* x_s,
                          void* workspace, unsigned long long* status, cudaStream_t stream) {
  const RowJob job{1, x_t, mask_id, p_unmask, x_s, nullptr, filter};
  return launch_rows<T, Mode::kMasked>(lg, job, rng, temperature, nullptr, 0, precision, workspace, status, stream);
}

template <typename T>
cudaError_t sample_candidates(Logits3<T> lg, const int64_t* x_t, int64_t mask_id, int64_t k, RngArgs rng,
                              double temperature, FilterArgs filter, Precision precision, int64_t* x0, double* log_q,
                              double* logp_ws, void* workspace, unsigned long long* status, cudaStream_t stream) {
  const RowJob job{k, x_t, mask_id, nullptr, x0, logp_ws, filter};
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

template <typename T>
cudaError_t sample_scored(Logits3<T> lg, const int64_t* x_t, int64_t mask_id, RngArgs rng, double temperature,
                          FilterArgs filter, int64_t* tokens, double* scores, int64_t* argmax, void* workspace,
                          unsigned long long* status, cudaStream_t stream) {
  const RowJob job{1, x_t, mask_id, nullptr, tokens, scores, filter, argmax};
  return launch_rows<T, Mode::kScored>(lg, job, rng, temperature, nullptr, 0, Precision::kFP64, workspace, status,
                                       stream);
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

template <typename T>
cudaError_t speculative_verify(const VerifyArgs<T>& args, RngArgs rng, VerifyOut out, void* workspace,
                               unsigned long long* status, cudaStream_t stream) {
  const int64_t rows = args.a.B;
  if (rows == 0) return cudaSuccess;
  const unsigned blocks = unsigned(grid_blocks_for_tiles(rows, verify_tiles(args.d.V, args.a.V)));
  verify_kernel<T><<<blocks, kThreads, 0, stream>>>(args, rng, out, static_cast<TileStat*>(workspace), status);
  return cudaGetLastError();
}

template cudaError_t speculative_verify<float>(const VerifyArgs<float>&, RngArgs, VerifyOut, void*, unsigned long long*,
                                               cudaStream_t);
template cudaError_t speculative_verify<f16_t>(const VerifyArgs<f16_t>&, RngArgs, VerifyOut, void*, unsigned long long*,
                                               cudaStream_t);
template cudaError_t speculative_verify<bf16_t>(const VerifyArgs<bf16_t>&, RngArgs, VerifyOut, void*,
                                                unsigned long long*, cudaStream_t);

#define EDLM_INSTANTIATE(T)                                                                                     \
  template cudaError_t categorical<T>(Logits3<T>, int64_t, RngArgs, double, FilterArgs, const int64_t*, int64_t,  \
                                      Precision, int64_t*, double*, void*, unsigned long long*, cudaStream_t);    \
  template cudaError_t sample_masked<T>(Logits3<T>, const int64_t*, int64_t, const double*, RngArgs, double,     \
                                        FilterArgs, Precision, int64_t*, void*, unsigned long long*,            \
                                        cudaStream_t);                                                          \
  template cudaError_t sample_candidates<T>(Logits3<T>, const int64_t*, int64_t, int64_t, RngArgs, double,       \
                                            FilterArgs, Precision, int64_t*, double*, double*, void*,           \
                                            unsigned long long*, cudaStream_t);                                 \
  template cudaError_t sample_scored<T>(Logits3<T>, const int64_t*, int64_t, RngArgs, double, FilterArgs,        \
                                        int64_t*, double*, int64_t*, void*, unsigned long long*, cudaStream_t);
EDLM_INSTANTIATE(float)
EDLM_INSTANTIATE(f16_t)
EDLM_INSTANTIATE(bf16_t)
#undef EDLM_INSTANTIATE

}  // namespace cuda
}  // namespace edlm
