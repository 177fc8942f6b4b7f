/* softmax.c: the entry points of the softmax family in fastlm.h, for one dtype (compiled once per dtype:
 * dtype.h). Checks arguments, validates targets and reduces over rows (serially, in row order, float64)
 * around the active SIMD level's row kernels (softmax_simd.c). */
#include <math.h>
#include <stddef.h>
#include "dtype.h"

static int inv_t_ok(double inv_t) { return inv_t > 0 && isfinite(inv_t); }

/* Options, targets and the reduction's denominator, before anything is written.
 * Sets *class_weight_sum = sum_c w_c and *scale = the gradient's factor. */
static int xent_prepare(const fl_rows *r, int has_grad, fl_xent *p, double *class_weight_sum, double *scale) {
    if (!fl_rows_ok(r, has_grad) || !p || !p->targets || !p->row_loss) return FL_ERR_ARG;
    if (!(p->label_smoothing >= 0 && p->label_smoothing <= 1) || !(p->z_loss >= 0 && isfinite(p->z_loss)) ||
        !(p->softcap >= 0 && isfinite(p->softcap)) || !inv_t_ok(p->inv_temperature))
        return FL_ERR_ARG;
    if (p->reduction != FL_REDUCE_NONE && p->reduction != FL_REDUCE_SUM && p->reduction != FL_REDUCE_MEAN)
        return FL_ERR_ARG;
    if ((p->weight == NULL) != (p->weight_t == NULL)) return FL_ERR_ARG;
    double wsum = 0;
    for (int64_t i = 0; i < r->rows; i++) {
        int64_t y = p->targets[i];
        if (y == p->ignore_index) continue;
        if (y < 0 || y >= r->cols) {
            p->bad_index = i;
            return FL_ERR_TARGET;
        }
        wsum += p->weight ? p->weight[y] : 1.0;
    }
    double cws = (double)r->cols;
    if (p->weight) {
        cws = 0;
        for (int64_t c = 0; c < r->cols; c++) cws += p->weight[c];
    }
    p->weight_sum = wsum;
    p->bad_index = -1;
    *class_weight_sum = cws;
    /* a mean over a zero weight sum: 1/0 times zero weights, NaN where not ignored (torch, fastlm.h) */
    *scale = p->reduction == FL_REDUCE_MEAN ? (wsum != 0 ? 1.0 / wsum : NAN) : 1.0;
    return FL_OK;
}

static void xent_reduce(const fl_rows *r, fl_xent *p) {
    double total = 0;
    for (int64_t i = 0; i < r->rows; i++) total += p->row_loss[i];
    /* mean over a zero weight sum is NaN, whatever the numerator (torch divides 0 or more by 0) */
    p->loss = p->reduction != FL_REDUCE_MEAN ? total : p->weight_sum != 0 ? total / p->weight_sum : NAN;
}

/* The entry points: check, then run the active level's row kernels. */
int FL_PICK(fl_logsumexp_f32, fl_logsumexp_f64)(const FL_T *x, const fl_rows *r, double inv_t, double *out) {
    if (!fl_rows_ok(r, 0) || !inv_t_ok(inv_t)) return FL_ERR_ARG;
    return SOFTMAX_KERNELS->logsumexp(x, r, inv_t, out);
}

int FL_PICK(fl_softmax_f32, fl_softmax_f64)(const FL_T *x, FL_T *y, const fl_rows *r, double inv_t, int log) {
    if (!fl_rows_ok(r, 1) || !inv_t_ok(inv_t)) return FL_ERR_ARG;
    return SOFTMAX_KERNELS->softmax(x, y, r, inv_t, log);
}

int FL_PICK(fl_xent_f32, fl_xent_f64)(const FL_T *logits, FL_T *grad, const fl_rows *r, fl_xent *p) {
    double cws, scale;
    int st = xent_prepare(r, grad != NULL, p, &cws, &scale);
    if (st != FL_OK) return st;
    st = SOFTMAX_KERNELS->xent(logits, grad, r, p, cws, scale);
    xent_reduce(r, p);
    return st;
}

int FL_PICK(fl_entropy_f32, fl_entropy_f64)(const FL_T *x, const fl_rows *r, double *out) {
    if (!fl_rows_ok(r, 0) || !out) return FL_ERR_ARG;
    return SOFTMAX_KERNELS->entropy(x, r, out);
}

int FL_PICK(fl_kl_f32, fl_kl_f64)(const FL_T *p, const FL_T *q, const fl_rows *r, double *out) {
    if (!fl_rows_ok(r, 1) || !out) return FL_ERR_ARG;
    return SOFTMAX_KERNELS->kl(p, q, r, out);
}

int FL_PICK(fl_rowmax_f32, fl_rowmax_f64)(const FL_T *x, const fl_rows *r, double *out) {
    if (!fl_rows_ok(r, 0) || !out) return FL_ERR_ARG;
    for (int64_t i = 0; i < r->rows; i++) out[i] = (double)SIMD->row_max(x + i * r->x_stride, r->cols);
    return FL_OK;
}

int FL_PICK(fl_temperature_stats_f32, fl_temperature_stats_f64)(const FL_T *x, const fl_rows *r, const int64_t *y,
                                                                const double *xmax, double beta, double *nll,
                                                                double *g, double *v) {
    if (!fl_rows_ok(r, 0) || !y || !xmax || !nll || !g || !v || !(beta > 0 && isfinite(beta))) return FL_ERR_ARG;
    for (int64_t i = 0; i < r->rows; i++)
        if (y[i] < 0 || y[i] >= r->cols) return FL_ERR_ARG;
    return SOFTMAX_KERNELS->temperature_stats(x, r, y, xmax, beta, nll, g, v);
}

#if FL_DTYPE == 32
/* Cross-entropy of bfloat16 logits: each row is widened to float32 in per-thread scratch, run through the
 * float32 row kernel (the gradient in place), and the gradient row rounded back to bfloat16. weight_t
 * holds the class weights in float32. */
int fl_xent_bf16(const uint16_t *logits, uint16_t *grad, const fl_rows *r, fl_xent *p) {
    double cws, scale;
    int st = xent_prepare(r, grad != NULL, p, &cws, &scale), fail = 0;
    if (st != FL_OK) return st;
    const int nt = fl_threads_for(r);
    (void)nt;
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        const size_t bytes = sizeof(float) * (size_t)(r->cols > 0 ? r->cols : 1);
        float *row = fl_scratch(bytes);
        if (!row) {
#pragma omp atomic write
            fail = 1;
        }
#pragma omp for schedule(static)
        for (int64_t i = 0; i < r->rows; i++) {
            if (!row) continue;
            const uint16_t *xi = logits + i * r->x_stride;
            SOFTMAX_KERNELS->bf16_to_f32(xi, row, r->cols);
            fl_rows one = {1, r->cols, r->cols, r->cols, 1};
            fl_xent pi = *p;
            pi.targets = p->targets + i;
            pi.row_loss = p->row_loss + i;
            SOFTMAX_KERNELS->xent(row, grad ? row : NULL, &one, &pi, cws, scale);
            if (grad) SOFTMAX_KERNELS->f32_to_bf16(row, grad + i * r->y_stride, r->cols);
        }
        if (row) fl_scratch_release(row, bytes);
    }
    if (fail) return FL_ERR_NOMEM;
    xent_reduce(r, p);
    return FL_OK;
}
#endif
