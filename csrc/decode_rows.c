/* decode_rows.c: the row driver of decoding: per-thread scratch, the row check, rows run in parallel.
 * Part of the decode.c unit (one per dtype). */
#include "decode.h"

static int scratch_get(scratch *s, int64_t n) {
    const size_t each = (size_t)(n > 0 ? n : 1) + 16, blocks = (size_t)(n / FL_BMAX_BLOCK) + 1;
    s->bytes = each * (sizeof(item) + 4 * sizeof(FL_T) + 3 * sizeof(int32_t) + sizeof(uint16_t)) +
               blocks * (sizeof(FL_T) + sizeof(double) + sizeof(int32_t));
    char *b = s->base = fl_scratch(s->bytes);
    if (!b) return 0;
    s->items = (item *)b;
    s->bup = (double *)(b + each * sizeof(item));
    s->p = (FL_T *)(s->bup + blocks);
    s->v = s->p + each;
    s->vals = s->v + each;
    s->wts = s->vals + each;
    s->bmax = s->wts + each;
    s->idx = (int32_t *)(s->bmax + blocks);
    s->pos = s->idx + each;
    s->bfirst = s->pos + 2 * each;
    s->bk = (uint16_t *)(s->bfirst + blocks);
    return 1;
}
static void scratch_put(scratch *s) { fl_scratch_release(s->base, s->bytes); }

/* Every row checked before anything is written, by one read: NaN -> FL_ERR_NAN, no value above -inf
 * (or no value) -> FL_ERR_EMPTY, with the row in d->bad_row. xmax[i]: the row's max (+inf: the row holds
 * +inf). */
static int check_rows(const FL_T *x, const fl_rows *r, double *xmax, fl_decode *d) {
    for (int64_t i = 0; i < r->rows; i++) {
        int nan;
        xmax[i] = (double)SIMD->row_max_nan(x + i * r->x_stride, r->cols, &nan);
        if (nan || xmax[i] == -INFINITY) {
            d->bad_row = i;
            return nan ? FL_ERR_NAN : FL_ERR_EMPTY;
        }
    }
    return FL_OK;
}

typedef void (*row_fn)(int64_t i, const FL_T *x, double xmax, const scratch *s, void *ctx);

/* Checks every row (check_rows), then runs row(i, row i, its max, scratch, ctx) for every row, in
 * parallel, each thread with its own scratch. FL_ERR_NOMEM, with no row run, if any thread's scratch
 * could not be had. */
static int run_rows(const FL_T *x, const fl_rows *r, fl_decode *d, row_fn row, void *ctx) {
    if (r->rows == 0) return FL_OK;
    double *xmax = malloc(sizeof(double) * (size_t)r->rows);
    if (!xmax) return FL_ERR_NOMEM;
    int st = check_rows(x, r, xmax, d), fail = 0;
    const int nt = fl_threads_for(r);
    (void)nt;
#pragma omp parallel num_threads(nt) if (st == FL_OK && nt > 1)
    {
        scratch mine;
        const int ok = st == FL_OK && scratch_get(&mine, r->cols);
        if (st == FL_OK && !ok) {
#pragma omp atomic write
            fail = 1;
        }
#pragma omp barrier
        if (ok && !fail) {
#pragma omp for schedule(static)
            for (int64_t i = 0; i < r->rows; i++) row(i, x + i * r->x_stride, xmax[i], &mine, ctx);
        }
        if (ok) scratch_put(&mine);
    }
    free(xmax);
    return st != FL_OK ? st : fail ? FL_ERR_NOMEM : FL_OK;
}
