// CPU speculative verification (common/verify.h): raw pointers in, a status out.  No torch here.
#pragma once

#include <stdint.h>

#include "../common/types.h"
#include "../common/verify.h"

namespace edlm {
namespace cpu {

// One particle per row of args.a; out's arrays are [B K] and [B K, W + 1].  Uniforms: verify_uniform.
template <typename T>
Status speculative_verify(const VerifyArgs<T>& args, RngArgs rng, VerifyOut out);

}  // namespace cpu
}  // namespace edlm
