/* decode_beam.c: one beam-search step (csrc/README.md, "Decoding: filters, sampler, beam step"): the k
 * best (beam, token) pairs by score[b] + log_softmax(x[b])[v]. Part of the decode.c unit (one per
 * dtype). */
#include "decode.h"

typedef struct {
    double s;
    int64_t beam, token;
} candidate;

/* score desc, then beam asc, then token asc */
static int candidate_cmp(const void *pa, const void *pb) {
    const candidate *a = pa, *b = pb;
    if (a->s != b->s) return a->s > b->s ? -1 : 1;
    if (a->beam != b->beam) return a->beam < b->beam ? -1 : 1;
    return (a->token > b->token) - (a->token < b->token);
}

int FL_PICK(fl_beam_step_f32, fl_beam_step_f64)(const FL_T *x, const fl_rows *r, const double *score, int64_t k,
                                                int64_t *out_beam, int64_t *out_token, double *out_score,
                                                fl_decode *d) {
    if (!fl_rows_ok(r, 0) || r->cols > INT32_MAX || !score || !d || k < 0 || k > r->rows * r->cols) return FL_ERR_ARG;
    if (k == 0) return FL_OK;
    const int64_t per_row = k < r->cols ? k : r->cols;
    double *lse = malloc(sizeof(double) * (size_t)r->rows);
    candidate *cand = malloc(sizeof(candidate) * (size_t)r->rows * (size_t)per_row);
    scratch s;
    int st = !lse || !cand || !scratch_get(&s, r->cols) ? FL_ERR_NOMEM : FL_OK;
    const int have_scratch = st == FL_OK;
    if (st == FL_OK) st = check_rows(x, r, lse, d);
    if (st == FL_OK) SOFTMAX_KERNELS->logsumexp(x, r, 1.0, lse);
    int64_t m = 0;
    for (int64_t b = 0; st == FL_OK && b < r->rows; b++) {
        /* the row's per_row best tokens (exactly: ties to the lower index), scored in float64 */
        const FL_T *xb = x + b * r->x_stride;
        const cut c = top_count(xb, r->cols, per_row, &s);
        for (int64_t j = 0, taken = 0; j < r->cols && taken < per_row; j++)
            if (cut_keeps(&c, xb[j], j)) {
                const candidate e = {score[b] + ((double)xb[j] - lse[b]), b, j};
                cand[m++] = e;
                taken++;
            }
    }
    if (st == FL_OK) {
        qsort(cand, (size_t)m, sizeof *cand, candidate_cmp);
        for (int64_t q = 0; q < k; q++) {
            out_beam[q] = cand[q].beam;
            out_token[q] = cand[q].token;
            out_score[q] = cand[q].s;
        }
    }
    if (have_scratch) scratch_put(&s);
    free(lse);
    free(cand);
    return st;
}
