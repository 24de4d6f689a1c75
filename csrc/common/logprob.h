// Scalar pieces of the fused log-softmax-gather kernels (sequence_logprob / lm_head_logprob).
#pragma once

#include <stdint.h>

#include "macros.h"
#include "scalar_math.h"
#include "status.h"

namespace edlm {

// exp(x) in float, branch-free so loops over it vectorize; 0 below -87 (relative weight < 2^-125).
// Relative error about 1e-7; the sums it feeds are accumulated in float64.
EDLM_HD float exp_f32(float x) {
  const float shifter = 12582912.0f;  // 1.5 * 2^23
  const float xc = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
  const float t = xc * 1.44269504088896341f + shifter;
  const float kf = t - shifter;
  const float r = (xc - kf * 0.693145751953125f) - kf * 1.428606765330187045e-06f;
  float p = 1.0f / 40320.0f;
  p = p * r + 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t k = int32_t(float_to_bits(t) - float_to_bits(shifter));
  const float y = p * bits_to_float(uint32_t(k + 127) << 23);
  return x < -87.0f ? 0.0f : y;
}

// log_softmax(row)[target] from the row's max m and s = sum exp(x - m), in float64.
EDLM_HD double logprob_from_lse(float x_target, float m, double s) {
  return (double(x_target) - double(m)) - log_det(s);
}

}  // namespace edlm
