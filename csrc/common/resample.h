// Self-normalized importance resampling of one row of energies, shared by CPU and CUDA.
#pragma once

#include <stdint.h>

#include "philox.h"
#include "row_sampler.h"
#include "scalar_math.h"

namespace edlm {

// Weights exp(-(E_j - E_min) / temperature) (temperature 0: the minima, equally); +inf energy weighs 0.
// NaN or -inf energies, or every energy +inf, make the row invalid.
EDLM_HD int32_t resample_row(const double* E, int64_t k, double temperature, double u, int64_t* index,
                             double* ess) {
  double e_min = 1.0 / 0.0;
  for (int64_t j = 0; j < k; ++j) {
    if (is_nan(E[j])) return kNaN;
    if (E[j] == -1.0 / 0.0) return kInfiniteWeight;
    if (E[j] < e_min) e_min = E[j];
  }
  if (e_min == 1.0 / 0.0) return kNoWeight;
  double sum = 0.0, sum2 = 0.0;
  for (int64_t j = 0; j < k; ++j) {
    const double w = temperature > 0.0 ? exp_det(-(E[j] - e_min) / temperature) : (E[j] == e_min ? 1.0 : 0.0);
    sum += w;
    sum2 += w * w;
  }
  *ess = (sum * sum) / sum2;
  const double target = u * sum;
  double c = 0.0;
  int64_t last = 0;
  for (int64_t j = 0; j < k; ++j) {
    const double w = temperature > 0.0 ? exp_det(-(E[j] - e_min) / temperature) : (E[j] == e_min ? 1.0 : 0.0);
    if (w > 0.0) {
      last = j;
      c = c + w;
      if (c > target) {
        *index = j;
        return kOk;
      }
    }
  }
  *index = last;
  return kOk;
}

}  // namespace edlm
