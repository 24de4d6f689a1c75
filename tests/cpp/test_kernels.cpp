// Torch-free tests of the kernel library: RNG known answers, deterministic math, exact sampling.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "../../csrc/common/gumbel.h"
#include "../../csrc/common/philox.h"
#include "../../csrc/common/row_sampler.h"
#include "../../csrc/common/scalar_math.h"
#include "../../csrc/common/status.h"
#include "../../csrc/cpu/sampling.h"
#include "../../csrc/cpu/speculative.h"

namespace {

int failures = 0;

void check(bool ok, const char* what) {
  if (!ok) {
    std::printf("FAIL: %s\n", what);
    ++failures;
  }
}

void test_philox_known_answers() {
  // Random123's published known-answer vectors for Philox4x32-10.
  struct Kat {
    uint32_t ctr[4], key[2], out[4];
  } kats[] = {
      {{0, 0, 0, 0}, {0, 0}, {0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u}},
      {{~0u, ~0u, ~0u, ~0u}, {~0u, ~0u}, {0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu}},
      {{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u},
       {0xa4093822u, 0x299f31d0u},
       {0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u}},
  };
  for (const auto& k : kats) {
    edlm::Philox4 c{{k.ctr[0], k.ctr[1], k.ctr[2], k.ctr[3]}};
    const edlm::Philox4 r = edlm::philox4x32_10(c, k.key[0], k.key[1]);
    for (int i = 0; i < 4; ++i) check(r.v[i] == k.out[i], "philox known answer");
  }
}

void test_counter_layout_is_injective_on_its_fields() {
  const edlm::Philox4 a = edlm::make_counter(1ull << 39, (1ull << 47) + 5, (1ull << 39) + 7);
  check(a.v[0] == 7 && a.v[1] == 5 && a.v[2] == 0, "counter low words");
  check(a.v[3] == ((1u << 15) | (0x80u << 16) | (0x80u << 24)), "counter high word");
}

void test_uniform53_range() {
  check(edlm::uniform53(0, 0) == 0.0, "uniform53 lower end");
  check(edlm::uniform53(~0u, ~0u) == 1.0 - std::ldexp(1.0, -53), "uniform53 upper end");
  check(edlm::uniform24(~0u) == 1.0f - std::ldexp(1.0f, -24), "uniform24 upper end");
}

void test_exp_and_log_accuracy() {
  double worst_exp = 0.0, worst_log = 0.0;
  for (int i = 0; i <= 200000; ++i) {
    const double x = -708.0 + 708.0 * i / 200000.0;
    const double ref = std::exp(x);
    worst_exp = std::fmax(worst_exp, std::fabs(edlm::exp_det(x) - ref) / ref);
    const double y = std::exp(-700.0 + 1400.0 * i / 200000.0);
    const double lref = std::log(y);
    if (lref != 0.0) worst_log = std::fmax(worst_log, std::fabs(edlm::log_det(y) - lref) / std::fabs(lref));
  }
  std::printf("exp_det worst relative error %.3g, log_det %.3g\n", worst_exp, worst_log);
  check(worst_exp < 4e-16, "exp_det within a few ulp");
  check(worst_log < 4e-16, "log_det within a few ulp");
  check(edlm::exp_det(0.0) == 1.0, "exp(0) = 1");
  check(edlm::exp_det(-800.0) == 0.0 && edlm::exp_det(-INFINITY) == 0.0, "exp underflow is 0");
  check(edlm::log_det(1.0) == 0.0, "log(1) = 0");
  check(std::fabs(edlm::log_det(5e-324) - std::log(5e-324)) < 1e-12, "log of a subnormal");
}

void test_half_conversions() {
  check(edlm::to_float(edlm::f16_t{0x3C00}) == 1.0f, "half 1.0");
  check(edlm::to_float(edlm::f16_t{0xC000}) == -2.0f, "half -2.0");
  check(edlm::to_float(edlm::f16_t{0x0001}) == std::ldexp(1.0f, -24), "half smallest subnormal");
  check(std::isinf(edlm::to_float(edlm::f16_t{0xFC00})), "half -inf");
  check(edlm::to_float(edlm::bf16_t{0x3F80}) == 1.0f, "bf16 1.0");
}

void test_tree32_matches_butterfly() {
  double a[32], lanes[32];
  for (int i = 0; i < 32; ++i) a[i] = lanes[i] = 1.0 / (i + 3.0);
  // What lane 0 of a warp computes with v += shfl_xor(v, off) for off = 16 .. 1.
  for (int off = 16; off >= 1; off /= 2) {
    double next[32];
    for (int l = 0; l < 32; ++l) next[l] = lanes[l] + lanes[l ^ off];
    for (int l = 0; l < 32; ++l) lanes[l] = next[l];
  }
  check(edlm::tree32(a) == lanes[0], "tree32 equals the warp butterfly");
}

void test_categorical_frequencies() {
  const int V = 5, n = 400000;
  const float logits[V] = {0.0f, 1.0f, -1.0f, 2.0f, 0.5f};
  std::vector<int64_t> tok(n);
  std::vector<double> lp(n);
  edlm::Logits3<float> lg{logits, 1, 1, V, V, 0};
  const edlm::Status s = edlm::cpu::categorical(lg, n, edlm::RngArgs{7, 0, 0}, 1.0, edlm::FilterArgs{}, nullptr, 0,
                                                edlm::Precision::kFP64, tok.data(), lp.data());
  check(s.row < 0, "categorical status ok");
  double z = 0.0;
  for (float x : logits) z += std::exp(double(x));
  std::vector<int> counts(V, 0);
  for (int64_t t : tok) ++counts[t];
  for (int v = 0; v < V; ++v) {
    const double p = std::exp(double(logits[v])) / z;
    const double se = std::sqrt(n * p * (1 - p));
    check(std::fabs(counts[v] - n * p) < 4 * se, "categorical frequency within 4 SE");
  }
}

void test_status_names_the_first_bad_row() {
  std::vector<float> logits(4 * 3, 0.0f);
  logits[2 * 3 + 1] = NAN;
  logits[3 * 3 + 0] = NAN;
  int64_t tok[4];
  double lp[4];
  edlm::Logits3<float> lg{logits.data(), 4, 1, 3, 3, 0};
  const edlm::Status s = edlm::cpu::categorical(lg, 1, edlm::RngArgs{1, 0, 0}, 1.0, edlm::FilterArgs{}, nullptr, 0,
                                                edlm::Precision::kFP64, tok, lp);
  check(s.row == 2 && s.code == edlm::kNaN, "status names row 2 as NaN");
}

// A row holding a +inf and a NaN in different lanes is a NaN row on both devices: the CPU pass merges faults
// in entry order, the CUDA kernel ORs each lane's fault as a bit in whatever order the warps finish.
void test_nan_takes_precedence_over_inf_in_any_order() {
  const int64_t V = 3000;
  std::vector<float> x(V, 0.0f);
  x[5] = INFINITY;   // lane 0 of tile 0
  x[2500] = NAN;     // a lane of tile 2
  const edlm::RowInput<float> in{x.data(), V, 1.0, nullptr, 0};
  std::vector<int32_t> lane_codes;
  for (int64_t t = 0; t < edlm::num_tiles(V); ++t)
    for (int l = 0; l < edlm::kLanes; ++l) {
      int32_t st = edlm::kOk;
      edlm::lane_max(in, edlm::lane_begin(t, l, V), edlm::lane_end(t, l, V), &st);
      if (st != edlm::kOk) lane_codes.push_back(st);
    }
  check(lane_codes.size() == 2, "two lanes see a fault");
  uint32_t forward = 0, backward = 0;
  for (size_t i = 0; i < lane_codes.size(); ++i) {
    forward |= edlm::status_bit(lane_codes[i]);
    backward |= edlm::status_bit(lane_codes[lane_codes.size() - 1 - i]);
  }
  check(edlm::status_of_bits(forward) == edlm::kNaN, "CUDA-style merge names NaN");
  check(edlm::status_of_bits(backward) == edlm::kNaN, "CUDA-style merge names NaN in either order");
  check(edlm::merge_status(edlm::kPosInf, edlm::kNaN) == edlm::kNaN, "merge: NaN after +inf");
  check(edlm::merge_status(edlm::kNaN, edlm::kPosInf) == edlm::kNaN, "merge: +inf after NaN");
  int64_t tok;
  double lp;
  const edlm::Logits3<float> lg{x.data(), 1, 1, V, V, 0};
  const edlm::Status s = edlm::cpu::categorical(lg, 1, edlm::RngArgs{1, 0, 0}, 1.0, edlm::FilterArgs{}, nullptr, 0,
                                                edlm::Precision::kFP64, &tok, &lp);
  check(s.row == 0 && s.code == edlm::kNaN, "CPU kernel names NaN");
}

// Arguments the kernels check themselves (no host read-back): exclude ids and p_unmask.
void test_kernel_argument_checks() {
  const int64_t V = 6, n = 2000;
  std::vector<float> x(2 * V, 0.0f);
  const edlm::Logits3<float> lg{x.data(), 2, 1, V, V, 0};
  std::vector<int64_t> tok(2 * n), tok2(2 * n);
  std::vector<double> lp(2 * n);
  const int64_t dup[4] = {1, 1, 4, 4}, uniq[2] = {1, 4}, neg[2] = {-1, 3}, big[2] = {3, 6};
  edlm::Status s = edlm::cpu::categorical(lg, n, edlm::RngArgs{3, 0, 0}, 1.0, edlm::FilterArgs{}, dup, 4, edlm::Precision::kFP64,
                                          tok.data(), lp.data());
  check(s.row < 0, "duplicated exclude ids are accepted");
  edlm::cpu::categorical(lg, n, edlm::RngArgs{3, 0, 0}, 1.0, edlm::FilterArgs{}, uniq, 2, edlm::Precision::kFP64, tok2.data(), lp.data());
  check(tok == tok2, "duplicates change no draw");
  bool never = true;
  for (int64_t t : tok) never = never && t != 1 && t != 4;
  check(never, "excluded ids are never drawn");
  s = edlm::cpu::categorical(lg, 1, edlm::RngArgs{3, 0, 0}, 1.0, edlm::FilterArgs{}, neg, 2, edlm::Precision::kFP64, tok.data(),
                             lp.data());
  check(s.row == 0 && s.code == edlm::kBadExclude, "negative exclude id");
  s = edlm::cpu::categorical(lg, 1, edlm::RngArgs{3, 0, 0}, 1.0, edlm::FilterArgs{}, big, 2, edlm::Precision::kFP64, tok.data(),
                             lp.data());
  check(s.row == 0 && s.code == edlm::kBadExclude, "exclude id V");
  const edlm::Logits3<float> lg3{x.data(), 2, 3, 2, 6, 2};
  const int64_t x_t[6] = {0, 0, 0, 1, 1, 1};
  const double p_bad[2] = {0.5, NAN};
  int64_t x_s[6];
  s = edlm::cpu::sample_masked(lg3, x_t, 0, p_bad, edlm::RngArgs{3, 0, 0}, 1.0, edlm::FilterArgs{}, edlm::Precision::kFP64,
                               x_s);
  check(s.row == 3 && s.code == edlm::kBadPUnmask, "p_unmask NaN names the first row of its sequence");
}

// The fp32-gumbel masked step skips tokens that cannot beat the best score so far; the argmax must equal the
// full reference scan, also when the row is cut into chunks and merged as the CUDA kernel does.
void test_gumbel_masked_skip_keeps_the_reference_argmax() {
  const int V = 3000;
  const double ps[] = {0.0, 1e-4, 1e-2, 0.3, 1.0};
  std::vector<float> x(V);
  uint32_t state = 12345u;
  int mismatches = 0, unmasked = 0;
  for (int rep = 0; rep < 40; ++rep) {
    for (int v = 0; v < V; ++v) {
      state = state * 1664525u + 1013904223u;
      x[v] = -std::log(float(v + 1)) + float(state >> 8) * (1.0f / 16777216.0f) * float(rep % 4);
    }
    const int64_t mask_id = (rep * 977) % V;
    const int64_t excl[1] = {mask_id};
    const edlm::RowInput<float> in{x.data(), V, 1.0, excl, 1};
    edlm::RowSummary s{};
    s.M = -1e300;
    for (int v = 0; v < V; ++v)
      if (v != mask_id && double(x[v]) > s.M) s.M = x[v];
    s.Z = 0.0;
    for (int v = 0; v < V; ++v)
      if (v != mask_id) s.Z += edlm::exp_det(double(x[v]) - s.M);
    for (double p : ps)
      for (uint64_t row = 0; row < 8; ++row) {
        float ref_best = 0.0f;
        int64_t ref_arg = -1;
        for (int64_t v = 0; v < V; ++v) {
          const float prob = v == mask_id ? float(1.0 - p) : float(p * (edlm::exp_det(double(x[v]) - s.M) / s.Z));
          const float score = edlm::gumbel_ref_score(prob, edlm::gumbel_uniform(9, 3, row, v, V));
          if (ref_arg < 0 || score > ref_best) {
            ref_best = score;
            ref_arg = v;
          }
        }
        float best = 0.0f;
        int64_t arg = -1;
        edlm::gumbel_masked_scan(in, 0, V, s, p, mask_id, 9, 3, row, &best, &arg);
        float b1 = 0.0f, b2 = 0.0f;
        int64_t a1 = -1, a2 = -1;
        edlm::gumbel_masked_scan(in, 0, 1236, s, p, mask_id, 9, 3, row, &b1, &a1);
        edlm::gumbel_masked_scan(in, 1236, V, s, p, mask_id, 9, 3, row, &b2, &a2);
        if (b2 > b1 || (b2 == b1 && a2 < a1)) {
          b1 = b2;
          a1 = a2;
        }
        mismatches += (arg != ref_arg || best != ref_best || a1 != ref_arg) ? 1 : 0;
        unmasked += ref_arg != mask_id ? 1 : 0;
      }
  }
  // The skip rests on this bound: no uniform gives a noise below kGumbelNoiseMin, so no score beats
  // prob / kGumbelNoiseMin.  The equivalence above cannot probe it: the bound only binds at u = 1 - 2^-24.
  const float u_max = edlm::uniform24(0xFFFFFFFFu);
  check(u_max == 1.0f - 1.0f / 16777216.0f, "largest 24-bit uniform");
  const float noise_min = 1e-10f - float(edlm::log_det(double(u_max + 1e-10f)));
  check(noise_min > float(edlm::kGumbelNoiseMin) * 1.001f, "kGumbelNoiseMin lies below the smallest noise");
  for (float prob : {1e-30f, 3e-9f, 0.5f, 1.0f})
    check(double(edlm::gumbel_ref_score(prob, u_max)) <= double(prob) / edlm::kGumbelNoiseMin,
          "no score exceeds prob / kGumbelNoiseMin");
  check(mismatches == 0, "fp32-gumbel masked scan equals the full reference scan");
  check(unmasked > 100 && unmasked < 40 * 5 * 8, "the masked scan test covers both outcomes");
}

// With the target equal to the draft (w = 0, l_AR = l_D) every draft passes, the run covers the window, and the
// fixing token comes from pi at the next position; a draft that q cannot give (a -inf logit) is refused.
void test_verify_equal_target_accepts_every_draft() {
  const int64_t V = 5, W = 3, K = 2;
  std::vector<float> d = {0.1f, 1.0f, -0.5f, 2.0f, 0.0f, 0.3f, 0.2f, 0.1f, -1.0f, 1.5f,
                          -INFINITY, 1.0f, 1.0f, 1.0f, 1.0f, -INFINITY, 0.0f, 0.5f, 0.2f, 0.1f};
  std::vector<float> a(K * d.size());
  for (int64_t k = 0; k < K; ++k) std::copy(d.begin(), d.end(), a.begin() + k * int64_t(d.size()));
  std::vector<int64_t> drafts = {3, 0, 2, 1, 4, 1}, n_valid = {W + 1, 2};
  std::vector<int64_t> n_acc(K), fix(K);
  std::vector<double> lq(K * (W + 1)), lpa(lq.size()), lpi(lq.size());
  const edlm::VerifyArgs<float> args{{d.data(), 1, W + 1, V, (W + 1) * V, V}, {a.data(), K, W + 1, V, (W + 1) * V, V},
                                     drafts.data(), n_valid.data(), K, W, 0.0, 1.0, -1, edlm::FilterArgs{}};
  const edlm::VerifyOut out{n_acc.data(), fix.data(), lq.data(), lpa.data(), lpi.data()};
  edlm::Status s = edlm::cpu::speculative_verify(args, edlm::RngArgs{1, 2, 3}, out);
  check(s.row < 0, "verify status ok");
  check(n_acc[0] == W && fix[0] >= 1 && fix[0] < V, "a full window and a fixing token from pi (token 0 is -inf)");
  check(n_acc[1] == 2 && fix[1] == -1, "a row that ends inside the run draws nothing");
  for (size_t i = 0; i < lq.size(); ++i) check(lq[i] == lpi[i] && lq[i] == lpa[i], "equal logs when pi = q = p_AR");
  drafts[2] = 0;  // particle 0, position 2: token 0 has a -inf logit there
  s = edlm::cpu::speculative_verify(args, edlm::RngArgs{1, 2, 3}, out);
  check(s.row == 0 && s.code == edlm::kBadTarget, "a draft that q cannot give is refused");
}

}  // namespace

int main() {
  test_philox_known_answers();
  test_counter_layout_is_injective_on_its_fields();
  test_uniform53_range();
  test_exp_and_log_accuracy();
  test_half_conversions();
  test_tree32_matches_butterfly();
  test_categorical_frequencies();
  test_status_names_the_first_bad_row();
  test_nan_takes_precedence_over_inf_in_any_order();
  test_kernel_argument_checks();
  test_gumbel_masked_skip_keeps_the_reference_argmax();
  test_verify_equal_target_accepts_every_draft();
  if (failures) {
    std::printf("%d check(s) failed\n", failures);
    return 1;
  }
  std::printf("all kernel checks passed\n");
  return 0;
}
