#include "speculative.h"

#include <algorithm>

#include "filter_cut.h"
#include "rows.h"

namespace edlm {
namespace cpu {
namespace {

// A logit row (q, p_AR): the vectorized pass of the sampling kernels.
template <typename T>
int32_t summarize_any(const RowInput<T>& in, Scratch& sc, RowSummary* s) {
  return summarize_row_input(in, sc, s);
}

// The product and residual rows: the canonical tile pass of row_sampler.h, lane by lane as a warp runs it.
template <typename In>
int32_t summarize_any(const In& in, Scratch& sc, RowSummary* s) {
  const int64_t n_tiles = num_tiles(in.V);
  sc.ts.resize(n_tiles);
  int32_t status = kOk;
  for (int64_t t = 0; t < n_tiles; ++t) {
    double m = neg_inf(), a[kLanes];
    for (int l = 0; l < kLanes; ++l) m = std::max(m, lane_max(in, lane_begin(t, l, in.V), lane_end(t, l, in.V), &status));
    for (int l = 0; l < kLanes; ++l)
      a[l] = m == neg_inf() ? 0.0 : lane_sum(in, lane_begin(t, l, in.V), lane_end(t, l, in.V), m);
    sc.ts[t].m = m;
    sc.ts[t].c = m == neg_inf() ? 0.0 : tree32(a);
  }
  return status != kOk ? status : summarize_row(sc.ts.data(), n_tiles, s);
}

template <typename In>
int32_t normalize_any(const In& in, Scratch& sc, Normalized* n) {
  RowSummary s{};
  const int32_t st = summarize_any(in, sc, &s);
  *n = Normalized{s.M, s.log_Z};
  return st;
}

template <typename In>
int32_t draw_any(const In& in, Scratch& sc, double u, int64_t* token) {
  RowSummary s;
  const int32_t st = summarize_any(in, sc, &s);
  if (st == kOk) *token = draw_from_row(in, sc.ts.data(), s, u);
  return st;
}

// Position j's rows and their three normalizers.
template <typename T>
int32_t position(const VerifyArgs<T>& args, int64_t n, int64_t j, Scratch& sc, WindowPosition<T>* p) {
  p->rows = window_rows(args, n, j, &args.mask_id);
  int32_t st = filters_on(args.filter) ? find_cut(&p->rows.q, args.filter, sc) : kOk;
  if (st == kOk) st = normalize_any(p->rows.q, sc, &p->q);
  if (st == kOk) st = normalize_any(p->rows.pa, sc, &p->pa);
  if (st == kOk) st = normalize_any(p->rows.pi, sc, &p->pi);
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
  int64_t j = 0;
  for (; j < std::min(W, n_valid); ++j) {
    const int64_t y = args.drafts[n * W + j];
    if (bad_draft(args, y)) return kBadTarget;
    if (const int32_t st = position(args, n, j, sc, &at); st != kOk) return st;
    if (undrawable(at, y)) return kBadTarget;
    write_log_probs(at, y, out, base + j);
    if (!accepts(at, y, verify_uniform(rng, n, W, j))) break;
  }
  out.n_acc[n] = j;
  if (j >= n_valid) return kOk;  // the sequence ends inside the accepted run
  const double u = verify_uniform(rng, n, W, W);
  int64_t token = -1;
  if (j < W) {  // rejected at j: the residual, unless its mass is 0
    const ResidualInput<T> res{at.rows.pi, at.rows.q, at.pi, at.q, args.d.V, at.rows.q.excl, at.rows.q.n_excl};
    const int32_t st = draw_any(res, sc, u, &token);
    if (st != kOk && st != kNoFinite) return st;
  } else if (const int32_t st = position(args, n, j, sc, &at); st != kOk) {
    return st;
  }
  if (token < 0)
    if (const int32_t st = draw_any(at.rows.pi, sc, u, &token); st != kOk) return st;
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
