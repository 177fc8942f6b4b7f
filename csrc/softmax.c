/* softmax.c: public entry points of the softmax family. Checks arguments, validates targets and
 * reduces over rows (serially, in row order, float64) around the per-SIMD-level row kernels. */
#include <math.h>
#include <stddef.h>
#include "dispatch.h"

static int inv_t_ok(double inv_t) { return inv_t > 0 && isfinite(inv_t); }

/* The entry points of one dtype: check, then run the active level's row kernels. */
#define FL_SOFTMAX_ENTRIES(SFX, T)                                                                     \
    int fl_logsumexp_##SFX(const T *x, const fl_rows *r, double inv_t, double *out) {                \
        if (!fl_rows_ok(r, 0) || !inv_t_ok(inv_t)) return FL_ERR_ARG;                                    \
        return fl_softmax_active()->logsumexp_##SFX(x, r, inv_t, out);                                \
    }                                                                                                 \
    int fl_softmax_##SFX(const T *x, T *y, const fl_rows *r, double inv_t, int log) {                \
        if (!fl_rows_ok(r, 1) || !inv_t_ok(inv_t)) return FL_ERR_ARG;                                    \
        return fl_softmax_active()->softmax_##SFX(x, y, r, inv_t, log);                               \
    }                                                                                                 \
    int fl_xent_##SFX(const T *logits, T *grad, const fl_rows *r, fl_xent *p) {                      \
        double cws, scale;                                                                            \
        int st = xent_prepare(r, grad != NULL, p, &cws, &scale);                                      \
        if (st != FL_OK) return st;                                                                   \
        st = fl_softmax_active()->xent_##SFX(logits, grad, r, p, cws, scale);                         \
        xent_reduce(r, p);                                                                            \
        return st;                                                                                    \
    }                                                                                                 \
    int fl_entropy_##SFX(const T *x, const fl_rows *r, double *out) {                                \
        if (!fl_rows_ok(r, 0) || !out) return FL_ERR_ARG;                                             \
        return fl_softmax_active()->entropy_##SFX(x, r, out);                                         \
    }                                                                                                 \
    int fl_kl_##SFX(const T *p, const T *q, const fl_rows *r, double *out) {                         \
        if (!fl_rows_ok(r, 1) || !out) return FL_ERR_ARG;                                             \
        return fl_softmax_active()->kl_##SFX(p, q, r, out);                                           \
    }                                                                                                 \
    int fl_rowmax_##SFX(const T *x, const fl_rows *r, double *out) {                                 \
        if (!fl_rows_ok(r, 0) || !out) return FL_ERR_ARG;                                             \
        for (int64_t i = 0; i < r->rows; i++)                                                         \
            out[i] = (double)fl_select_active()->max_##SFX(x + i * r->x_stride, r->cols);             \
        return FL_OK;                                                                                 \
    }                                                                                                 \
    int fl_temperature_stats_##SFX(const T *x, const fl_rows *r, const int64_t *y, const double *xmax,  \
                                   double beta, double *nll, double *g, double *v) {                  \
        if (!fl_rows_ok(r, 0) || !y || !xmax || !nll || !g || !v || !(beta > 0 && isfinite(beta)))    \
            return FL_ERR_ARG;                                                                        \
        for (int64_t i = 0; i < r->rows; i++)                                                         \
            if (y[i] < 0 || y[i] >= r->cols) return FL_ERR_ARG;                                       \
        return fl_softmax_active()->tstats_##SFX(x, r, y, xmax, beta, nll, g, v);                     \
    }

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
    *scale = p->reduction == FL_REDUCE_MEAN ? (wsum != 0 ? 1.0 / wsum : 0.0) : 1.0;
    return FL_OK;
}

static void xent_reduce(const fl_rows *r, fl_xent *p) {
    double total = 0;
    for (int64_t i = 0; i < r->rows; i++) total += p->row_loss[i];
    /* mean over a zero weight sum is NaN, whatever the numerator (torch divides 0 or more by 0) */
    p->loss = p->reduction != FL_REDUCE_MEAN ? total : p->weight_sum != 0 ? total / p->weight_sum : NAN;
}

FL_SOFTMAX_ENTRIES(f32, float)
FL_SOFTMAX_ENTRIES(f64, double)
