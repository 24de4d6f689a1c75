// The reference code's truncated float32 Gumbel-max sampler ("fp32-gumbel"), reproduced on purpose so that
// published numbers can be compared; never the default.  Shared by the CPU and CUDA kernels like row_sampler.h.
#pragma once

#include <stdint.h>

#include "macros.h"
#include "philox.h"
#include "row_sampler.h"
#include "scalar_math.h"

namespace edlm {

// fp32-gumbel (reference-compatible, truncated) score of entry v for one draw: the MDLM reference computes
// probs / (1e-10 - log(rand + 1e-10)) in float32 and takes the argmax.  Uniforms carry 24 bits, as torch.rand
// does in float32; this is what caps the Gumbel noise near 16.6.
EDLM_HD float gumbel_ref_score(float prob, float u24) {
  const float un = u24 + 1e-10f;
  const float noise = 1e-10f - float(log_det(double(un)));
  return prob / noise;
}

// Philox sub-stream of the fp32-gumbel noise for draw j, entries v .. v+3 (one block feeds four entries).
EDLM_HD uint64_t gumbel_sub(int64_t j, int64_t v, int64_t V) {
  return 1 + uint64_t(j) * uint64_t((V + 3) / 4) + uint64_t(v / 4);
}

// The largest float z over drawable entries of [begin, end), for the fp32-gumbel mode.
template <typename T>
EDLM_HD float lane_max_f32(const RowInput<T>& in, int64_t begin, int64_t end) {
  float m = -3.4028234663852886e+38f * 10.0f;
  int64_t e = in.excl ? first_excluded_from(in.excl, in.n_excl, begin) : 0;
  const float inv_tau = float(in.inv_tau);
  for (int64_t v = begin; v < end; ++v) {
    if (excluded(in, &e, v)) continue;
    const float z = to_float(in.x[v]) * inv_tau;
    if (z > m) m = z;
  }
  return m;
}

// Reference-compatible truncated Gumbel draw over [begin, end): best score and its (lowest) index.
template <typename T>
EDLM_HD void gumbel_scan(const RowInput<T>& in, int64_t begin, int64_t end, float m, uint64_t seed,
                         uint64_t offset, uint64_t row, int64_t j, float* best, int64_t* arg) {
  int64_t e = in.excl ? first_excluded_from(in.excl, in.n_excl, begin) : 0;
  const float inv_tau = float(in.inv_tau);
  Philox4 blk;
  int64_t blk_id = -1;
  for (int64_t v = begin; v < end; ++v) {
    if (v / 4 != blk_id) {
      blk_id = v / 4;
      blk = random_block(seed, offset, row, gumbel_sub(j, v, in.V));
    }
    if (excluded(in, &e, v)) continue;
    const float prob = float(exp_det(double(to_float(in.x[v]) * inv_tau) - double(m)));
    const float score = gumbel_ref_score(prob, uniform24(blk.v[v & 3]));
    if (*arg < 0 || score > *best) {
      *best = score;
      *arg = v;
    }
  }
}

// fp32-gumbel masked step, the way the MDLM reference takes it: no separate Bernoulli, but one truncated Gumbel
// argmax over the row's token probabilities times p_unmask and the mask entry holding 1 - p_unmask, in float32.
// The cap on the noise then bites where it matters: with a small p_unmask a rare token must beat the large mask
// entry, which the capped noise rarely allows, so sampling with many steps loses the tail (Zheng et al., 2024).
// Probabilities come from the canonical summary s, so CPU and CUDA score every entry alike.  The mask id lies in
// the row and takes the noise of its own column, as in the reference; it must be the only id in in.excl (the
// summary leaves out every excluded id, this scan only the mask).
//
// The mask entry is scored first: a token scores at most prob / kGumbelNoiseMin, so every token whose logit lies
// below a threshold set by the best score so far cannot win and is skipped without drawing its noise.  The
// threshold keeps a margin far above float rounding, so skipping never changes the argmax (ties: lowest index).
constexpr double kGumbelNoiseMin = 5.9e-8;  // the smallest noise 1e-10 - log(u + 1e-10) takes: u = 1 - 2^-24

EDLM_HD float gumbel_uniform(uint64_t seed, uint64_t offset, uint64_t row, int64_t v, int64_t V) {
  return uniform24(random_block(seed, offset, row, gumbel_sub(0, v, V)).v[v & 3]);
}

template <typename T>
EDLM_HD void gumbel_masked_scan(const RowInput<T>& in, int64_t begin, int64_t end, const RowSummary& s,
                                double p_unmask, int64_t mask_id, uint64_t seed, uint64_t offset, uint64_t row,
                                float* best, int64_t* arg) {
  const float mask_score = gumbel_ref_score(float(1.0 - p_unmask), gumbel_uniform(seed, offset, row, mask_id, in.V));
  if (*arg < 0 || mask_score > *best || (mask_score == *best && mask_id < *arg)) {
    *best = mask_score;
    *arg = mask_id;
  }
  // z below z_skip gives prob < best * kGumbelNoiseMin / (1 + 1e-3), hence a score below best.  (For a subnormal
  // prob the float rounding is absolute, not relative, but such a token scores below 1e-37, far under the best
  // score of the row, which is at least max(1 - p_unmask, p_unmask / V) / 23.03.)
  double z_skip = p_unmask > 0.0 ? s.M + log_det(double(*best) * kGumbelNoiseMin * s.Z / p_unmask) - 1e-3 : 1e308;
  Philox4 blk;
  int64_t blk_id = -1;
  for (int64_t v = begin; v < end; ++v) {
    if (v == mask_id) continue;
    const double z = load_z(in, v);
    if (z < z_skip) continue;
    if (v / 4 != blk_id) {
      blk_id = v / 4;
      blk = random_block(seed, offset, row, gumbel_sub(0, v, in.V));
    }
    const float prob = float(p_unmask * (exp_det(z - s.M) / s.Z));
    const float score = gumbel_ref_score(prob, uniform24(blk.v[v & 3]));
    if (score > *best || (score == *best && v < *arg)) {
      *best = score;
      *arg = v;
      z_skip = s.M + log_det(double(score) * kGumbelNoiseMin * s.Z / p_unmask) - 1e-3;
    }
  }
}

}  // namespace edlm
