#include "sampling.h"

#include <omp.h>

#include <algorithm>
#include <limits>
#include <vector>

#include "../common/filter.h"
#include "../common/gumbel.h"
#include "../common/philox.h"
#include "../common/resample.h"
#include "../common/verify.h"
#include "filter_cut.h"
#include "rows.h"

namespace edlm {
namespace cpu {
namespace {

// z[i] <- exp(z[i] - m).  Compiled for several ISAs and picked at load time; without FMA contraction every
// variant rounds exactly like the scalar exp_det, so the choice never changes a token.
__attribute__((target_clones("avx512f", "avx2", "default"))) void exp_shifted(double* z, int64_t n, double m) {
  for (int64_t i = 0; i < n; ++i) z[i] = exp_det(z[i] - m);
}

// The two largest kept z of a row, for its scores.
struct Top2 {
  double z1 = neg_inf(), z2 = neg_inf();
};

// A tile's z = scaled logits, into a contiguous buffer (vectorized for a logit row; any other row type of
// row_sampler.h reads its load_z entry by entry, which gives the same values).
template <typename T>
void load_tile(const RowInput<T>& in, int64_t base, int64_t n, double* z) {
  const T* x = in.x + base;
  for (int64_t i = 0; i < n; ++i) z[i] = double(to_float(x[i])) * in.inv_tau;
}

template <typename In>
void load_tile(const In& in, int64_t base, int64_t n, double* z) {
  for (int64_t i = 0; i < n; ++i) z[i] = load_z(in, base + i);
}

// One read of tile t: its max and sum of exp(z - m_t) over the kept entries, in the canonical order of
// row_sampler.h; with `top2`, also the tile's entropy terms (.w) and the two largest kept z (filter.h).  *e walks
// the sorted exclusions (0 at tile 0).  The exp runs over a contiguous buffer so the compiler vectorizes it; lane
// sums then add the buffer in the same sequential order as lane_sum, so CPU and CUDA agree to the bit.
template <typename In>
int32_t tile_pass(const In& in, int64_t t, TileStat* tile, Top2* top2, int64_t* e) {
  alignas(64) double z[kTile];
  alignas(64) double d[kTile];  // z - m_t of the kept entries, for the entropy terms
  int32_t status = kOk;
  const int64_t base = t * kTile;
  const int64_t n = std::min<int64_t>(kTile, in.V - base);
  double m = neg_inf();
  load_tile(in, base, n, z);
  for (int64_t i = 0; i < n; ++i) {
    if (is_nan(z[i])) status = merge_status(status, kNaN);
    if (z[i] > std::numeric_limits<double>::max()) status = merge_status(status, kPosInf);
  }
  if (in.excl)
    for (; *e < in.n_excl && in.excl[*e] < base + n; ++*e) z[in.excl[*e] - base] = neg_inf();
  for (int64_t i = 0; i < n; ++i) m = z[i] > m ? z[i] : m;
  tile->m = m;
  tile->w = 0.0;
  if (m == neg_inf()) {
    tile->c = 0.0;
    return status;
  }
  if (in.z_cut > neg_inf())  // the tile max m_t stays the pre-filter one, as on the GPU
    for (int64_t i = 0; i < n; ++i) z[i] = z[i] < in.z_cut ? neg_inf() : z[i];
  if (top2) {
    for (int64_t i = 0; i < n; ++i) {
      if (z[i] > neg_inf()) keep_top2(z[i], &top2->z1, &top2->z2);
      d[i] = z[i] - m;
    }
  }
  exp_shifted(z, n, m);
  // Lanes past the row's end are empty and sum to 0, as lane_sum makes them.
  double a[kLanes], w[kLanes];
  for (int l = 0; l < kLanes; ++l) {
    double s = 0.0, h = 0.0;
    const int64_t end = std::min<int64_t>(n, int64_t(l + 1) * kLaneWidth);
    for (int64_t i = int64_t(l) * kLaneWidth; i < end; ++i) {
      s += z[i];
      if (top2) h += z[i] > 0.0 ? z[i] * d[i] : 0.0;  // an entropy term exp(d) d, from the exp already taken (lane_entropy_terms)
    }
    a[l] = s;
    w[l] = h;
  }
  tile->c = tree32(a);
  if (top2) tile->w = tree32(w);
  return status;
}

// One read of the row, tile after tile.
template <typename T>
int32_t row_pass(const RowInput<T>& in, TileStat* ts, Top2* top2) {
  int32_t status = kOk;
  int64_t e = 0;
  for (int64_t t = 0; t < num_tiles(in.V); ++t) status = merge_status(status, tile_pass(in, t, &ts[t], top2, &e));
  return status;
}

// Draws for one row; u[j] are the uniforms, out[j] the tokens.  Draws that land in the same tile share the
// lane sums of that tile, so many draws cost O(V + draws * (log V + kLanes + kLaneWidth)).
template <typename T>
void draw_many(const RowInput<T>& in, const TileStat* ts, const RowSummary& s, const double* u, int64_t n,
               int64_t* out, std::vector<std::pair<int64_t, int64_t>>& order, std::vector<double>& rem) {
  order.resize(n);
  rem.resize(n);
  for (int64_t j = 0; j < n; ++j) {
    const double target = u[j] * s.Z;
    const int64_t t = select_tile(ts, s.n_tiles, target);
    rem[j] = tile_remainder(ts, t, s, target);
    order[j] = {t, j};
  }
  std::sort(order.begin(), order.end());
  double a[kLanes];
  int64_t cur = -1;
  for (const auto& [t, j] : order) {
    if (t != cur) {
      cur = t;
      for (int l = 0; l < kLanes; ++l)
        a[l] = lane_sum(in, lane_begin(t, l, in.V), lane_end(t, l, in.V), ts[t].m);
    }
    double r = rem[j];
    const int l = select_lane(a, &r);
    out[j] = select_in_lane(in, lane_begin(t, l, in.V), lane_end(t, l, in.V), ts[t].m, r);
  }
}

template <typename T>
int64_t argmax_row(const RowInput<T>& in, int32_t* status) {
  float best = 0.0f;
  int64_t arg = -1;
  lane_argmax(in, 0, in.V, &best, &arg, status);
  if (*status == kOk && (arg < 0 || best == -std::numeric_limits<float>::infinity())) *status = kNoFinite;
  return arg;
}

template <typename T>
int64_t gumbel_row(const RowInput<T>& in, RngArgs rng, uint64_t row, int64_t j) {
  const float m = lane_max_f32(in, 0, in.V);
  float best = 0.0f;
  int64_t arg = -1;
  gumbel_scan(in, 0, in.V, m, rng.seed, rng.offset, row, j, &best, &arg);
  return arg;
}

// The row pass and its summary, into sc.ts and *sum; the row's status.  With `top2`, also what the scores need:
// the two largest kept z and the entropy numerator *h_num.
template <typename T>
int32_t summarize(const RowInput<T>& in, Scratch& sc, RowSummary* sum, Top2* top2 = nullptr,
                  double* h_num = nullptr) {
  sc.ts.resize(num_tiles(in.V));
  const int32_t st = row_pass(in, sc.ts.data(), top2);
  if (st != kOk) return st;
  if (h_num) *h_num = entropy_numerator(sc.ts.data(), sc.ts.size(), tiles_max(sc.ts.data(), sc.ts.size()));
  return summarize_row(sc.ts.data(), sc.ts.size(), sum);
}


// All draws of one row.  sub-stream j gives draw j's uniform (words 0,1 of the block); row is global.
template <typename T>
int32_t sample_row(RowInput<T> in, double temperature, const FilterArgs& f, Precision precision, RngArgs rng,
                   uint64_t row, int64_t n, Scratch& sc, int64_t* tokens, double* logp) {
  if (temperature == 0.0) {  // the largest logit survives every filter
    int32_t st = kOk;
    const int64_t arg = argmax_row(in, &st);
    if (st != kOk) return st;
    for (int64_t j = 0; j < n; ++j) {
      tokens[j] = arg;
      logp[j] = 0.0;
    }
    return kOk;
  }
  if (filters_on(f)) {
    const int32_t st = find_cut(&in, f, sc);
    if (st != kOk) return st;
  }
  RowSummary s;
  const int32_t st = summarize(in, sc, &s);
  if (st != kOk) return st;
  if (precision == Precision::kFP32Gumbel) {
    for (int64_t j = 0; j < n; ++j) tokens[j] = gumbel_row(in, rng, row, j);
  } else {
    sc.u.resize(n);
    for (int64_t j = 0; j < n; ++j) {
      const Philox4 b = random_block(rng.seed, rng.offset, row, uint64_t(j));
      sc.u[j] = uniform53(b.v[0], b.v[1]);
    }
    draw_many(in, sc.ts.data(), s, sc.u.data(), n, tokens, sc.order, sc.rem);
  }
  for (int64_t j = 0; j < n; ++j) logp[j] = token_logp(in, s, tokens[j]);
  return kOk;
}

// One draw of a row and the scores of its filtered distribution.  At temperature 0 the draw is the argmax and the
// scores are those of the temperature-1 distribution.
template <typename T>
int32_t score_row(RowInput<T> in, double temperature, const FilterArgs& f, RngArgs rng, uint64_t row, Scratch& sc,
                  int64_t* token, RowScores* scores, int64_t* argmax) {
  if (filters_on(f)) {
    const int32_t st = find_cut(&in, f, sc);
    if (st != kOk) return st;
  }
  RowSummary s;
  Top2 top2;
  double h_num = 0.0;
  const int32_t st = summarize(in, sc, &s, &top2, &h_num);
  if (st != kOk) return st;
  *argmax = argmax_from_tiles(in, sc.ts.data(), s.n_tiles, s.M);
  if (temperature == 0.0) {
    *token = *argmax;
  } else {
    const Philox4 b = random_block(rng.seed, rng.offset, row, 0);
    *token = draw_from_row(in, sc.ts.data(), s, uniform53(b.v[0], b.v[1]));
  }
  *scores = row_scores(s, h_num, top2.z2, load_z(in, *token));
  return kOk;
}

}  // namespace

template <typename In>
int32_t tile_stats(const In& in, int64_t t, TileStat* tile, int64_t* cursor) {
  return tile_pass(in, t, tile, nullptr, cursor);
}

#define EDLM_TILE_STATS(In) template int32_t tile_stats<In>(const In&, int64_t, TileStat*, int64_t*);
#define EDLM_TILE_STATS_ALL(T) \
  EDLM_TILE_STATS(RowInput<T>) EDLM_TILE_STATS(PoeInput<T>) EDLM_TILE_STATS(ResidualInput<T>)
EDLM_TILE_STATS_ALL(float)
EDLM_TILE_STATS_ALL(f16_t)
EDLM_TILE_STATS_ALL(bf16_t)
#undef EDLM_TILE_STATS_ALL
#undef EDLM_TILE_STATS

int max_threads() { return omp_get_max_threads(); }

template <typename T>
Status categorical(Logits3<T> lg, int64_t num_samples, RngArgs rng, double temperature, const FilterArgs& f,
                   const int64_t* excl, int64_t n_excl, Precision precision, int64_t* tokens, double* logp) {
  const int64_t rows = lg.B * lg.L;
  // Reported at row 0, as the CUDA kernel (which checks in every row) reports it.
  if (rows > 0 && !valid_exclude(excl, n_excl, lg.V)) return Status{kBadExclude, 0};
  auto input = [&](int64_t r) { return row_input(lg, r, temperature, excl, n_excl); };
  if (precision == Precision::kFP32Gumbel && temperature > 0.0) {
    // Each gumbel draw reads the whole row, so draws rather than rows are spread over the threads.
    std::vector<RowSummary> sums(rows);
    const Status st = for_rows(rows, 4, [&](int64_t r, Scratch& sc) { return summarize(input(r), sc, &sums[r]); });
    if (st.row >= 0) return st;
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t i = 0; i < rows * num_samples; ++i) {
      const int64_t r = i / num_samples;
      tokens[i] = gumbel_row(input(r), rng, rng.row_offset + uint64_t(r), i % num_samples);
      logp[i] = token_logp(input(r), sums[r], tokens[i]);
    }
    return st;
  }
  return for_rows(rows, 4, [&](int64_t r, Scratch& sc) {
    return sample_row(input(r), temperature, f, precision, rng, rng.row_offset + uint64_t(r), num_samples, sc,
                      tokens + r * num_samples, logp + r * num_samples);
  });
}

template <typename T>
Status sample_masked(Logits3<T> lg, const int64_t* x_t, int64_t mask_id, const double* p_unmask, RngArgs rng,
                     double temperature, const FilterArgs& f, Precision precision, int64_t* x_s) {
  const int64_t rows = lg.B * lg.L;
  const int64_t excl[1] = {mask_id};
  return for_rows(rows, 16, [&](int64_t r, Scratch& sc) -> int32_t {
    const int64_t b = r / lg.L;
    if (!valid_probability(p_unmask[b])) return kBadPUnmask;
    if (x_t[r] != mask_id) {
      x_s[r] = x_t[r];
      return kOk;
    }
    const uint64_t row = rng.row_offset + uint64_t(r);
    const RowInput<T> in = row_input(lg, r, temperature, excl, 1);
    if (precision == Precision::kFP32Gumbel && temperature > 0.0) {
      RowSummary sum;
      const int32_t st = summarize(in, sc, &sum);
      if (st == kOk) {
        float best = 0.0f;
        int64_t arg = -1;
        gumbel_masked_scan(in, 0, lg.V, sum, p_unmask[b], mask_id, rng.seed, rng.offset, row, &best, &arg);
        x_s[r] = arg;
      }
      return st;
    }
    const Philox4 blk = random_block(rng.seed, rng.offset, row, 0);
    if (!(uniform53(blk.v[2], blk.v[3]) < p_unmask[b])) {
      x_s[r] = mask_id;
      return kOk;
    }
    double lp;
    return sample_row(in, temperature, f, precision, rng, row, 1, sc, x_s + r, &lp);
  });
}

template <typename T>
Status sample_candidates(Logits3<T> lg, const int64_t* x_t, int64_t mask_id, int64_t k, RngArgs rng,
                         double temperature, const FilterArgs& f, Precision precision, int64_t* x0, double* log_q) {
  const int64_t rows = lg.B * lg.L;
  const int64_t excl[1] = {mask_id};
  std::vector<double> lp(size_t(rows * k), 0.0);
  const Status st = for_rows(rows, 4, [&](int64_t r, Scratch& sc) -> int32_t {
    if (x_t[r] != mask_id) {
      for (int64_t j = 0; j < k; ++j) x0[j * rows + r] = x_t[r];
      return kOk;
    }
    sc.tok.resize(k);
    int64_t* tok = sc.tok.data();
    const int32_t code = sample_row(row_input(lg, r, temperature, excl, 1), temperature, f, precision, rng,
                                    rng.row_offset + uint64_t(r), k, sc, tok, lp.data() + r * k);
    for (int64_t j = 0; j < k; ++j) x0[j * rows + r] = tok[j];
    return code;
  });
  if (st.row >= 0) return st;
  // Sequential over positions so the float64 sum has one fixed order (the CUDA kernel uses the same).
  for (int64_t j = 0; j < k; ++j)
    for (int64_t b = 0; b < lg.B; ++b) {
      double s = 0.0;
      for (int64_t l = 0; l < lg.L; ++l) s += lp[(b * lg.L + l) * k + j];
      log_q[j * lg.B + b] = s;
    }
  return st;
}

template <typename T>
Status sample_scored(Logits3<T> lg, const int64_t* x_t, int64_t mask_id, RngArgs rng, double temperature,
                     const FilterArgs& f, int64_t* tokens, double* scores, int64_t* argmax) {
  const int64_t rows = lg.B * lg.L;
  const int64_t excl[1] = {mask_id};
  return for_rows(rows, 4, [&](int64_t r, Scratch& sc) {
    RowScores out = unread_scores();
    int32_t st = kOk;
    tokens[r] = argmax[r] = x_t[r];
    if (mask_id < 0 || x_t[r] == mask_id) {  // mask_id -1: every position is drawn, nothing excluded
      const RowInput<T> in = row_input(lg, r, temperature, mask_id < 0 ? nullptr : excl, mask_id < 0 ? 0 : 1);
      st = score_row(in, temperature, f, rng, rng.row_offset + uint64_t(r), sc, tokens + r, &out, argmax + r);
    }
    const double vals[kNumScores] = {out.p_draw, out.p_top1, out.p_top2, out.entropy};
    for (int i = 0; i < kNumScores; ++i) scores[i * rows + r] = vals[i];
    return st;
  });
}

Status importance_resample(const double* E, int64_t B, int64_t k, RngArgs rng, double temperature, int64_t* index,
                           double* ess) {
  StatusCollector sc_all;
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < B; ++b) {
    const Philox4 blk = random_block(rng.seed, rng.offset, rng.row_offset + uint64_t(b), 0);
    const int32_t st = resample_row(E + b * k, k, temperature, uniform53(blk.v[0], blk.v[1]), index + b, ess + b);
    sc_all.add(st, b);
  }
  return sc_all.s;
}

void uniform(int64_t n, RngArgs rng, double* out) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < n; ++r) {
    const Philox4 blk = random_block(rng.seed, rng.offset, rng.row_offset + uint64_t(r), 0);
    out[r] = uniform53(blk.v[2], blk.v[3]);
  }
}

#define EDLM_INSTANTIATE(T)                                                                                  \
  template Status categorical<T>(Logits3<T>, int64_t, RngArgs, double, const FilterArgs&, const int64_t*,    \
                                 int64_t, Precision, int64_t*, double*);                                     \
  template Status sample_masked<T>(Logits3<T>, const int64_t*, int64_t, const double*, RngArgs, double,      \
                                   const FilterArgs&, Precision, int64_t*);                                  \
  template Status sample_candidates<T>(Logits3<T>, const int64_t*, int64_t, int64_t, RngArgs, double,        \
                                       const FilterArgs&, Precision, int64_t*, double*);                     \
  template Status sample_scored<T>(Logits3<T>, const int64_t*, int64_t, RngArgs, double, const FilterArgs&,  \
                                   int64_t*, double*, int64_t*);
EDLM_INSTANTIATE(float)
EDLM_INSTANTIATE(f16_t)
EDLM_INSTANTIATE(bf16_t)
#undef EDLM_INSTANTIATE

}  // namespace cpu
}  // namespace edlm
