/* fastlm C API: fused kernels for language-model probability math.
 *
 * Conventions
 *   - Raw pointers, 64-bit sizes and strides (strides in elements, not bytes).
 *   - A matrix is `rows` x `cols` with the class axis (cols) contiguous and rows `stride` elements apart.
 *   - The entry points of the softmax family and of decoding return an fl_status (the n-gram functions
 *     return a count, or nothing) and check their arguments, and every row of a decoding call, before
 *     anything is written.
 *   - The softmax family allocates nothing. Decoding allocates per call a few arrays of one entry per
 *     row, and per-thread scratch (kept between calls, dispatch.h); n-gram counting a count array for
 *     small key spaces. Never inside the loops over elements; FL_ERR_NOMEM when it fails. No Python.
 *   - The algorithms, their precision and their bench figures: csrc/README.md.
 *   - Results are bitwise identical for any num_threads: rows are independent, reductions over rows
 *     are serial in row order, in float64.
 *
 * Precision (float32 path; the float64 path is about 1e-15 relative throughout)
 *   - exp: range reduction to [-ln2/2, ln2/2] and a polynomial (degree 4 minimax for float32, degree 12
 *     for float64), <= 2 ulp on [-87, 0]; results below e^-87 flush to 0 (absolute error < 2e-38).
 *   - row sums of exp: groups of four vectors summed in the input dtype, the groups in float64;
 *     log(sum) uses libm once per row. Temperature is applied after the row max is subtracted.
 *   - softmax / log-softmax elements: relative error about 1e-6 (float32; absolute for log-softmax).
 *   - softcap tanh: relative error of a few ulp (float32: a series below |x| = cap / 4; vmath.h).
 */
#ifndef FASTLM_H
#define FASTLM_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    FL_OK = 0,
    FL_ERR_ARG = 1,     /* a size, stride or option is invalid */
    FL_ERR_TARGET = 2,  /* a target is outside [0, cols) and is not ignore_index; see fl_xent.bad_index */
    FL_ERR_NAN = 3,     /* a row holds NaN (decoding); see fl_decode.bad_row */
    FL_ERR_EMPTY = 4,   /* a row has no logit above -inf (decoding); see fl_decode.bad_row */
    FL_ERR_NOMEM = 5,   /* scratch memory could not be allocated */
} fl_status;

/* SIMD levels, in increasing order on x86-64; NEON is arm64's baseline. */
typedef enum { FL_SIMD_SCALAR = 0, FL_SIMD_AVX2 = 1, FL_SIMD_AVX512 = 2, FL_SIMD_NEON = 3 } fl_simd;

const char *fl_simd_name(int level);
int fl_simd_compiled(int level);   /* 1 if this build has kernels for `level` */
int fl_simd_supported(int level);  /* 1 if compiled and this CPU (and OS) can run them */
int fl_simd_active(void);
int fl_simd_select(int level);     /* use `level`; FL_ERR_ARG if unsupported */
int fl_openmp_enabled(void);
int fl_max_threads(void);

/* A row-major matrix view: rows x cols, class axis contiguous. */
typedef struct {
    int64_t rows, cols;
    int64_t x_stride;   /* elements between consecutive input rows (>= cols unless rows <= 1) */
    int64_t y_stride;   /* elements between consecutive output rows, where there is a matrix output */
    int num_threads;    /* <= 1: serial */
} fl_rows;

/* logsumexp of z = x / T per row, into out[rows] (float64). inv_temperature = 1/T > 0, finite.
 * An all -inf row gives -inf, a row holding +inf gives +inf, NaN gives NaN, cols == 0 gives -inf. */
int fl_logsumexp_f32(const float *x, const fl_rows *r, double inv_temperature, double *out);
int fl_logsumexp_f64(const double *x, const fl_rows *r, double inv_temperature, double *out);

/* y = softmax(x / T) or log_softmax(x / T) per row. y may equal x (in place).
 * Rows with NaN or +inf, and all -inf rows, give NaN rows (as torch). */
int fl_softmax_f32(const float *x, float *y, const fl_rows *r, double inv_temperature, int log);
int fl_softmax_f64(const double *x, double *y, const fl_rows *r, double inv_temperature, int log);

/* Entropy H(softmax(x)) per row in nats (0 log 0 = 0: -inf entries add nothing); NaN in -> NaN; a row
 * holding +inf, or only -inf, gives NaN. */
int fl_entropy_f32(const float *x, const fl_rows *r, double *out);
int fl_entropy_f64(const double *x, const fl_rows *r, double *out);
/* KL(softmax(p) || softmax(q)) per row in nats, p rows x_stride apart and q rows y_stride apart; >= 0,
 * +inf where some q is 0 < p; p = 0 entries add nothing. */
int fl_kl_f32(const float *p, const float *q, const fl_rows *r, double *out);
int fl_kl_f64(const double *p, const double *q, const fl_rows *r, double *out);
/* The row max (of a row without NaN), into out[rows]. */
int fl_rowmax_f32(const float *x, const fl_rows *r, double *out);
int fl_rowmax_f64(const double *x, const fl_rows *r, double *out);
/* Temperature scaling statistics at beta = 1/T, per row with label y[i] in [0, cols) and its max xmax[i]:
 * nll = lse(beta x) - beta x_y, g = E_p[x] - x_y (= d nll / d beta), v = Var_p[x] (= d2 nll / d beta2). */
int fl_temperature_stats_f32(const float *x, const fl_rows *r, const int64_t *y, const double *xmax, double beta,
                             double *nll, double *g, double *v);
int fl_temperature_stats_f64(const double *x, const fl_rows *r, const int64_t *y, const double *xmax, double beta,
                             double *nll, double *g, double *v);

typedef enum { FL_REDUCE_NONE = 0, FL_REDUCE_SUM = 1, FL_REDUCE_MEAN = 2 } fl_reduction;

/* Fused cross-entropy (loss and, optionally, its gradient w.r.t. the logits).
 *
 * Per row i with target y (rows with y == ignore_index contribute 0 and get a zero gradient row):
 *   u_c = cap * tanh(x_c / cap)   (softcap > 0; else u_c = x_c)
 *   z_c = u_c / T,  lse = log sum_c exp(z_c),  log p_c = z_c - lse
 *   l_i = (1-e) w_y (lse - z_y) + (e/V) sum_c w_c (lse - z_c) + zl w_y lse^2
 * with w = weight (all ones when NULL), e = label_smoothing, zl = z_loss, V = cols.
 * loss = sum_i l_i (SUM), sum_i l_i / sum_i w_{y_i} over non-ignored rows (MEAN; NaN when that is 0/0).
 * Gradient: g_c = s * du_c/dx_c / T * (A p_c - (e/V) w_c - (1-e) w_y [c == y]),
 *   A = (1-e) w_y + (e/V) sum_c w_c + 2 zl w_y lse,  s = 1/sum w (MEAN) or 1 (SUM, NONE); a MEAN over a
 *   zero weight sum gives NaN gradient rows (zero at ignored rows), as torch.
 * grad may equal logits (in place): each row is read before it is written.
 */
typedef struct {
    const int64_t *targets;     /* rows entries */
    const double *weight;       /* cols entries or NULL */
    const void *weight_t;       /* the same weights in the logits dtype (NULL when weight is NULL) */
    int64_t ignore_index;
    int reduction;              /* fl_reduction */
    double label_smoothing;     /* in [0, 1] */
    double z_loss;              /* >= 0 */
    double softcap;             /* > 0, or 0 for none */
    double inv_temperature;     /* > 0 */
    double *row_loss;           /* out: rows entries, l_i (0 at ignored rows) */
    /* outputs */
    double loss;                /* the reduced loss (SUM / MEAN); equals the sum for NONE */
    double weight_sum;          /* sum of w_{y_i} over non-ignored rows */
    int64_t bad_index;          /* first row with an invalid target, on FL_ERR_TARGET */
} fl_xent;

int fl_xent_f32(const float *logits, float *grad, const fl_rows *r, fl_xent *p);
int fl_xent_f64(const double *logits, double *grad, const fl_rows *r, fl_xent *p);
/* bfloat16 logits and gradient (the high halves of float32s), computed in float32; weight_t is float32. */
int fl_xent_bf16(const uint16_t *logits, uint16_t *grad, const fl_rows *r, fl_xent *p);

/* ---------------------------------------------------------------------------------------------- */
/* Decoding (decode.c and its decode_*.c families; csrc/README.md, "Decoding"). Rows are ranked by
 * probability, descending, the lower index first on ties; a filter keeps a prefix of that order and
 * writes fill (filter_value) elsewhere; y may equal x. Probabilities are softmax(x) in the logits'
 * precision; a row holding +inf gives its +inf entries equal shares of all the mass (the limit of
 * softmax). Every row is checked first: NaN -> FL_ERR_NAN, no logit above -inf (or cols == 0) ->
 * FL_ERR_EMPTY, with the row in bad_row; nothing is written then. Per-row parameters are arrays of
 * `rows` entries; rows must be shorter than 2^31. Top-k ranks logits (Hugging Face compares logits); the
 * others rank probabilities (top-p and min_keep by logit, the same order: ties in probability are ties in
 * logit, except that tokens of probability 0 tie with one another). Selection is exact and sort-free. */
typedef struct {
    int64_t min_keep;          /* min_tokens_to_keep (>= 1 for the filters) */
    int64_t bad_row;           /* out: the first invalid row */
} fl_decode;

/* k: keep the tokens whose logit is >= the k-th largest (ties with it kept); k <= 0: keep all. */
int fl_top_k_filter_f32(const float *x, float *y, const fl_rows *r, const int64_t *k, float fill, fl_decode *d);
int fl_top_k_filter_f64(const double *x, double *y, const fl_rows *r, const int64_t *k, double fill, fl_decode *d);
/* Temperature t > 0, top-k (k in [1, cols)) and top-p in one pass: the kept tokens get x / t, the others fill
 * (generate's three warpers in their order; min_keep as theirs). */
int fl_top_k_top_p_filter_f32(const float *x, float *y, const fl_rows *r, const int64_t *k, const double *p,
                              const double *t, float fill, fl_decode *d);
int fl_top_k_top_p_filter_f64(const double *x, double *y, const fl_rows *r, const int64_t *k, const double *p,
                              const double *t, double fill, fl_decode *d);
/* p: keep a token iff the probability ranked strictly above it is < p; p >= 1 keeps all. */
int fl_top_p_filter_f32(const float *x, float *y, const fl_rows *r, const double *p, float fill, fl_decode *d);
int fl_top_p_filter_f64(const double *x, double *y, const fl_rows *r, const double *p, double fill, fl_decode *d);
/* min_p: keep p_i >= min_p * max_j p_j. */
int fl_min_p_filter_f32(const float *x, float *y, const fl_rows *r, const double *min_p, float fill, fl_decode *d);
int fl_min_p_filter_f64(const double *x, double *y, const fl_rows *r, const double *min_p, double fill,
                        fl_decode *d);
/* mass: Hugging Face's TypicalLogitsWarper: rank by |-log p_i - H| ascending, keep while the mass ranked
 * before is < mass, plus ties with the last kept score. */
int fl_typical_filter_f32(const float *x, float *y, const fl_rows *r, const double *mass, float fill, fl_decode *d);
int fl_typical_filter_f64(const double *x, double *y, const fl_rows *r, const double *mass, double fill,
                          fl_decode *d);

/* argmax per row (lowest index on ties). */
int fl_greedy_f32(const float *x, const fl_rows *r, int64_t *ids, fl_decode *d);
int fl_greedy_f64(const double *x, const fl_rows *r, int64_t *ids, fl_decode *d);

/* The fused sampler: per row, temperature -> top-k -> top-p -> min-p -> one draw. temperature == 0 or
 * top_k == 1 is greedy. The draw is u * (kept mass) with u = uniform [0, 1) from a counter-based
 * generator keyed by (seed[i], i): the id depends on the seed, the row index, the row and its
 * parameters only. Never returns a token whose filtered probability is 0. */
typedef struct {
    const double *temperature; /* >= 0 */
    const int64_t *top_k;      /* <= 0: off */
    const double *top_p;       /* in [0, 1]; 1: off */
    const double *min_p;       /* in [0, 1]; 0: off */
    const uint64_t *seed;
} fl_sample_params;
int fl_sample_f32(const float *x, const fl_rows *r, const fl_sample_params *sp, int64_t *ids, fl_decode *d);
int fl_sample_f64(const double *x, const fl_rows *r, const fl_sample_params *sp, int64_t *ids, fl_decode *d);

/* One beam-search step over ngroups groups of rows (group: ngroups + 1 row offsets from 0 to rows; one
 * prompt's beams each): per group the k best (beam, token) pairs by score[b] + log_softmax(x[b])[v], best
 * first, ties to the lower (beam, token). Writes k entries per group (group g at g * k) of out_beam /
 * out_token / out_score; past a group's rows * cols candidates: beam and token -1, score -inf. */
int fl_beam_step_f32(const float *x, const fl_rows *r, const double *score, const int64_t *group, int64_t ngroups,
                     int64_t k, int64_t *out_beam, int64_t *out_token, double *out_score, fl_decode *d);
int fl_beam_step_f64(const double *x, const fl_rows *r, const double *score, const int64_t *group, int64_t ngroups,
                     int64_t k, int64_t *out_beam, int64_t *out_token, double *out_score, fl_decode *d);

/* Per-row statistics for diagnostics (diagnose.c): counts of NaN, +inf and -inf entries, and the min,
 * max and float64 sum of the finite ones (min +inf, max -inf when a row has none). */
typedef struct {
    int64_t nan, posinf, neginf;
    double min, max, sum;
} fl_row_stats;
int fl_row_stats_f32(const float *x, const fl_rows *r, fl_row_stats *out);
int fl_row_stats_f64(const double *x, const fl_rows *r, fl_row_stats *out);

/* ---------------------------------------------------------------------------------------------- */
/* N-gram counting (ngram.c). Packed keys: a k-gram of ids < 2^bits is sum_i t_i << (bits (k-1-i)),
 * k * bits <= 64, so that keys sort lexicographically and a context is key >> bits. Rank keys (any
 * order): a k-gram is (rank of its (k-1)-prefix) << 32 | its last id. Both can count only the k-grams
 * whose first id is in a range (a range of first ids is a self-contained piece of every order). */
int64_t fl_ngram_count_windows(const uint32_t *tokens, const int64_t *starts, int64_t nseq, int k, int bits,
                               uint64_t lo, uint64_t hi, uint64_t *keys, uint64_t *tmp);
int64_t fl_ngram_count_ranks(const uint32_t *tokens, const int64_t *starts, int64_t nseq, int k, uint32_t *live,
                             int64_t *nlive, uint32_t *rank, uint64_t *keys, uint64_t *tmp, uint32_t *idx);
int64_t fl_ngram_prefixes(const uint64_t *keys, const int64_t *counts, int64_t m, int bits, uint64_t *prefix,
                          int64_t *prefix_count, uint64_t *rank);
typedef struct {
    uint64_t key;
    int64_t index; /* -1: an empty slot */
} fl_ngram_slot;
/* One ascending run of a merge: n keys and their counts. A rank key's parent p is re-keyed on the fly to
 * remap[p] (remap: nremap entries, the merged ranks of the run's order k-1; NULL for order 1, whose keys
 * are ids). rank (n entries, or NULL) receives each entry's index in the merged output. */
typedef struct {
    const uint64_t *keys;
    const int64_t *counts;
    int64_t n;
    const int64_t *remap;
    int64_t nremap;
    int64_t *rank;
} fl_ngram_run;
#define FL_NGRAM_MERGE_MAX 64
int64_t fl_ngram_merge(const fl_ngram_run *runs, int nruns, uint64_t *out_keys, int64_t *out_counts);
void fl_ngram_index(const uint64_t *keys, int64_t m, int log2cap, fl_ngram_slot *slots);
void fl_ngram_find(int log2cap, const fl_ngram_slot *slots, const uint64_t *queries, int64_t nq, int64_t *out);

/* Scoring against rank-key tables (ngram_score.c). Per order a hash table of entries: key, index and two
 * values, either log10 prob and backoff (NaN prob: a context-only entry) or the count and, for the
 * k-gram j, the sum of the counts of the (k+1)-grams whose prefix it is. */
#define FL_NGRAM_MAX_ORDER 64
typedef struct {
    uint64_t key;
    int64_t index; /* -1: an empty slot */
    double value[2];
} fl_ngram_entry;
void fl_ngram_entries(const uint64_t *keys, int64_t m, int log2cap, const double *v0, const double *v1,
                      fl_ngram_entry *slots);
typedef struct {
    const fl_ngram_entry *slots; /* 2^log2cap, fl_ngram_entries' */
    int log2cap;
} fl_ngram_order;
typedef struct {
    int order, add_alpha;
    double alpha, vocab, unigram_total; /* add-alpha */
    double unseen;                      /* backoff: log10 p of a word with no unigram and no <unk> */
    int64_t unk_word;                   /* backoff: <unk>'s id, or -1 */
    fl_ngram_order t[FL_NGRAM_MAX_ORDER];
} fl_ngram_model;
/* One order of modified Kneser-Ney (kneser_ney.c): p of every entry and gamma of every context. */
void fl_kn_order(const uint64_t *keys, int ctx_shift, const int64_t *a, const uint8_t *pruned, int64_t m,
                 const double d[4], const int64_t *suffix, const double *lower, double lower_uniform, double *p,
                 double *gamma);

/* Words of UTF-8 text to ids (words.c): a table of distinct words, grown or frozen while encoding. */
typedef struct fl_words fl_words;
fl_words *fl_words_new(void);
void fl_words_free(fl_words *v);
int fl_words_add(fl_words *v, const char *bytes, const int64_t *off, int64_t n);
typedef struct {
    const int64_t *pre; /* ids written before each item's words */
    int npre;
    int64_t post; /* the id written after them, or -1 */
} fl_words_frame;
int64_t fl_words_encode(fl_words *v, const char *text, const int64_t *item_off, int64_t nitems, int grow,
                        int64_t unknown, const fl_words_frame *frame, int64_t *ids, int64_t *lengths);
int64_t fl_words_encode_frozen(fl_words *v, const char *text, const int64_t *item_off, int64_t nitems,
                               int64_t unknown, const fl_words_frame *frame, int64_t *ids, int64_t *lengths,
                               int num_threads);
int64_t fl_words_size(const fl_words *v);
void fl_words_export(const fl_words *v, char *bytes, int64_t *off, int64_t *count);
void fl_words_set_ids(fl_words *v, const int64_t *ids);

/* ARPA text (arpa.c): the lines of one order's entries, numbers as %.8g. Returns bytes written or -1. */
int64_t fl_arpa_lines(int k, int64_t m, const uint32_t *ids, const double *prob, const double *backoff,
                      const uint8_t *real, const char *words, const int64_t *word_off, char *out, int64_t cap);
int fl_ngram_score(const fl_ngram_model *m, const uint32_t *tokens, const int64_t *starts, int64_t nseq,
                   int64_t skip, double *logp, int32_t *matched, uint8_t *unseen, double *seq_logp,
                   int64_t *seq_unseen, int num_threads);

#ifdef __cplusplus
}
#endif
#endif
