// Speculative verification of one particle's window, shared by the CPU and CUDA kernels.
//
// Rows of the window j = 0 .. W (W drafts, then the next position): denoiser logits l_D (shared by the K particles
// of a sequence) and AR logits l_AR (per particle, over the AR's own Va ids).  Three distributions per position,
// each normalized by the canonical tile pass of row_sampler.h, so no row is ever written out:
//   q  = softmax(l_D / tau)                        (the draft's; mask excluded; top-k/p, min-p as the draft)
//   pA = softmax(l_AR)                             (the AR model's, over its Va ids)
//   pi = softmax((w l_D + (1 - w) l_AR) / tau)     (the target; mask excluded; ids >= Va impossible unless w = 1,
//                                                   where the AR term drops and pi is the unfiltered draft)
// Draft y_j is accepted while log u_j < log pi(y_j) - log q(y_j); at the first rejection the token is drawn from
// normalize(max(0, pi - q)) (a "residual row" whose z is the log of that difference), or from pi where that mass
// is 0 or when all W drafts were accepted.  The residual can be far below float32's resolution: everything here
// is float64.
#pragma once

#include <stdint.h>

#include "filter.h"
#include "macros.h"
#include "philox.h"
#include "row_sampler.h"
#include "scalar_math.h"
#include "status.h"
#include "types.h"

namespace edlm {

// One row of the target pi: z = w_d l_D + w_a l_AR with w_d = w / tau, w_a = (1 - w) / tau; a zero weight drops
// its term (so a -inf there gives no 0 * -inf), and ids at or past the AR's Va have no AR probability.
template <typename T>
struct PoeInput {
  const T* d;
  const T* a;
  int64_t V, Va;
  double w_d, w_a;
  const int64_t* excl;
  int64_t n_excl;
  double z_cut = -1.0 / 0.0;
};

template <typename T>
EDLM_HD double load_z(const PoeInput<T>& in, int64_t v) {
  const double a = v < in.Va ? double(to_float(in.a[v])) : -1.0 / 0.0;
  if (in.w_d == 0.0) return a * in.w_a;
  const double d = double(to_float(in.d[v])) * in.w_d;
  return in.w_a == 0.0 ? d : d + a * in.w_a;
}

// A normalized row: log p(v) = z(v) - M - log Z.
struct Normalized {
  double M, log_Z;
};

// The residual row max(0, pi - q) as z = log of it (-inf where pi <= q).
template <typename T>
struct ResidualInput {
  PoeInput<T> pi;
  RowInput<T> q;
  Normalized n_pi, n_q;
  int64_t V;
  const int64_t* excl;
  int64_t n_excl;
  double z_cut = -1.0 / 0.0;
};

// q(v) of the filtered draft: 0 below its cut.
template <typename T>
EDLM_HD double q_prob(const RowInput<T>& q, const Normalized& n, int64_t v) {
  const double z = load_z(q, v);
  return z < q.z_cut ? 0.0 : exp_det(z - n.M - n.log_Z);
}

template <typename T>
EDLM_HD double load_z(const ResidualInput<T>& in, int64_t v) {
  const double p = exp_det(load_z(in.pi, v) - in.n_pi.M - in.n_pi.log_Z);
  const double q = q_prob(in.q, in.n_q, v);
  return p > q ? log_det(p - q) : -1.0 / 0.0;
}

template <typename In>
EDLM_HD double log_prob_at(const In& in, const Normalized& n, int64_t v) {
  return (load_z(in, v) - n.M) - n.log_Z;
}

// What the caller passes for the rows of one particle n (sequence b = n / K).
template <typename T>
struct VerifyArgs {
  Logits3<T> d;            // [B, W + 1, V]
  Logits3<T> a;            // [B K, W + 1, Va]
  const int64_t* drafts;   // [B K, W]
  const int64_t* n_valid;  // [B K]: window positions inside the sequence (0 for a finished row: nothing is read)
  int64_t K, W;
  double w, tau;
  int64_t mask_id;         // never drawn (-1: none)
  FilterArgs filter;       // the draft's filters, which shape q (pi is the target: never filtered)
};

// Per particle: the run length, the token drawn at its end (-1 when the row ends first), and at each emitted
// position the three log-probabilities of the emitted token ([B K, W + 1], 0 past the run).
struct VerifyOut {
  int64_t* n_acc;
  int64_t* fix;
  double* log_q;
  double* log_pa;
  double* log_pi;
};

// The three rows of position j of particle n.
template <typename T>
struct WindowRows {
  RowInput<T> q, pa;
  PoeInput<T> pi;
};

template <typename T>
EDLM_HD WindowRows<T> window_rows(const VerifyArgs<T>& args, int64_t n, int64_t j, const int64_t* mask) {
  const T* d = args.d.row(n / args.K, j);
  const T* a = args.a.row(n, j);
  const int64_t n_mask = *mask >= 0 ? 1 : 0;
  const int64_t* excl = n_mask ? mask : nullptr;
  WindowRows<T> rows;
  rows.q = RowInput<T>{d, args.d.V, 1.0 / args.tau, excl, n_mask};
  rows.pa = RowInput<T>{a, args.a.V, 1.0, nullptr, 0};
  rows.pi = PoeInput<T>{d, a, args.d.V, args.a.V, args.w / args.tau, (1.0 - args.w) / args.tau, excl, n_mask};
  return rows;
}

// Position j's rows and their normalizers.
template <typename T>
struct WindowPosition {
  WindowRows<T> rows;
  Normalized q, pa, pi;
};

// log q, log p_AR and log pi of token y at output slot `at`.
template <typename T>
EDLM_HD void write_log_probs(const WindowPosition<T>& p, int64_t y, const VerifyOut& out, int64_t at) {
  out.log_q[at] = load_z(p.rows.q, y) < p.rows.q.z_cut ? -1.0 / 0.0 : log_prob_at(p.rows.q, p.q, y);
  out.log_pa[at] = y < p.rows.pa.V ? log_prob_at(p.rows.pa, p.pa, y) : -1.0 / 0.0;
  out.log_pi[at] = log_prob_at(p.rows.pi, p.pi, y);
}

// Whether draft y passes the test with uniform u.
template <typename T>
EDLM_HD bool accepts(const WindowPosition<T>& p, int64_t y, double u) {
  return log_det(u) < log_prob_at(p.rows.pi, p.pi, y) - log_prob_at(p.rows.q, p.q, y);
}

// A draft the kernel refuses: q(y) = 0 (out of range, the mask, a -inf logit or cut by a filter), so the draft op
// never gives it; bad_draft checks what needs no read of the row, undrawable the rest.
template <typename T>
EDLM_HD bool bad_draft(const VerifyArgs<T>& args, int64_t y) {
  return y < 0 || y >= args.d.V || y == args.mask_id;
}

template <typename T>
EDLM_HD bool undrawable(const WindowPosition<T>& p, int64_t y) {
  const double z = load_z(p.rows.q, y);
  return z == -1.0 / 0.0 || z < p.rows.q.z_cut;
}

// The uniform of slot s of particle n: slots 0 .. W - 1 test the drafts, slot W draws the fixing token.
EDLM_HD double verify_uniform(RngArgs rng, int64_t n, int64_t W, int64_t s) {
  const uint64_t row = (rng.row_offset + uint64_t(n)) * uint64_t(W + 1) + uint64_t(s);
  const Philox4 blk = random_block(rng.seed, rng.offset, row, 0);
  return uniform53(blk.v[2], blk.v[3]);
}

}  // namespace edlm
