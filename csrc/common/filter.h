// Top-k, top-p and min-p as one cut on a row's scaled logits z, found without sorting; and the scores that
// confidence-based decoding reads (p of the draw, the two largest p, the entropy), all of the filtered and
// renormalized distribution.  Shared by the CPU and CUDA kernels like row_sampler.h.
//
// Every filter keeps the entries whose z is at or above a threshold (ties with the threshold are kept, as the
// usual top-k warper does), so they compose into one cut, applied in this order:
//   top_k: the cut is the k-th largest drawable value;
//   top_p: then the largest cut whose kept mass still reaches top_p of the mass the top-k cut kept;
//   min_p: then z - M >= log(min_p), M the row's largest z (which every filter keeps).
// The k-th largest value and the top-p cut are found by bisection over the order-preserving 32-bit keys of the
// float logits: at most 32 counting passes (integer counts) and 32 mass passes (float64 sums in the canonical
// order of row_sampler.h), so CPU and GPU find the same cut.  Tiles wholly below a candidate cut are skipped.
#pragma once

#include <stdint.h>

#include "macros.h"
#include "row_sampler.h"
#include "scalar_math.h"

namespace edlm {

struct FilterArgs {
  int64_t top_k = 0;   // 0: off
  double top_p = 1.0;  // 1: off
  double min_p = 0.0;  // 0: off
};

EDLM_HD bool filters_on(const FilterArgs& f) { return f.top_k > 0 || f.top_p < 1.0 || f.min_p > 0.0; }

// Scores of one row's filtered distribution, read by confidence-based decoding.
struct RowScores {
  double p_draw;   // probability of the drawn token
  double p_top1;   // the largest probability
  double p_top2;   // the second largest (0 when one token is kept)
  double entropy;  // in nats
};

constexpr int kNumScores = 4;

// The scores of a position that is not read (not masked): nothing to commit, so they rank last under every rule.
EDLM_HD RowScores unread_scores() { return RowScores{0.0, 0.0, 0.0, 1.0 / 0.0}; }

// Order-preserving map of floats to unsigned keys (-inf lowest), and back.
EDLM_HD uint32_t float_key(float x) {
  const uint32_t b = float_to_bits(x);
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

EDLM_HD float key_float(uint32_t k) { return bits_to_float((k & 0x80000000u) ? (k & 0x7FFFFFFFu) : ~k); }

// Largest key in [lo, hi] where pred holds, given that it holds at lo and never holds again once it fails.
template <class Pred>
EDLM_HD uint32_t last_key_where(uint32_t lo, uint32_t hi, Pred pred) {
  while (lo < hi) {
    const uint32_t mid = lo + (hi - lo + 1) / 2;
    if (pred(mid))
      lo = mid;
    else
      hi = mid - 1;
  }
  return lo;
}

// Lane [begin, end) for the search: the smallest and largest drawable logit and how many entries are drawable.
template <typename T>
EDLM_HD void lane_range(const RowInput<T>& in, int64_t begin, int64_t end, float* lo, float* hi, int32_t* n) {
  int64_t e = in.excl ? first_excluded_from(in.excl, in.n_excl, begin) : 0;
  for (int64_t v = begin; v < end; ++v) {
    if (excluded(in, &e, v)) continue;
    const float x = to_float(in.x[v]);
    if (x != x) continue;  // a NaN row fails in the pass; it must not derail the search meanwhile
    *lo = x < *lo ? x : *lo;
    *hi = x > *hi ? x : *hi;
    ++*n;
  }
}

// Lane [begin, end): drawable entries with z >= cut.
template <typename T>
EDLM_HD int32_t lane_count(const RowInput<T>& in, int64_t begin, int64_t end, double cut) {
  int32_t n = 0;
  int64_t e = in.excl ? first_excluded_from(in.excl, in.n_excl, begin) : 0;
  for (int64_t v = begin; v < end; ++v) {
    if (excluded(in, &e, v)) continue;
    n += load_z(in, v) >= cut;
  }
  return n;
}

// Lane [begin, end), over the kept entries, from one exp per entry: lane_sum's sum into *sum (the same value, in
// the same order), the entropy terms exp(d) d with d = z - m returned (0 where the weight is 0, so a -inf logit
// adds nothing instead of 0 * -inf), and the two largest z.
template <typename T>
EDLM_HD double lane_entropy_terms(const RowInput<T>& in, int64_t begin, int64_t end, double m, double* sum,
                                  double* top1, double* top2) {
  double s = 0.0, h = 0.0;
  int64_t e = in.excl ? first_excluded_from(in.excl, in.n_excl, begin) : 0;
  for (int64_t v = begin; v < end; ++v) {
    if (excluded(in, &e, v)) continue;
    const double z = load_z(in, v);
    if (z < in.z_cut) continue;
    const double w = exp_det(z - m);
    s += w;
    h += w > 0.0 ? w * (z - m) : 0.0;
    keep_top2(z, top1, top2);
  }
  *sum = s;
  return h;
}

// The largest tile max: the row's M.
EDLM_HD double tiles_max(const TileStat* ts, int64_t n_tiles) {
  double M = neg_inf();
  for (int64_t t = 0; t < n_tiles; ++t) M = ts[t].m > M ? ts[t].m : M;
  return M;
}

// sum over the kept entries of exp(z - M) (z - M), tile after tile, from each tile's S_t (in .c, before
// summarize_row turns it into C_t) and its entropy terms W_t (in .w), both relative to the tile max m_t.
EDLM_HD double entropy_numerator(const TileStat* ts, int64_t n_tiles, double M) {
  double h = 0.0;
  for (int64_t t = 0; t < n_tiles; ++t)
    if (ts[t].m != neg_inf()) h = h + exp_det(ts[t].m - M) * (ts[t].w + (ts[t].m - M) * ts[t].c);
  return h;
}

// A candidate cut's kept mass, tile after tile, from each tile's S_t(cut) in .w (0 for skipped tiles).
EDLM_HD double tiles_mass(const TileStat* ts, int64_t n_tiles, double M) {
  double mass = 0.0;
  for (int64_t t = 0; t < n_tiles; ++t)
    if (ts[t].m != neg_inf()) mass = mass + ts[t].w * exp_det(ts[t].m - M);
  return mass;
}

// A tile's kept-entry count at a candidate cut when no scan is needed: -1 when the tile straddles the cut.
EDLM_HD int64_t tile_count_bound(const TileStat& t, double inv_tau, double cut) {
  if (t.n == 0 || t.m < cut) return 0;
  return double(t.x_lo) * inv_tau >= cut ? t.n : -1;
}

// The cut of the filters: count(c) gives the drawable entries with z >= c, mass(c) the canonical float64 sum of
// exp(z - M) over them; x_lo, x_hi and n are the row's drawable range and count; M its largest z.
template <class Count, class Mass>
EDLM_HD double filter_cut(const FilterArgs& f, double inv_tau, float x_lo, float x_hi, int64_t n, double M,
                          Count count, Mass mass) {
  uint32_t lo = float_key(x_lo);
  const uint32_t hi = float_key(x_hi);
  auto cut_of = [&](uint32_t k) { return double(key_float(k)) * inv_tau; };
  bool cut_set = false;
  if (f.top_k > 0 && f.top_k < n) {
    lo = last_key_where(lo, hi, [&](uint32_t k) { return count(cut_of(k)) >= f.top_k; });
    cut_set = true;
  }
  if (f.top_p < 1.0) {
    const double target = f.top_p * mass(cut_of(lo));
    lo = last_key_where(lo, hi, [&](uint32_t k) { return mass(cut_of(k)) >= target; });
    cut_set = true;
  }
  double cut = cut_set ? cut_of(lo) : neg_inf();
  if (f.min_p > 0.0) {
    const double c = M + log_det(f.min_p);
    cut = c > cut ? c : cut;
  }
  return cut;
}

// The first index of the row's largest drawable z, read off the summary: the first tile whose max is the row's M,
// then a scan of that tile alone (the tile maxima are the unfiltered ones, and every filter keeps the largest).
// The same index as a full argmax pass over the logits, at a cost of one tile.
template <typename T>
EDLM_HD int64_t argmax_from_tiles(const RowInput<T>& in, const TileStat* ts, int64_t n_tiles, double M) {
  int64_t t = 0;
  while (t + 1 < n_tiles && ts[t].m != M) ++t;
  const int64_t begin = t * kTile, end = begin + kTile < in.V ? begin + kTile : in.V;
  int64_t e = in.excl ? first_excluded_from(in.excl, in.n_excl, begin) : 0;
  for (int64_t v = begin; v < end; ++v) {
    if (excluded(in, &e, v)) continue;
    if (load_z(in, v) == M) return v;
  }
  return -1;
}

// Scores from the summary of the kept entries: Z = sum exp(z - M), the entropy terms H_num = sum over the kept of
// exp(z - M) (z - M), the second largest kept z, and the drawn token's z.
EDLM_HD RowScores row_scores(const RowSummary& s, double h_num, double z2, double z_draw) {
  RowScores r;
  r.p_top1 = 1.0 / s.Z;
  r.p_top2 = z2 == neg_inf() ? 0.0 : exp_det(z2 - s.M) / s.Z;
  r.p_draw = exp_det(z_draw - s.M) / s.Z;
  const double h = s.log_Z - h_num / s.Z;
  r.entropy = h > 0.0 ? h : 0.0;  // rounding can leave -1e-17 for a point mass
  return r;
}

}  // namespace edlm
