#include "logprob.h"

#include <omp.h>

#include <cmath>
#include <vector>

namespace edlm {
namespace cpu {
namespace {

constexpr int kAcc = 16;     // independent partial sums: lets the compiler vectorize without reassociating
constexpr int kBlock = 1024;  // float partial sums are flushed to float64 this often

// Max and float64 sum of exp(x - max) over a float row.  Compiled for several ISAs and picked at load time;
// every variant adds in the same explicit order, so the result does not depend on the machine.
__attribute__((target_clones("avx512f", "avx2", "default"))) void max_sumexp(const float* x, int64_t n, float* m_out,
                                                                            double* s_out) {
  float mv[kAcc];
  for (int j = 0; j < kAcc; ++j) mv[j] = -INFINITY;
  int64_t i = 0;
  for (; i + kAcc <= n; i += kAcc)
    for (int j = 0; j < kAcc; ++j) mv[j] = x[i + j] > mv[j] ? x[i + j] : mv[j];
  float m = -INFINITY;
  for (int j = 0; j < kAcc; ++j) m = mv[j] > m ? mv[j] : m;
  for (; i < n; ++i) m = x[i] > m ? x[i] : m;
  *m_out = m;
  double s = 0.0;
  float e[kBlock];
  for (int64_t b = 0; b < n; b += kBlock) {
    const int64_t len = n - b < kBlock ? n - b : kBlock;
    for (int64_t t = 0; t < len; ++t) e[t] = exp_f32(x[b + t] - m);
    float acc[kAcc] = {};
    int64_t t = 0;
    for (; t + kAcc <= len; t += kAcc)
      for (int j = 0; j < kAcc; ++j) acc[j] += e[t + j];
    double blk = 0.0;
    for (int j = 0; j < kAcc; ++j) blk += double(acc[j]);
    for (; t < len; ++t) blk += double(e[t]);
    s += blk;
  }
  *s_out = s;
}

void keep_first(Status& st, int32_t code, int64_t row) {
  if (code == kOk) return;
#pragma omp critical(edlm_lp_status)
  if (st.row < 0 || row < st.row) {
    st.row = row;
    st.code = code;
  }
}

}  // namespace

template <typename T>
Status token_logprob(Logits3<T> logits, const int64_t* targets,
                             const double* weights, double* out) {
  Status st;
  const int64_t R = logits.B * logits.L, V = logits.V;
#pragma omp parallel
  {
    std::vector<float> buf;
#pragma omp for schedule(dynamic, 8)
    for (int64_t r = 0; r < R; ++r) {
      const double w = weights ? weights[r] : 1.0;
      if (w == 0.0) {
        out[r] = 0.0;
        continue;
      }
      const int64_t tgt = targets[r];
      if (tgt < 0 || tgt >= V) {
        keep_first(st, kBadTarget, r);
        out[r] = 0.0;
        continue;
      }
      const T* src = logits.row(r / logits.L, r % logits.L);
      const float* x;
      if constexpr (sizeof(T) == sizeof(float)) {
        x = reinterpret_cast<const float*>(src);
      } else {
        buf.resize(V);
        for (int64_t v = 0; v < V; ++v) buf[v] = to_float(src[v]);
        x = buf.data();
      }
      float m;
      double s;
      max_sumexp(x, V, &m, &s);
      if (m == -INFINITY) {
        keep_first(st, kNoFinite, r);
        out[r] = 0.0;
        continue;
      }
      if (!(s < INFINITY) || std::isnan(m)) {  // NaN or +inf somewhere in the row
        keep_first(st, kNotFinite, r);
        out[r] = 0.0;
        continue;
      }
      out[r] = w * logprob_from_lse(x[tgt], m, s);
    }
  }
  return st;
}

void sum_rows(const double* rows, int64_t N, int64_t L, double* out) {
  for (int64_t n = 0; n < N; ++n) {
    double s = 0.0;
    for (int64_t l = 0; l < L; ++l) s += rows[n * L + l];
    out[n] = s;
  }
}

template Status token_logprob<float>(Logits3<float>, const int64_t*, const double*,
                                             double*);
template Status token_logprob<f16_t>(Logits3<f16_t>, const int64_t*, const double*,
                                             double*);
template Status token_logprob<bf16_t>(Logits3<bf16_t>, const int64_t*,
                                              const double*, double*);

}  // namespace cpu
}  // namespace edlm
