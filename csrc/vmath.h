/* vmath.h: the vector layer every kernel family is written against, one definition per ISA.
 *
 * The translation unit that includes this header is compiled once per SIMD level; CMake defines
 * exactly one of FL_SIMD_IS_AVX512 / FL_SIMD_IS_AVX2 / FL_SIMD_IS_NEON (none: portable scalar C, which is
 * the specification the vector versions follow operation by operation).
 *
 * For T in {f32, f64}: type vT, width vT_W, and
 *   vT_load/store (unaligned), vT_set1, vT_add/sub/mul/div, vT_fma(a,b,c) = a*b+c, vT_max, vT_hmax,
 *   vT_expn, vT_exp, vT_tanh, vT_acc(acc, v) (adds v's lanes into float64 accumulators acc[0..1]),
 *   vT_sel_ge / vT_sel_gt(a, b, x, y) (per lane: a >= b / a > b ? x : y), vT_add_ge(acc, a, b, x) (per
 *   lane: a >= b ? acc + x : acc), vT_ge_bits(a, b) (lane i of
 *   a >= b as bit i),
 * and vf64_hsum. FL_SIMD_SUFFIX names the level for exported symbols.
 *
 * vT_expn(x), the hot-loop exp, for x <= 0 (softmax arguments are z - max):
 *   e^x = 2^n e^r, n = round(x / ln2), r = x - n ln2 (ln2 in two parts, n*hi exact), |r| <= ln2/2;
 *   e^r = 1 + r p(r), p a polynomial: f32 degree 4 (minimax), f64 degree 12 (Taylor, truncation < 2e-17);
 *   2^n is built in the exponent field from the low bits of x*log2e + (1.5*2^mantissa_bits + bias),
 *   which also rounds n to nearest. Max error <= 2 ulp (measured by the tests against float64 / long
 *   double exp). Below FL_EXP_LO (f32 -87, f64 -708) the result is exactly 0 (so exp(-inf) = 0; the
 *   flushed values are < 2e-38 / 4e-308); NaN stays NaN; valid up to FL_EXP_HI (+inf gives NaN).
 * vT_exp(x): the whole real line: expn, and +inf above FL_EXP_HI (f32 88, f64 709).
 * tanh: float32, a few ulp relative (vf32_tanh); float64, 1 - 2 / (exp(2x) + 1), absolute error <= 4 ulp(1).
 * Both saturate to +-1 exactly.
 */
#ifndef FASTLM_VMATH_H
#define FASTLM_VMATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#define FL_CAT_(a, b) a##b
#define FL_CAT(a, b) FL_CAT_(a, b)

/* Constants shared by every ISA. */
#define FL_LOG2E 1.44269504088896340736
#define FL_LN2_HI_F32 0.693359375f            /* ln2 split (Cephes): hi has 9 significant bits */
#define FL_LN2_LO_F32 (-2.12194440e-4f)
#define FL_LN2_HI_F64 0.693147180369123816490 /* fdlibm's split */
#define FL_LN2_LO_F64 1.90821492927058770002e-10
#define FL_EXP_LO_F32 (-87.0f) /* e^x is flushed to 0 below, and overflows above FL_EXP_HI */
#define FL_EXP_HI_F32 88.0f
#define FL_EXP_LO_F64 (-708.0)
#define FL_EXP_HI_F64 709.0
#define FL_MAGIC_F32 12583039.0f              /* 0x1.8p23 + 127 */
#define FL_MAGIC_F64 6755399441056767.0       /* 0x1.8p52 + 1023 */
/* f32: (e^r - 1) / r ~ c1 + c2 r + c3 r^2 + c4 r^3 + c5 r^4 on |r| <= ln2/2 (minimax, XNNPACK's rr2-p5). */
#define FL_EXP_C1_F32 0x1.FFFFF6p-1f
#define FL_EXP_C2_F32 0x1.FFFDC6p-2f
#define FL_EXP_C3_F32 0x1.555A80p-3f
#define FL_EXP_C4_F32 0x1.573A1Ap-5f
#define FL_EXP_C5_F32 0x1.0F9F9Cp-7f
#define FL_EXP_F32_POLY(FMA, SET1, r)                                                                 \
    FMA(FMA(FMA(FMA(SET1(FL_EXP_C5_F32), r, SET1(FL_EXP_C4_F32)), r, SET1(FL_EXP_C3_F32)), r,            \
            SET1(FL_EXP_C2_F32)), r, SET1(FL_EXP_C1_F32))

/* f64: (e^r - 1) / r = sum_{k=0}^{12} r^k / (k+1)!, Horner from the top. */
#define FL_EXP_F64_POLY(FMA, SET1, r)                                                                   \
    FMA(FMA(FMA(FMA(FMA(FMA(FMA(FMA(FMA(FMA(FMA(FMA(SET1(1.0 / 6227020800.0), r, SET1(1.0 / 479001600.0)), \
    r, SET1(1.0 / 39916800.0)), r, SET1(1.0 / 3628800.0)), r, SET1(1.0 / 362880.0)), r,                   \
    SET1(1.0 / 40320.0)), r, SET1(1.0 / 5040.0)), r, SET1(1.0 / 720.0)), r, SET1(1.0 / 120.0)), r,         \
    SET1(1.0 / 24.0)), r, SET1(1.0 / 6.0)), r, SET1(0.5)), r, SET1(1.0))

/* ------------------------------------------------------------------------------------------------ */
#if defined(FL_SIMD_IS_AVX512)
#include <immintrin.h>
#define FL_SIMD_SUFFIX avx512
typedef __m512 vf32;
typedef __m512d vf64;
#define vf32_W 16
#define vf64_W 8
#define vf32_load _mm512_loadu_ps
#define vf32_store _mm512_storeu_ps
#define vf32_set1 _mm512_set1_ps
#define vf32_add _mm512_add_ps
#define vf32_sub _mm512_sub_ps
#define vf32_mul _mm512_mul_ps
#define vf32_div _mm512_div_ps
#define vf32_fma _mm512_fmadd_ps
#define vf32_max _mm512_max_ps
#define vf32_hmax _mm512_reduce_max_ps
#define vf64_load _mm512_loadu_pd
#define vf64_store _mm512_storeu_pd
#define vf64_set1 _mm512_set1_pd
#define vf64_add _mm512_add_pd
#define vf64_sub _mm512_sub_pd
#define vf64_mul _mm512_mul_pd
#define vf64_div _mm512_div_pd
#define vf64_fma _mm512_fmadd_pd
#define vf64_max _mm512_max_pd
#define vf64_hmax _mm512_reduce_max_pd
#define vf64_hsum _mm512_reduce_add_pd

static inline vf32 vf32_expn(vf32 x) {
    vf32 t = _mm512_fmadd_ps(x, _mm512_set1_ps((float)FL_LOG2E), _mm512_set1_ps(FL_MAGIC_F32));
    vf32 s = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_castps_si512(t), 23));
    vf32 n = _mm512_sub_ps(t, _mm512_set1_ps(FL_MAGIC_F32));
    vf32 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(FL_LN2_HI_F32), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(FL_LN2_LO_F32), r);
    vf32 p = FL_EXP_F32_POLY(_mm512_fmadd_ps, _mm512_set1_ps, r);
    vf32 y = _mm512_fmadd_ps(_mm512_mul_ps(r, s), p, s);
    return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(x, _mm512_set1_ps(FL_EXP_LO_F32), _CMP_NLT_UQ), y);
}
static inline vf64 vf64_expn(vf64 x) {
    vf64 t = _mm512_fmadd_pd(x, _mm512_set1_pd(FL_LOG2E), _mm512_set1_pd(FL_MAGIC_F64));
    vf64 s = _mm512_castsi512_pd(_mm512_slli_epi64(_mm512_castpd_si512(t), 52));
    vf64 n = _mm512_sub_pd(t, _mm512_set1_pd(FL_MAGIC_F64));
    vf64 r = _mm512_fnmadd_pd(n, _mm512_set1_pd(FL_LN2_HI_F64), x);
    r = _mm512_fnmadd_pd(n, _mm512_set1_pd(FL_LN2_LO_F64), r);
    vf64 p = FL_EXP_F64_POLY(_mm512_fmadd_pd, _mm512_set1_pd, r);
    vf64 y = _mm512_fmadd_pd(_mm512_mul_pd(r, s), p, s);
    return _mm512_maskz_mov_pd(_mm512_cmp_pd_mask(x, _mm512_set1_pd(FL_EXP_LO_F64), _CMP_NLT_UQ), y);
}
static inline vf32 vf32_sel_ge(vf32 a, vf32 b, vf32 x, vf32 y) {
    return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(a, b, _CMP_GE_OQ), y, x);
}
static inline vf32 vf32_sel_gt(vf32 a, vf32 b, vf32 x, vf32 y) {
    return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(a, b, _CMP_GT_OQ), y, x);
}
static inline unsigned vf32_ge_bits(vf32 a, vf32 b) { return (unsigned)_mm512_cmp_ps_mask(a, b, _CMP_GE_OQ); }
static inline vf32 vf32_add_ge(vf32 acc, vf32 a, vf32 b, vf32 x) {
    return _mm512_mask_add_ps(acc, _mm512_cmp_ps_mask(a, b, _CMP_GE_OQ), acc, x);
}
static inline vf64 vf64_sel_ge(vf64 a, vf64 b, vf64 x, vf64 y) {
    return _mm512_mask_blend_pd(_mm512_cmp_pd_mask(a, b, _CMP_GE_OQ), y, x);
}
static inline vf64 vf64_sel_gt(vf64 a, vf64 b, vf64 x, vf64 y) {
    return _mm512_mask_blend_pd(_mm512_cmp_pd_mask(a, b, _CMP_GT_OQ), y, x);
}
static inline unsigned vf64_ge_bits(vf64 a, vf64 b) { return (unsigned)_mm512_cmp_pd_mask(a, b, _CMP_GE_OQ); }
static inline vf64 vf64_add_ge(vf64 acc, vf64 a, vf64 b, vf64 x) {
    return _mm512_mask_add_pd(acc, _mm512_cmp_pd_mask(a, b, _CMP_GE_OQ), acc, x);
}
static inline vf32 vf32_above(vf32 x, float c, vf32 v, vf32 y) {
    return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, _mm512_set1_ps(c), _CMP_GT_OQ), y, v);
}
static inline vf64 vf64_above(vf64 x, double c, vf64 v, vf64 y) {
    return _mm512_mask_blend_pd(_mm512_cmp_pd_mask(x, _mm512_set1_pd(c), _CMP_GT_OQ), y, v);
}
static inline void vf32_acc(vf64 *acc, vf32 v) {
    acc[0] = _mm512_add_pd(acc[0], _mm512_cvtps_pd(_mm512_castps512_ps256(v)));
    acc[1] = _mm512_add_pd(acc[1], _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1))));
}
static inline void vf64_acc(vf64 *acc, vf64 v) { acc[0] = _mm512_add_pd(acc[0], v); }

/* ------------------------------------------------------------------------------------------------ */
#elif defined(FL_SIMD_IS_AVX2)
#include <immintrin.h>
#define FL_SIMD_SUFFIX avx2
typedef __m256 vf32;
typedef __m256d vf64;
#define vf32_W 8
#define vf64_W 4
#define vf32_load _mm256_loadu_ps
#define vf32_store _mm256_storeu_ps
#define vf32_set1 _mm256_set1_ps
#define vf32_add _mm256_add_ps
#define vf32_sub _mm256_sub_ps
#define vf32_mul _mm256_mul_ps
#define vf32_div _mm256_div_ps
#define vf32_fma _mm256_fmadd_ps
#define vf32_max _mm256_max_ps
#define vf64_load _mm256_loadu_pd
#define vf64_store _mm256_storeu_pd
#define vf64_set1 _mm256_set1_pd
#define vf64_add _mm256_add_pd
#define vf64_sub _mm256_sub_pd
#define vf64_mul _mm256_mul_pd
#define vf64_div _mm256_div_pd
#define vf64_fma _mm256_fmadd_pd
#define vf64_max _mm256_max_pd

static inline float vf32_hmax(vf32 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    return _mm_cvtss_f32(_mm_max_ss(m, _mm_shuffle_ps(m, m, 1)));
}
static inline double vf64_hmax(vf64 v) {
    __m128d m = _mm_max_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    return _mm_cvtsd_f64(_mm_max_sd(m, _mm_unpackhi_pd(m, m)));
}
static inline double vf64_hsum(vf64 v) {
    __m128d s = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    return _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
}
static inline vf32 vf32_expn(vf32 x) {
    vf32 t = _mm256_fmadd_ps(x, _mm256_set1_ps((float)FL_LOG2E), _mm256_set1_ps(FL_MAGIC_F32));
    vf32 s = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_castps_si256(t), 23));
    vf32 n = _mm256_sub_ps(t, _mm256_set1_ps(FL_MAGIC_F32));
    vf32 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(FL_LN2_HI_F32), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(FL_LN2_LO_F32), r);
    vf32 p = FL_EXP_F32_POLY(_mm256_fmadd_ps, _mm256_set1_ps, r);
    vf32 y = _mm256_fmadd_ps(_mm256_mul_ps(r, s), p, s);
    return _mm256_andnot_ps(_mm256_cmp_ps(x, _mm256_set1_ps(FL_EXP_LO_F32), _CMP_LT_OQ), y);
}
static inline vf64 vf64_expn(vf64 x) {
    vf64 t = _mm256_fmadd_pd(x, _mm256_set1_pd(FL_LOG2E), _mm256_set1_pd(FL_MAGIC_F64));
    vf64 s = _mm256_castsi256_pd(_mm256_slli_epi64(_mm256_castpd_si256(t), 52));
    vf64 n = _mm256_sub_pd(t, _mm256_set1_pd(FL_MAGIC_F64));
    vf64 r = _mm256_fnmadd_pd(n, _mm256_set1_pd(FL_LN2_HI_F64), x);
    r = _mm256_fnmadd_pd(n, _mm256_set1_pd(FL_LN2_LO_F64), r);
    vf64 p = FL_EXP_F64_POLY(_mm256_fmadd_pd, _mm256_set1_pd, r);
    vf64 y = _mm256_fmadd_pd(_mm256_mul_pd(r, s), p, s);
    return _mm256_andnot_pd(_mm256_cmp_pd(x, _mm256_set1_pd(FL_EXP_LO_F64), _CMP_LT_OQ), y);
}
static inline vf32 vf32_sel_ge(vf32 a, vf32 b, vf32 x, vf32 y) {
    return _mm256_blendv_ps(y, x, _mm256_cmp_ps(a, b, _CMP_GE_OQ));
}
static inline vf32 vf32_sel_gt(vf32 a, vf32 b, vf32 x, vf32 y) {
    return _mm256_blendv_ps(y, x, _mm256_cmp_ps(a, b, _CMP_GT_OQ));
}
static inline unsigned vf32_ge_bits(vf32 a, vf32 b) { return (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(a, b, _CMP_GE_OQ)); }
static inline vf32 vf32_add_ge(vf32 acc, vf32 a, vf32 b, vf32 x) {
    return _mm256_add_ps(acc, _mm256_and_ps(_mm256_cmp_ps(a, b, _CMP_GE_OQ), x));
}
static inline vf64 vf64_sel_ge(vf64 a, vf64 b, vf64 x, vf64 y) {
    return _mm256_blendv_pd(y, x, _mm256_cmp_pd(a, b, _CMP_GE_OQ));
}
static inline vf64 vf64_sel_gt(vf64 a, vf64 b, vf64 x, vf64 y) {
    return _mm256_blendv_pd(y, x, _mm256_cmp_pd(a, b, _CMP_GT_OQ));
}
static inline unsigned vf64_ge_bits(vf64 a, vf64 b) { return (unsigned)_mm256_movemask_pd(_mm256_cmp_pd(a, b, _CMP_GE_OQ)); }
static inline vf64 vf64_add_ge(vf64 acc, vf64 a, vf64 b, vf64 x) {
    return _mm256_add_pd(acc, _mm256_and_pd(_mm256_cmp_pd(a, b, _CMP_GE_OQ), x));
}
static inline vf32 vf32_above(vf32 x, float c, vf32 v, vf32 y) {
    return _mm256_blendv_ps(y, v, _mm256_cmp_ps(x, _mm256_set1_ps(c), _CMP_GT_OQ));
}
static inline vf64 vf64_above(vf64 x, double c, vf64 v, vf64 y) {
    return _mm256_blendv_pd(y, v, _mm256_cmp_pd(x, _mm256_set1_pd(c), _CMP_GT_OQ));
}
static inline void vf32_acc(vf64 *acc, vf32 v) {
    acc[0] = _mm256_add_pd(acc[0], _mm256_cvtps_pd(_mm256_castps256_ps128(v)));
    acc[1] = _mm256_add_pd(acc[1], _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
}
static inline void vf64_acc(vf64 *acc, vf64 v) { acc[0] = _mm256_add_pd(acc[0], v); }

/* ------------------------------------------------------------------------------------------------ */
#elif defined(FL_SIMD_IS_NEON)
#include <arm_neon.h>
#define FL_SIMD_SUFFIX neon
typedef float32x4_t vf32;
typedef float64x2_t vf64;
#define vf32_W 4
#define vf64_W 2
#define vf32_load vld1q_f32
#define vf32_store vst1q_f32
#define vf32_set1 vdupq_n_f32
#define vf32_add vaddq_f32
#define vf32_sub vsubq_f32
#define vf32_mul vmulq_f32
#define vf32_div vdivq_f32
#define vf32_fma(a, b, c) vfmaq_f32((c), (a), (b))
#define vf32_hmax vmaxvq_f32
#define vf64_load vld1q_f64
#define vf64_store vst1q_f64
#define vf64_set1 vdupq_n_f64
#define vf64_add vaddq_f64
#define vf64_sub vsubq_f64
#define vf64_mul vmulq_f64
#define vf64_div vdivq_f64
#define vf64_fma(a, b, c) vfmaq_f64((c), (a), (b))
#define vf64_hmax vmaxvq_f64
#define vf64_hsum vaddvq_f64
/* vmaxq propagates NaN, which the kernels rely on only through exp; either behaviour is fine. */
#define vf32_max vmaxq_f32
#define vf64_max vmaxq_f64

static inline vf32 vf32_expn(vf32 x) {
    vf32 t = vfmaq_f32(vdupq_n_f32(FL_MAGIC_F32), x, vdupq_n_f32((float)FL_LOG2E));
    vf32 s = vreinterpretq_f32_u32(vshlq_n_u32(vreinterpretq_u32_f32(t), 23));
    vf32 n = vsubq_f32(t, vdupq_n_f32(FL_MAGIC_F32));
    vf32 r = vfmsq_f32(x, n, vdupq_n_f32(FL_LN2_HI_F32));
    r = vfmsq_f32(r, n, vdupq_n_f32(FL_LN2_LO_F32));
    vf32 p = FL_EXP_F32_POLY(vf32_fma, vdupq_n_f32, r);
    vf32 y = vfmaq_f32(s, vmulq_f32(r, s), p);
    return vbslq_f32(vcltq_f32(x, vdupq_n_f32(FL_EXP_LO_F32)), vdupq_n_f32(0.0f), y);
}
static inline vf64 vf64_expn(vf64 x) {
    vf64 t = vfmaq_f64(vdupq_n_f64(FL_MAGIC_F64), x, vdupq_n_f64(FL_LOG2E));
    vf64 s = vreinterpretq_f64_u64(vshlq_n_u64(vreinterpretq_u64_f64(t), 52));
    vf64 n = vsubq_f64(t, vdupq_n_f64(FL_MAGIC_F64));
    vf64 r = vfmsq_f64(x, n, vdupq_n_f64(FL_LN2_HI_F64));
    r = vfmsq_f64(r, n, vdupq_n_f64(FL_LN2_LO_F64));
    vf64 p = FL_EXP_F64_POLY(vf64_fma, vdupq_n_f64, r);
    vf64 y = vfmaq_f64(s, vmulq_f64(r, s), p);
    return vbslq_f64(vcltq_f64(x, vdupq_n_f64(FL_EXP_LO_F64)), vdupq_n_f64(0.0), y);
}
static inline vf32 vf32_sel_ge(vf32 a, vf32 b, vf32 x, vf32 y) { return vbslq_f32(vcgeq_f32(a, b), x, y); }
static inline vf32 vf32_sel_gt(vf32 a, vf32 b, vf32 x, vf32 y) { return vbslq_f32(vcgtq_f32(a, b), x, y); }
static inline vf32 vf32_add_ge(vf32 acc, vf32 a, vf32 b, vf32 x) {
    return vaddq_f32(acc, vreinterpretq_f32_u32(vandq_u32(vcgeq_f32(a, b), vreinterpretq_u32_f32(x))));
}
static inline unsigned vf32_ge_bits(vf32 a, vf32 b) {
    const uint32_t w[4] = {1, 2, 4, 8};
    return vaddvq_u32(vandq_u32(vcgeq_f32(a, b), vld1q_u32(w)));
}
static inline vf64 vf64_sel_ge(vf64 a, vf64 b, vf64 x, vf64 y) { return vbslq_f64(vcgeq_f64(a, b), x, y); }
static inline vf64 vf64_sel_gt(vf64 a, vf64 b, vf64 x, vf64 y) { return vbslq_f64(vcgtq_f64(a, b), x, y); }
static inline vf64 vf64_add_ge(vf64 acc, vf64 a, vf64 b, vf64 x) {
    return vaddq_f64(acc, vreinterpretq_f64_u64(vandq_u64(vcgeq_f64(a, b), vreinterpretq_u64_f64(x))));
}
static inline unsigned vf64_ge_bits(vf64 a, vf64 b) {
    const uint64_t w[2] = {1, 2};
    return (unsigned)vaddvq_u64(vandq_u64(vcgeq_f64(a, b), vld1q_u64(w)));
}
static inline vf32 vf32_above(vf32 x, float c, vf32 v, vf32 y) { return vbslq_f32(vcgtq_f32(x, vdupq_n_f32(c)), v, y); }
static inline vf64 vf64_above(vf64 x, double c, vf64 v, vf64 y) { return vbslq_f64(vcgtq_f64(x, vdupq_n_f64(c)), v, y); }
static inline void vf32_acc(vf64 *acc, vf32 v) {
    acc[0] = vaddq_f64(acc[0], vcvt_f64_f32(vget_low_f32(v)));
    acc[1] = vaddq_f64(acc[1], vcvt_high_f64_f32(v));
}
static inline void vf64_acc(vf64 *acc, vf64 v) { acc[0] = vaddq_f64(acc[0], v); }

/* ------------------------------------------------------------------------------------------------ */
#else /* portable scalar: the specification */
#define FL_SIMD_SUFFIX scalar
typedef float vf32;
typedef double vf64;
#define vf32_W 1
#define vf64_W 1
static inline vf32 vf32_load(const float *p) { return *p; }
static inline void vf32_store(float *p, vf32 v) { *p = v; }
static inline vf32 vf32_set1(float a) { return a; }
static inline vf32 vf32_add(vf32 a, vf32 b) { return a + b; }
static inline vf32 vf32_sub(vf32 a, vf32 b) { return a - b; }
static inline vf32 vf32_mul(vf32 a, vf32 b) { return a * b; }
static inline vf32 vf32_div(vf32 a, vf32 b) { return a / b; }
/* a*b + c in two roundings: baseline x86-64 has no FMA unit and fmaf() would be a slow libm call. */
static inline vf32 vf32_fma(vf32 a, vf32 b, vf32 c) { return a * b + c; }
static inline vf32 vf32_max(vf32 a, vf32 b) { return b > a ? b : a; }
static inline float vf32_hmax(vf32 a) { return a; }
static inline vf64 vf64_load(const double *p) { return *p; }
static inline void vf64_store(double *p, vf64 v) { *p = v; }
static inline vf64 vf64_set1(double a) { return a; }
static inline vf64 vf64_add(vf64 a, vf64 b) { return a + b; }
static inline vf64 vf64_sub(vf64 a, vf64 b) { return a - b; }
static inline vf64 vf64_mul(vf64 a, vf64 b) { return a * b; }
static inline vf64 vf64_div(vf64 a, vf64 b) { return a / b; }
static inline vf64 vf64_fma(vf64 a, vf64 b, vf64 c) { return a * b + c; }
static inline vf64 vf64_max(vf64 a, vf64 b) { return b > a ? b : a; }
static inline double vf64_hmax(vf64 a) { return a; }
static inline double vf64_hsum(vf64 a) { return a; }

static inline vf32 vf32_expn(vf32 x) {
    if (x < FL_EXP_LO_F32) return 0.0f;
    float t = x * (float)FL_LOG2E + FL_MAGIC_F32, n = t - FL_MAGIC_F32;
    float r = x - n * FL_LN2_HI_F32; /* exact: ln2_hi has 9 significant bits */
    r = r - n * FL_LN2_LO_F32;
    uint32_t bits;
    memcpy(&bits, &t, sizeof bits);
    bits <<= 23;
    float s;
    memcpy(&s, &bits, sizeof s);
    return (r * s) * FL_EXP_F32_POLY(vf32_fma, vf32_set1, r) + s; /* NaN stays NaN */
}
static inline vf64 vf64_expn(vf64 x) {
    if (x < FL_EXP_LO_F64) return 0.0;
    double t = x * FL_LOG2E + FL_MAGIC_F64, n = t - FL_MAGIC_F64;
    double r = x - n * FL_LN2_HI_F64; /* exact: ln2_hi has 32 significant bits */
    r = r - n * FL_LN2_LO_F64;
    uint64_t bits;
    memcpy(&bits, &t, sizeof bits);
    bits <<= 52;
    double s;
    memcpy(&s, &bits, sizeof s);
    return (r * s) * FL_EXP_F64_POLY(vf64_fma, vf64_set1, r) + s;
}
static inline vf32 vf32_sel_ge(vf32 a, vf32 b, vf32 x, vf32 y) { return a >= b ? x : y; }
static inline vf32 vf32_sel_gt(vf32 a, vf32 b, vf32 x, vf32 y) { return a > b ? x : y; }
static inline vf32 vf32_add_ge(vf32 acc, vf32 a, vf32 b, vf32 x) { return a >= b ? acc + x : acc; }
static inline unsigned vf32_ge_bits(vf32 a, vf32 b) { return a >= b; }
static inline vf64 vf64_sel_ge(vf64 a, vf64 b, vf64 x, vf64 y) { return a >= b ? x : y; }
static inline vf64 vf64_sel_gt(vf64 a, vf64 b, vf64 x, vf64 y) { return a > b ? x : y; }
static inline vf64 vf64_add_ge(vf64 acc, vf64 a, vf64 b, vf64 x) { return a >= b ? acc + x : acc; }
static inline unsigned vf64_ge_bits(vf64 a, vf64 b) { return a >= b; }
static inline vf32 vf32_above(vf32 x, float c, vf32 v, vf32 y) { return x > c ? v : y; }
static inline vf64 vf64_above(vf64 x, double c, vf64 v, vf64 y) { return x > c ? v : y; }
static inline void vf32_acc(vf64 *acc, vf32 v) { acc[0] += (double)v; }
static inline void vf64_acc(vf64 *acc, vf64 v) { acc[0] += v; }
#endif

/* exp on the whole line, and tanh: the same expressions on every ISA. */
static inline vf32 vf32_exp(vf32 x) { return vf32_above(x, FL_EXP_HI_F32, vf32_set1(INFINITY), vf32_expn(x)); }
static inline vf64 vf64_exp(vf64 x) { return vf64_above(x, FL_EXP_HI_F64, vf64_set1(INFINITY), vf64_expn(x)); }

/* float32 tanh with a relative error of a few ulp everywhere (softcap scales it by cap / T, so the
 * absolute error of 1 - 2 / (e^2x + 1) near 0 would be amplified): for |x| > 1/4,
 * sign(x) (1 - e) / (1 + e) with e = e^-2|x| (1 - e >= 0.39: the exp's error grows
 * at most 1.6x in the difference);
 * below, the odd Taylor series to x^9 (truncation < 9e-9 relative). NaN stays NaN; +-inf gives +-1. */
static inline vf32 vf32_tanh(vf32 x) {
    const vf32 one = vf32_set1(1.0f), ax = vf32_max(x, vf32_sub(vf32_set1(0.0f), x));
    const vf32 e = vf32_expn(vf32_mul(vf32_set1(-2.0f), ax));
    const vf32 big = vf32_div(vf32_sub(one, e), vf32_add(one, e));
    const vf32 x2 = vf32_mul(x, x);
    vf32 poly = vf32_fma(x2, vf32_set1(62.0f / 2835.0f), vf32_set1(-17.0f / 315.0f));
    poly = vf32_fma(vf32_fma(poly, x2, vf32_set1(2.0f / 15.0f)), x2, vf32_set1(-1.0f / 3.0f));
    const vf32 small = vf32_fma(vf32_mul(x, x2), poly, x);
    return vf32_above(ax, 0.25f, vf32_above(x, 0.0f, big, vf32_sub(vf32_set1(0.0f), big)), small);
}
static inline vf64 vf64_tanh(vf64 x) {
    vf64 e = vf64_exp(vf64_add(x, x));
    return vf64_sub(vf64_set1(1.0), vf64_div(vf64_set1(2.0), vf64_add(e, vf64_set1(1.0))));
}


#endif
