#include "speculative.h"

#include <algorithm>

#include "filter_cut.h"
#include "rows.h"

namespace edlm {
namespace cpu {
namespace {

// The tile stats of a row into ts and its summary.
template <typename In>
int32_t summarize_tiles(const In& in, TileStat* ts, RowSummary* s) {
  int32_t status = kOk;
  int64_t e = 0;
  for (int64_t t = 0; t < num_tiles(in.V); ++t) status = merge_status(status, tile_stats(in, t, &ts[t], &e));
  return status != kOk ? status : summarize_row(ts, num_tiles(in.V), s);
}

// Where a particle's tile stats live in its scratch: q, p_AR, pi, then the residual's.
struct PositionTiles {
  TileStat *q, *pa, *pi, *res;
  RowSummary pi_sum;  // kept for a draw from pi at this position
};

// Position j's rows and their three normalizers in one pass: tile t of the denoiser's and of the AR model's row is
// read once for all three rows (as on the GPU, where a warp does the three for the tile in hand).  Faults of the
// three rows merge (the lowest code wins), then the summaries' codes, as the GPU's fault bits and codes do.
template <typename T>
int32_t position(const VerifyArgs<T>& args, int64_t n, int64_t j, Scratch& sc, WindowPosition<T>* p,
                 PositionTiles* tiles) {
  p->rows = window_rows(args, n, j, &args.mask_id);
  if (filters_on(args.filter))
    if (const int32_t st = find_cut(&p->rows.q, args.filter, sc); st != kOk) return st;
  const int64_t tq = num_tiles(args.d.V), ta = num_tiles(args.a.V);
  sc.ts.resize(3 * tq + ta);
  *tiles = PositionTiles{sc.ts.data(), sc.ts.data() + tq, sc.ts.data() + tq + ta, sc.ts.data() + 2 * tq + ta, {}};
  int32_t faults = kOk;
  int64_t e_q = 0, e_pa = 0, e_pi = 0;
  for (int64_t t = 0; t < std::max(tq, ta); ++t) {
    if (t < tq) faults = merge_status(faults, tile_stats(p->rows.q, t, &tiles->q[t], &e_q));
    if (t < ta) faults = merge_status(faults, tile_stats(p->rows.pa, t, &tiles->pa[t], &e_pa));
    if (t < tq) faults = merge_status(faults, tile_stats(p->rows.pi, t, &tiles->pi[t], &e_pi));
  }
  if (faults != kOk) return faults;
  RowSummary q{}, pa{};
  const int32_t st = merge_status(merge_status(summarize_row(tiles->q, tq, &q), summarize_row(tiles->pa, ta, &pa)),
                                  summarize_row(tiles->pi, tq, &tiles->pi_sum));
  p->q = Normalized{q.M, q.log_Z};
  p->pa = Normalized{pa.M, pa.log_Z};
  p->pi = Normalized{tiles->pi_sum.M, tiles->pi_sum.log_Z};
  return st;
}

template <typename T>
int32_t verify_row(const VerifyArgs<T>& args, RngArgs rng, int64_t n, Scratch& sc, const VerifyOut& out) {
  const int64_t W = args.W, base = n * (W + 1);
  const int64_t n_valid = std::min(args.n_valid[n], W + 1);
  for (double* p : {out.log_q, out.log_pa, out.log_pi}) std::fill(p + base, p + base + W + 1, 0.0);
  out.n_acc[n] = 0;
  out.fix[n] = -1;
  WindowPosition<T> at;
  PositionTiles tiles;
  int64_t j = 0;
  for (; j < std::min(W, n_valid); ++j) {
    const int64_t y = args.drafts[n * W + j];
    if (bad_draft(args, y)) return kBadTarget;
    if (const int32_t st = position(args, n, j, sc, &at, &tiles); st != kOk) return st;
    if (undrawable(at, y)) return kBadTarget;
    write_log_probs(at, y, out, base + j);
    if (!accepts(at, y, verify_uniform(rng, n, W, j))) break;
  }
  out.n_acc[n] = j;
  if (j >= n_valid) return kOk;  // the sequence ends inside the accepted run
  if (j == W)  // every draft passed: the next position's rows
    if (const int32_t st = position(args, n, j, sc, &at, &tiles); st != kOk) return st;
  const double u = verify_uniform(rng, n, W, W);
  int64_t token = -1;
  if (j < W) {  // rejected at j: the residual, unless its mass is 0
    const ResidualInput<T> res{at.rows.pi, at.rows.q, at.pi, at.q, args.d.V, at.rows.q.excl, at.rows.q.n_excl};
    RowSummary s;
    const int32_t st = summarize_tiles(res, tiles.res, &s);
    if (st == kOk) token = draw_from_row(res, tiles.res, s, u);
    if (st != kOk && st != kNoFinite) return st;
  }
  if (token < 0) token = draw_from_row(at.rows.pi, tiles.pi, tiles.pi_sum, u);  // pi's tiles from its position pass
  out.fix[n] = token;
  write_log_probs(at, token, out, base + j);
  return kOk;
}

}  // namespace

template <typename T>
Status speculative_verify(const VerifyArgs<T>& args, RngArgs rng, VerifyOut out) {
  return for_rows(args.a.B, 16, [&](int64_t n, Scratch& sc) { return verify_row(args, rng, n, sc, out); });
}

template Status speculative_verify<float>(const VerifyArgs<float>&, RngArgs, VerifyOut);
template Status speculative_verify<f16_t>(const VerifyArgs<f16_t>&, RngArgs, VerifyOut);
template Status speculative_verify<bf16_t>(const VerifyArgs<bf16_t>&, RngArgs, VerifyOut);

}  // namespace cpu
}  // namespace edlm
