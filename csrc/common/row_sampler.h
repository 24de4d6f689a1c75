// The canonical exact categorical draw over one row of logits, shared by the CPU and CUDA kernels.
//
// A row of V logits is cut into tiles of kTile = 32 lanes x 32 contiguous entries.  Every floating-point
// sum below has a fixed association order (sequential inside a lane, a xor-butterfly across lanes,
// sequential across tiles), and exp/log are the deterministic ones of scalar_math.h, so the CPU, which
// runs these functions one after another, and the GPU, which runs the lane functions on 32 threads of a
// warp, produce bit-identical normalizers and therefore identical tokens.
//
// Pass over the row (once):  per tile t, its max m_t and S_t = sum exp(z - m_t) over the tile.
// Summary:                   M = max m_t, f_t = exp(m_t - M), C_t = C_{t-1} + S_t f_t, Z = C_last.
// Draw with uniform u:       target u Z; tile t = first with C_t > target (binary search); inside the tile
//                            the lane and then the entry where the running sum passes the remainder.
// Cost: one read of the row plus one tile per draw, O(V + draws * (log V + kTile)).
#pragma once

#include <stdint.h>

#include "macros.h"
#include "philox.h"
#include "scalar_math.h"
#include "status.h"

namespace edlm {

constexpr int kLanes = 32;
constexpr int kLaneWidth = 32;
constexpr int64_t kTile = int64_t(kLanes) * kLaneWidth;

// The lane functions below read any row type with V, excl, n_excl, z_cut and a load_z overload: RowInput here,
// the product-of-experts and residual rows of verify.h.
template <typename T>
struct RowInput {
  const T* x;           // V logits, contiguous
  int64_t V;
  double inv_tau;       // 1 / temperature
  const int64_t* excl;  // sorted token ids that are never drawn, duplicates allowed (may be null)
  int64_t n_excl;
  double z_cut = -1.0 / 0.0;  // entries with z below it are filtered out (filter.h); -inf keeps all
};

struct TileStat {
  double m;  // max of z over the tile (-inf when nothing drawable), before any filter
  double c;  // after summarize_row: inclusive cumulative weight C_t in the row's scale
  double w;  // filter.h: the tile's entropy terms, or a mass being searched
  float x_lo, x_hi;  // filter.h: the smallest and largest drawable logit
  int32_t n;         // filter.h: drawable entries
  int32_t unused;
};

struct RowSummary {
  double M;      // max z over the row
  double Z;      // sum exp(z - M)
  double log_Z;  // log_det(Z)
  int64_t n_tiles;
};

EDLM_HD int64_t num_tiles(int64_t V) { return (V + kTile - 1) / kTile; }

EDLM_HD double neg_inf() { return -1.0 / 0.0; }

// First excluded id >= v (binary search), or V-sized sentinel when none.
EDLM_HD int64_t first_excluded_from(const int64_t* excl, int64_t n, int64_t v) {
  int64_t lo = 0, hi = n;
  while (lo < hi) {
    const int64_t mid = (lo + hi) / 2;
    if (excl[mid] < v)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

// Whether v is excluded; *e is the scan position in the sorted list, moved past every copy of v (the list may
// hold duplicates: sorting it costs no host sync, removing duplicates on a GPU does).
template <typename In>
EDLM_HD bool excluded(const In& in, int64_t* e, int64_t v) {
  if (!in.excl || *e >= in.n_excl || in.excl[*e] != v) return false;
  while (*e < in.n_excl && in.excl[*e] == v) ++*e;
  return true;
}

template <typename T>
EDLM_HD double load_z(const RowInput<T>& in, int64_t v) {
  return double(to_float(in.x[v])) * in.inv_tau;
}

// Lane [begin, end): max of z over drawable entries; reports NaN / +inf through *status.
template <typename In>
EDLM_HD double lane_max(const In& in, int64_t begin, int64_t end, int32_t* status) {
  double m = neg_inf();
  int64_t e = in.excl ? first_excluded_from(in.excl, in.n_excl, begin) : 0;
  for (int64_t v = begin; v < end; ++v) {
    const double z = load_z(in, v);
    if (is_nan(z)) *status = merge_status(*status, kNaN);
    if (z > 1.79769313486231570815e+308) *status = merge_status(*status, kPosInf);
    if (excluded(in, &e, v)) continue;
    if (z > m) m = z;
  }
  return m;
}

// Lane [begin, end): sequential sum of exp(z - m) over drawable entries that the filters keep.
template <typename In>
EDLM_HD double lane_sum(const In& in, int64_t begin, int64_t end, double m) {
  double s = 0.0;
  int64_t e = in.excl ? first_excluded_from(in.excl, in.n_excl, begin) : 0;
  for (int64_t v = begin; v < end; ++v) {
    if (excluded(in, &e, v)) continue;
    const double z = load_z(in, v);
    if (z < in.z_cut) continue;
    s += exp_det(z - m);
  }
  return s;
}

// Keeps the two largest values seen (a value equal to the largest counts twice).
EDLM_HD void keep_top2(double z, double* top1, double* top2) {
  if (z > *top1) {
    *top2 = *top1;
    *top1 = z;
  } else if (z > *top2) {
    *top2 = z;
  }
}

EDLM_HD int64_t lane_begin(int64_t tile, int lane, int64_t V) {
  const int64_t b = tile * kTile + int64_t(lane) * kLaneWidth;
  return b < V ? b : V;
}

EDLM_HD int64_t lane_end(int64_t tile, int lane, int64_t V) {
  const int64_t e = tile * kTile + int64_t(lane + 1) * kLaneWidth;
  return e < V ? e : V;
}

// The xor-butterfly a warp performs with __shfl_xor_sync, written out for one thread; a[] is clobbered.
EDLM_HD double tree32(double* a) {
  for (int off = kLanes / 2; off >= 1; off /= 2)
    for (int l = 0; l < off; ++l) a[l] = a[l] + a[l + off];
  return a[0];
}

// Sequential-over-tiles summary: fills M, Z, log_Z and turns ts[t].c from S_t into C_t.
// Requires ts[t].m and ts[t].c = S_t from the pass.  Returns kNoFinite when nothing is drawable.
EDLM_HD int32_t summarize_row(TileStat* ts, int64_t n_tiles, RowSummary* out) {
  double M = neg_inf();
  for (int64_t t = 0; t < n_tiles; ++t)
    if (ts[t].m > M) M = ts[t].m;
  out->M = M;
  out->n_tiles = n_tiles;
  if (M == neg_inf()) return kNoFinite;
  double c = 0.0;
  for (int64_t t = 0; t < n_tiles; ++t) {
    if (ts[t].m != neg_inf()) c = c + ts[t].c * exp_det(ts[t].m - M);
    ts[t].c = c;
  }
  out->Z = c;
  out->log_Z = log_det(c);
  return kOk;
}

// Lane choice inside a tile: first lane whose running sum exceeds r; rounding fallback: last lane with
// weight.  *r is replaced by the remainder inside the chosen lane.
EDLM_HD int select_lane(const double* a, double* r) {
  double p = 0.0;
  int last = -1;
  for (int l = 0; l < kLanes; ++l) {
    if (a[l] > 0.0) last = l;
    const double next = p + a[l];
    if (next > *r && a[l] > 0.0) {
      *r = *r - p;
      return l;
    }
    p = next;
  }
  if (last < 0) return 0;
  *r = a[last];  // the lane's own sum: select_in_lane then falls back to its last weighted entry
  return last;
}

// Entry choice inside a lane: first drawable entry whose running weight exceeds r; fallback: last one
// with positive weight.
template <typename In>
EDLM_HD int64_t select_in_lane(const In& in, int64_t begin, int64_t end, double m, double r) {
  double q = 0.0;
  int64_t last = -1;
  int64_t e = in.excl ? first_excluded_from(in.excl, in.n_excl, begin) : 0;
  for (int64_t v = begin; v < end; ++v) {
    if (excluded(in, &e, v)) continue;
    const double z = load_z(in, v);
    if (z < in.z_cut) continue;
    const double w = exp_det(z - m);
    if (w > 0.0) {
      last = v;
      q = q + w;
      if (q > r) return v;
    }
  }
  return last;
}

// Tile holding the target: first t with C_t > target, else the last tile that carries weight.
EDLM_HD int64_t select_tile(const TileStat* ts, int64_t n_tiles, double target) {
  int64_t lo = 0, hi = n_tiles;
  while (lo < hi) {
    const int64_t mid = (lo + hi) / 2;
    if (ts[mid].c > target)
      hi = mid;
    else
      lo = mid + 1;
  }
  if (lo < n_tiles) return lo;
  int64_t t = n_tiles - 1;
  while (t > 0 && ts[t].c == ts[t - 1].c) --t;
  return t;
}

// Remainder of the target inside tile t, in that tile's own scale exp(z - m_t).
EDLM_HD double tile_remainder(const TileStat* ts, int64_t t, const RowSummary& s, double target) {
  const double before = t > 0 ? ts[t - 1].c : 0.0;
  double r = (target - before) / exp_det(ts[t].m - s.M);
  return r > 0.0 ? r : 0.0;
}

// Single-threaded draw used by the CPU kernel (the CUDA kernel runs the lane loop on a warp).
template <typename In>
EDLM_HD int64_t draw_from_row(const In& in, const TileStat* ts, const RowSummary& s, double u) {
  const double target = u * s.Z;
  const int64_t t = select_tile(ts, s.n_tiles, target);
  double r = tile_remainder(ts, t, s, target);
  double a[kLanes];
  for (int l = 0; l < kLanes; ++l)
    a[l] = lane_sum(in, lane_begin(t, l, in.V), lane_end(t, l, in.V), ts[t].m);
  const int l = select_lane(a, &r);
  return select_in_lane(in, lane_begin(t, l, in.V), lane_end(t, l, in.V), ts[t].m, r);
}

template <typename In>
EDLM_HD double token_logp(const In& in, const RowSummary& s, int64_t v) {
  return (load_z(in, v) - s.M) - s.log_Z;
}

// Temperature 0: first index of the largest drawable logit (float compare, no scaling).
template <typename T>
EDLM_HD void lane_argmax(const RowInput<T>& in, int64_t begin, int64_t end, float* best, int64_t* arg,
                         int32_t* status) {
  int64_t e = in.excl ? first_excluded_from(in.excl, in.n_excl, begin) : 0;
  for (int64_t v = begin; v < end; ++v) {
    const float z = to_float(in.x[v]);
    if (z != z) *status = merge_status(*status, kNaN);
    if (excluded(in, &e, v)) continue;
    if (*arg < 0 || z > *best) {
      *best = z;
      *arg = v;
    }
  }
}

}  // namespace edlm
