/* dispatch.h: internal. The per-SIMD-level kernel tables and the active one. */
#ifndef FASTLM_DISPATCH_H
#define FASTLM_DISPATCH_H

#include "fastlm.h"

/* Row kernels of the softmax family (softmax_simd.c); arguments already checked by softmax.c.
 * xent: class_weight_sum = sum_c w_c (cols when unweighted), grad_scale = s of fastlm.h. */
typedef struct {
    int (*logsumexp_f32)(const float *x, const fl_rows *r, double inv_t, double *out);
    int (*logsumexp_f64)(const double *x, const fl_rows *r, double inv_t, double *out);
    int (*softmax_f32)(const float *x, float *y, const fl_rows *r, double inv_t, int log);
    int (*softmax_f64)(const double *x, double *y, const fl_rows *r, double inv_t, int log);
    int (*xent_f32)(const float *x, float *g, const fl_rows *r, const fl_xent *p, double class_weight_sum,
                    double grad_scale);
    int (*xent_f64)(const double *x, double *g, const fl_rows *r, const fl_xent *p, double class_weight_sum,
                    double grad_scale);
} fl_softmax_kernels;

extern const fl_softmax_kernels fl_softmax_kernels_scalar;
extern const fl_softmax_kernels fl_softmax_kernels_avx2;
extern const fl_softmax_kernels fl_softmax_kernels_avx512;
extern const fl_softmax_kernels fl_softmax_kernels_neon;

/* The kernels of the active level (chosen once at load, or by fl_simd_select). */
const fl_softmax_kernels *fl_softmax_active(void);

/* Rows run in parallel when threads are asked for and there is enough work to pay for them. */
#define FL_PARALLEL_MIN_ELEMS 32768
static inline int fl_threads_for(const fl_rows *r) {
    return (r->num_threads > 1 && r->rows > 1 && r->rows * r->cols >= FL_PARALLEL_MIN_ELEMS) ? r->num_threads : 1;
}

#endif
