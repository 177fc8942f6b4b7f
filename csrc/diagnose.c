/* diagnose.c: per-row statistics for fastlm.diagnostics (csrc/README.md, "Diagnostics"), for one dtype
 * (compiled once per dtype: dtype.h). One read of each row: how many entries are NaN, +inf and -inf, and
 * the min, max and float64 sum of the finite ones. */
#include <math.h>
#include <stddef.h>
#include "dtype.h"

int FL_PICK(fl_row_stats_f32, fl_row_stats_f64)(const FL_T *x, const fl_rows *r, fl_row_stats *out) {
    if (!fl_rows_ok(r, 0) || !out) return FL_ERR_ARG;
    for (int64_t i = 0; i < r->rows; i++) {
        const FL_T *row = x + i * r->x_stride;
        int64_t nan = 0, pos = 0, neg = 0;
        double lo = INFINITY, hi = -INFINITY, sum = 0;
        for (int64_t j = 0; j < r->cols; j++) {
            const double v = (double)row[j];
            if (isfinite(v)) {
                lo = v < lo ? v : lo;
                hi = v > hi ? v : hi;
                sum += v;
            } else if (v != v) {
                nan++;
            } else if (v > 0) {
                pos++;
            } else {
                neg++;
            }
        }
        const fl_row_stats s = {nan, pos, neg, lo, hi, sum};
        out[i] = s;
    }
    return FL_OK;
}
