/* dtype.h: internal. The element type of a template translation unit.
 *
 * The kernel files that work on either float32 or float64 (softmax.c, decode.c, softmax_simd.c,
 * select_simd.c) are written once for an element type FL_T and compiled once per dtype: CMake defines
 * FL_DTYPE=32 or FL_DTYPE=64. Inside such a unit every function is static and has a plain name (the name
 * it is called by, for grep); the unit exports only the entry points of fastlm.h, spelled out for both
 * dtypes as FL_PICK(fl_x_f32, fl_x_f64), and the SIMD units one table of kernels (FL_LEVEL_TABLE).
 * FL_PICK(a, b) is a in the float32 unit and b in the float64 one.
 */
#ifndef FASTLM_DTYPE_H
#define FASTLM_DTYPE_H

#include <float.h>
#include <stdint.h>
#include "dispatch.h"

#if FL_DTYPE == 32
#define FL_PICK(f32, f64) f32
#elif FL_DTYPE == 64
#define FL_PICK(f32, f64) f64
#else
#error "compile with FL_DTYPE=32 or FL_DTYPE=64"
#endif

#define FL_T FL_PICK(float, double)
#define FL_U FL_PICK(uint32_t, uint64_t) /* the unsigned integer of FL_T's width (order-preserving keys) */
#define FL_TINY FL_PICK(FLT_MIN, DBL_MIN) /* the smallest normal */
#define FL_MAX FL_PICK(FLT_MAX, DBL_MAX)

/* The vector layer (vmath.h) for FL_T: vector type, width, and VF(op) = vf32_op or vf64_op. */
#define FL_V FL_PICK(vf32, vf64)
#define FL_W FL_PICK(vf32_W, vf64_W)
#define VF(op) FL_PICK(vf32_##op, vf64_##op)

/* Vector helpers of the SIMD units (after vmath.h), for FL_T:
 *   load_part(p, n, fill): p[0..n) as a vector, lanes from n on set to fill (a whole load when n >= W);
 *   vector_max(x, n): max of x[0..n) (-inf when n = 0; a NaN may be skipped);
 *   exp_shifted(v, m, it, scaled): expn((v - m) it), the multiply only when scaled (a constant at every
 *   call site, so that the loops are compiled for both). */
#ifdef FASTLM_VMATH_H
static inline FL_V load_part(const FL_T *p, int64_t n, FL_T fill) {
    if (n >= FL_W) return VF(load)(p);
    FL_T b[FL_W];
    for (int64_t i = 0; i < FL_W; i++) b[i] = i < n ? p[i] : fill;
    return VF(load)(b);
}
static inline FL_T vector_max(const FL_T *x, int64_t n) {
    FL_V a = VF(set1)(-INFINITY), b = a;
    int64_t j = 0;
    for (; j + 2 * FL_W <= n; j += 2 * FL_W) {
        a = VF(max)(a, VF(load)(x + j));
        b = VF(max)(b, VF(load)(x + j + FL_W));
    }
    for (; j < n; j += FL_W) a = VF(max)(a, load_part(x + j, n - j, -INFINITY));
    return VF(hmax)(VF(max)(a, b));
}
static inline FL_V exp_shifted(FL_V v, FL_V m, FL_V it, int scaled) {
    const FL_V d = VF(sub)(v, m);
    return VF(expn)(scaled ? VF(mul)(d, it) : d);
}
#endif

/* The kernel tables of the active SIMD level for FL_T (dispatch.h) */
#define SOFTMAX_KERNELS FL_PICK(fl_active()->softmax_f32, fl_active()->softmax_f64)
#define SIMD FL_PICK(fl_active()->select_f32, fl_active()->select_f64)
/* The name of a SIMD unit's exported table: fl_<family>_f32_<level>, e.g. fl_select_f32_avx2 (FL_CAT and
 * FL_SIMD_SUFFIX come from vmath.h). */
#define FL_LEVEL_TABLE(family) FL_CAT(FL_CAT(fl_##family, FL_PICK(_f32_, _f64_)), FL_SIMD_SUFFIX)
typedef FL_PICK(fl_softmax_kernels_f32, fl_softmax_kernels_f64) fl_softmax_kernels_T;
typedef FL_PICK(fl_select_kernels_f32, fl_select_kernels_f64) fl_select_kernels_T;

#endif
