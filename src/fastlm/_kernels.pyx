# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""Thin wrappers over the C kernels (csrc/fastlm.h).

Each wrapper takes 2-D row views prepared by fastlm._arrays (class axis contiguous, rows a
non-negative whole number of elements apart), re-checks what the C code relies on (so that a misuse of
this private module raises instead of crashing), releases the GIL around the kernel call and maps the
status code to an exception.
"""
cimport numpy as cnp
from cpython.pycapsule cimport PyCapsule_Destructor, PyCapsule_GetPointer, PyCapsule_New
import numpy as np
from libc.stdint cimport int32_t, int64_t, intptr_t, uint16_t, uint32_t, uint64_t, uint8_t
from libc.string cimport memcpy

cnp.import_array()

cdef extern from "dispatch.h" nogil:
    void *fl_scratch(size_t bytes)
    void fl_scratch_release(void *p, size_t bytes)

cdef extern from "fastlm.h" nogil:
    enum:
        FL_OK
        FL_ERR_ARG
        FL_ERR_TARGET
    ctypedef struct fl_rows:
        int64_t rows
        int64_t cols
        int64_t x_stride
        int64_t y_stride
        int num_threads
    ctypedef struct fl_xent:
        const int64_t *targets
        const double *weight
        const void *weight_t
        int64_t ignore_index
        int reduction
        double label_smoothing
        double z_loss
        double softcap
        double inv_temperature
        double *row_loss
        double loss
        double weight_sum
        int64_t bad_index

    const char *fl_simd_name(int level)
    int fl_simd_compiled(int level)
    int fl_simd_supported(int level)
    int fl_simd_active()
    int fl_simd_select(int level)
    int fl_openmp_enabled()
    int fl_max_threads()
    int fl_logsumexp_f32(const float *x, const fl_rows *r, double inv_t, double *out)
    int fl_logsumexp_f64(const double *x, const fl_rows *r, double inv_t, double *out)
    int fl_softmax_f32(const float *x, float *y, const fl_rows *r, double inv_t, int log)
    int fl_softmax_f64(const double *x, double *y, const fl_rows *r, double inv_t, int log)
    int fl_xent_f32(const float *logits, float *grad, const fl_rows *r, fl_xent *p)
    int fl_xent_f64(const double *logits, double *grad, const fl_rows *r, fl_xent *p)
    int fl_xent_bf16(const uint16_t *logits, uint16_t *grad, const fl_rows *r, fl_xent *p)
    int fl_entropy_f32(const float *x, const fl_rows *r, double *out)
    int fl_entropy_f64(const double *x, const fl_rows *r, double *out)
    int fl_kl_f32(const float *p, const float *q, const fl_rows *r, double *out)
    int fl_kl_f64(const double *p, const double *q, const fl_rows *r, double *out)
    int fl_rowmax_f32(const float *x, const fl_rows *r, double *out)
    int fl_rowmax_f64(const double *x, const fl_rows *r, double *out)
    int fl_temperature_stats_f32(const float *x, const fl_rows *r, const int64_t *y, const double *xmax,
                                 double beta, double *nll, double *g, double *v)
    int fl_temperature_stats_f64(const double *x, const fl_rows *r, const int64_t *y, const double *xmax,
                                 double beta, double *nll, double *g, double *v)

    enum:
        FL_ERR_NAN
        FL_ERR_EMPTY
        FL_ERR_NOMEM
    ctypedef struct fl_decode:
        int64_t min_keep
        int64_t bad_row
    ctypedef struct fl_sample_params:
        const double *temperature
        const int64_t *top_k
        const double *top_p
        const double *min_p
        const uint64_t *seed
    int fl_top_k_top_p_filter_f32(const float *x, float *y, const fl_rows *r, const int64_t *k, const double *p,
                                  const double *t, float fill, fl_decode *d)
    int fl_top_k_top_p_filter_f64(const double *x, double *y, const fl_rows *r, const int64_t *k, const double *p,
                                  const double *t, double fill, fl_decode *d)
    int fl_top_k_filter_f32(const float *x, float *y, const fl_rows *r, const int64_t *k, float fill, fl_decode *d)
    int fl_top_k_filter_f64(const double *x, double *y, const fl_rows *r, const int64_t *k, double fill, fl_decode *d)
    int fl_top_p_filter_f32(const float *x, float *y, const fl_rows *r, const double *p, float fill, fl_decode *d)
    int fl_top_p_filter_f64(const double *x, double *y, const fl_rows *r, const double *p, double fill, fl_decode *d)
    int fl_min_p_filter_f32(const float *x, float *y, const fl_rows *r, const double *p, float fill, fl_decode *d)
    int fl_min_p_filter_f64(const double *x, double *y, const fl_rows *r, const double *p, double fill, fl_decode *d)
    int fl_typical_filter_f32(const float *x, float *y, const fl_rows *r, const double *p, float fill, fl_decode *d)
    int fl_typical_filter_f64(const double *x, double *y, const fl_rows *r, const double *p, double fill,
                              fl_decode *d)
    int fl_greedy_f32(const float *x, const fl_rows *r, int64_t *ids, fl_decode *d)
    int fl_greedy_f64(const double *x, const fl_rows *r, int64_t *ids, fl_decode *d)
    int fl_sample_f32(const float *x, const fl_rows *r, const fl_sample_params *sp, int64_t *ids, fl_decode *d)
    int fl_sample_f64(const double *x, const fl_rows *r, const fl_sample_params *sp, int64_t *ids, fl_decode *d)
    ctypedef struct fl_row_stats:
        int64_t nan, posinf, neginf
        double min, max, sum
    int fl_row_stats_f32(const float *x, const fl_rows *r, fl_row_stats *out)
    int fl_row_stats_f64(const double *x, const fl_rows *r, fl_row_stats *out)
    int64_t fl_ngram_count_windows(const uint32_t *tokens, const int64_t *starts, int64_t nseq, int k, int bits,
                                   uint64_t lo, uint64_t hi, uint64_t *keys, uint64_t *tmp)
    int64_t fl_ngram_prefixes(const uint64_t *keys, const int64_t *counts, int64_t m, int bits, uint64_t *prefix,
                              int64_t *prefix_count, uint64_t *rank)
    ctypedef struct fl_ngram_slot:
        uint64_t key
        int64_t index
    void fl_ngram_index(const uint64_t *keys, int64_t m, int log2cap, fl_ngram_slot *slots)
    ctypedef struct fl_ngram_run:
        const uint64_t *keys
        const int64_t *counts
        int64_t n
        const int64_t *remap
        int64_t nremap
        int64_t *rank
    int64_t fl_ngram_merge(const fl_ngram_run *runs, int nruns, uint64_t *out_keys, int64_t *out_counts)
    int64_t fl_ngram_count_ranks(const uint32_t *tokens, const int64_t *starts, int64_t nseq, int k,
                                 uint32_t *live, int64_t *nlive, uint32_t *rank, uint64_t *keys, uint64_t *tmp,
                                 uint32_t *idx)
    void fl_ngram_find(int log2cap, const fl_ngram_slot *slots, const uint64_t *queries, int64_t nq, int64_t *out)
    ctypedef struct fl_ngram_entry:
        uint64_t key
        int64_t index
        double value[2]
    void fl_ngram_entries(const uint64_t *keys, int64_t m, int log2cap, const double *v0, const double *v1,
                          fl_ngram_entry *slots)
    ctypedef struct fl_ngram_order:
        const fl_ngram_entry *slots
        int log2cap
    ctypedef struct fl_ngram_model:
        int order, add_alpha
        double alpha, vocab, unigram_total, unseen
        int64_t unk_word
        fl_ngram_order t[64]
    void fl_kn_order(const uint64_t *keys, int ctx_shift, const int64_t *a, const uint8_t *pruned, int64_t m,
                     const double d[4], const int64_t *suffix, const double *lower, double lower_uniform, double *p,
                     double *gamma)
    ctypedef struct fl_words:
        pass
    fl_words *fl_words_new()
    void fl_words_free(fl_words *v)
    int fl_words_add(fl_words *v, const char *bytes, const int64_t *off, int64_t n)
    ctypedef struct fl_words_frame:
        const int64_t *pre
        int npre
        int64_t post
    int64_t fl_words_encode(fl_words *v, const char *text, const int64_t *item_off, int64_t nitems, int grow,
                            int64_t unknown, const fl_words_frame *frame, int64_t *ids, int64_t *lengths)
    int64_t fl_words_encode_frozen(fl_words *v, const char *text, const int64_t *item_off, int64_t nitems,
                                   int64_t unknown, const fl_words_frame *frame, int64_t *ids, int64_t *lengths,
                                   int num_threads)
    int64_t fl_words_size(const fl_words *v)
    void fl_words_export(const fl_words *v, char *bytes, int64_t *off, int64_t *count)
    void fl_words_set_ids(fl_words *v, const int64_t *ids)
    int64_t fl_arpa_lines(int k, int64_t m, const uint32_t *ids, const double *prob, const double *backoff,
                          const uint8_t *real, const char *words, const int64_t *word_off, char *out, int64_t cap)
    int fl_ngram_score(const fl_ngram_model *m, const uint32_t *tokens, const int64_t *starts, int64_t nseq,
                       int64_t skip, double *logp, int32_t *matched, uint8_t *unseen, double *seq_logp,
                       int64_t *seq_unseen, int num_threads)
    int fl_beam_step_f32(const float *x, const fl_rows *r, const double *score, const int64_t *group, int64_t ngroups,
                         int64_t k, int64_t *out_beam,
                         int64_t *out_token, double *out_score, fl_decode *d)
    int fl_beam_step_f64(const double *x, const fl_rows *r, const double *score, const int64_t *group, int64_t ngroups,
                         int64_t k, int64_t *out_beam,
                         int64_t *out_token, double *out_score, fl_decode *d)

SIMD_LEVELS = ("scalar", "avx2", "avx512", "neon")
REDUCTIONS = {"none": 0, "sum": 1, "mean": 2}


def simd_compiled():
    return [n for i, n in enumerate(SIMD_LEVELS) if fl_simd_compiled(i)]


def simd_supported():
    return [n for i, n in enumerate(SIMD_LEVELS) if fl_simd_supported(i)]


def simd_active():
    return fl_simd_name(fl_simd_active()).decode()


def simd_select(str name):
    """Make `name` the active SIMD level (process-wide). ValueError if this machine cannot run it."""
    if name not in SIMD_LEVELS or fl_simd_select(SIMD_LEVELS.index(name)) != FL_OK:
        raise ValueError(f"SIMD level {name!r} is not available here; available: {simd_supported()}")


def openmp_enabled():
    return bool(fl_openmp_enabled())


def max_threads():
    return fl_max_threads()


cdef fl_rows _rows(cnp.ndarray x, cnp.ndarray y, int num_threads) except *:
    """Row layout of x (and of the output y, same shape and dtype, when given); uint16 holds bfloat16."""
    cdef fl_rows r
    if x.ndim != 2 or not (x.dtype.num == cnp.NPY_FLOAT32 or x.dtype.num == cnp.NPY_FLOAT64
                           or x.dtype.num == cnp.NPY_UINT16):
        raise TypeError("internal: expected a 2-D float32/float64/bfloat16 (uint16) array")
    cdef int64_t item = x.itemsize
    r.rows = x.shape[0]
    r.cols = x.shape[1]
    r.x_stride = _row_stride(x, item)
    r.y_stride = r.cols
    if y is not None:
        if y.ndim != 2 or y.shape[0] != r.rows or y.shape[1] != r.cols or y.dtype.num != x.dtype.num:
            raise ValueError("internal: output layout does not match the input")
        if not y.flags.writeable:
            raise ValueError("internal: output is read-only")
        r.y_stride = _row_stride(y, item)
    r.num_threads = num_threads
    return r


cdef int64_t _row_stride(cnp.ndarray a, int64_t item) except -1:
    cdef int64_t cols = a.shape[1]
    if a.shape[0] == 0 or cols == 0:
        return cols  # nothing is read or written
    if cols > 1 and a.strides[1] != item:
        raise ValueError("internal: class axis is not contiguous")
    if not a.flags.aligned:
        raise ValueError("internal: array is not aligned")
    if a.shape[0] <= 1:
        return cols
    if a.strides[0] < 0 or a.strides[0] % item or a.strides[0] // item < cols:
        raise ValueError("internal: rows overlap or are not a whole number of elements apart")
    return a.strides[0] // item


cdef int _check(int status) except -1:
    if status == FL_ERR_ARG:
        raise ValueError("invalid argument passed to a fastlm kernel")
    return 0


ROW_STATS = np.dtype([("nan", np.int64), ("posinf", np.int64), ("neginf", np.int64), ("min", np.float64),
                      ("max", np.float64), ("sum", np.float64)])


def row_stats(cnp.ndarray x):
    """Per row of a 2-D float32/float64 array: a ROW_STATS record (NaN, +inf, -inf counts; min, max and
    float64 sum of the finite entries)."""
    cdef fl_rows r = _rows(x, None, 1)
    if x.dtype.num == cnp.NPY_UINT16:
        raise TypeError("internal: row_stats takes float32 or float64")
    cdef cnp.ndarray out = np.empty(r.rows, ROW_STATS)
    cdef int st
    cdef bint f32 = x.dtype.num == cnp.NPY_FLOAT32
    cdef void *xp = cnp.PyArray_DATA(x)
    cdef fl_row_stats *op = <fl_row_stats *>cnp.PyArray_DATA(out)
    with nogil:
        if f32:
            st = fl_row_stats_f32(<const float *>xp, &r, op)
        else:
            st = fl_row_stats_f64(<const double *>xp, &r, op)
    if st != 0:
        raise ValueError(f"internal: row_stats status {st}")
    return out


def logsumexp_rows(cnp.ndarray x, double inv_t, cnp.ndarray out, int num_threads):
    """out[i] = log sum_j exp(x[i, j] * inv_t); out is float64 (rows,)."""
    cdef fl_rows r = _rows(x, None, num_threads)
    if out.ndim != 1 or out.shape[0] != r.rows or out.dtype.num != cnp.NPY_FLOAT64 or not out.flags.c_contiguous:
        raise ValueError("internal: out must be float64 (rows,)")
    cdef int st
    cdef bint f32 = x.dtype.num == cnp.NPY_FLOAT32
    cdef void *xp = cnp.PyArray_DATA(x)
    cdef double *op = <double *>cnp.PyArray_DATA(out)
    with nogil:
        if f32:
            st = fl_logsumexp_f32(<const float *>xp, &r, inv_t, op)
        else:
            st = fl_logsumexp_f64(<const double *>xp, &r, inv_t, op)
    _check(st)


def softmax_rows(cnp.ndarray x, cnp.ndarray y, double inv_t, bint log, int num_threads):
    """y = softmax(x * inv_t) (or log_softmax) row-wise; y may be x."""
    cdef fl_rows r = _rows(x, y, num_threads)
    cdef int st
    cdef bint f32 = x.dtype.num == cnp.NPY_FLOAT32
    cdef void *xp = cnp.PyArray_DATA(x)
    cdef void *yp = cnp.PyArray_DATA(y)
    with nogil:
        if f32:
            st = fl_softmax_f32(<const float *>xp, <float *>yp, &r, inv_t, log)
        else:
            st = fl_softmax_f64(<const double *>xp, <double *>yp, &r, inv_t, log)
    _check(st)


def xent_rows(cnp.ndarray x, cnp.ndarray targets, weight, weight_t, long long ignore_index, str reduction,
              double label_smoothing, double z_loss, double softcap, double inv_t,
              cnp.ndarray row_loss, grad, int num_threads):
    """Fused cross-entropy over rows (see fl_xent in fastlm.h); x of dtype uint16 holds bfloat16 logits
    (weight_t then float32).

    Returns (loss, weight_sum, bad_index): bad_index >= 0 is the first row whose target is invalid,
    in which case nothing was written.
    """
    cdef fl_rows r = _rows(x, grad, num_threads)
    cdef fl_xent p
    if (targets.ndim != 1 or targets.shape[0] != r.rows or targets.dtype.num != cnp.NPY_INT64
            or not targets.flags.c_contiguous):
        raise ValueError("internal: targets must be int64 (rows,)")
    if (row_loss.ndim != 1 or row_loss.shape[0] != r.rows or row_loss.dtype.num != cnp.NPY_FLOAT64
            or not row_loss.flags.c_contiguous or not row_loss.flags.writeable):
        raise ValueError("internal: row_loss must be writable float64 (rows,)")
    cdef cnp.ndarray w, wt
    p.weight = NULL
    p.weight_t = NULL
    if weight is not None:
        w = weight
        wt = weight_t
        if (w.ndim != 1 or w.shape[0] != r.cols or w.dtype.num != cnp.NPY_FLOAT64 or not w.flags.c_contiguous
                or wt.ndim != 1 or wt.shape[0] != r.cols
                or wt.dtype.num != (cnp.NPY_FLOAT32 if x.dtype.num == cnp.NPY_UINT16 else x.dtype.num)
                or not wt.flags.c_contiguous):
            raise ValueError("internal: weight must be float64 (cols,) with a copy in the logits dtype")
        p.weight = <const double *>cnp.PyArray_DATA(w)
        p.weight_t = cnp.PyArray_DATA(wt)
    if reduction not in REDUCTIONS:
        raise ValueError(f"internal: reduction {reduction!r}")
    p.targets = <const int64_t *>cnp.PyArray_DATA(targets)
    p.ignore_index = ignore_index
    p.reduction = REDUCTIONS[reduction]
    p.label_smoothing = label_smoothing
    p.z_loss = z_loss
    p.softcap = softcap
    p.inv_temperature = inv_t
    p.row_loss = <double *>cnp.PyArray_DATA(row_loss)
    p.bad_index = -1
    cdef void *xp = cnp.PyArray_DATA(x)
    cdef void *gp = NULL
    if grad is not None:
        gp = cnp.PyArray_DATA(<cnp.ndarray>grad)
    cdef int st
    cdef int dt = x.dtype.num
    with nogil:
        if dt == cnp.NPY_UINT16:
            st = fl_xent_bf16(<const uint16_t *>xp, <uint16_t *>gp, &r, &p)
        elif dt == cnp.NPY_FLOAT32:
            st = fl_xent_f32(<const float *>xp, <float *>gp, &r, &p)
        else:
            st = fl_xent_f64(<const double *>xp, <double *>gp, &r, &p)
    if st == FL_ERR_TARGET:
        return float("nan"), 0.0, p.bad_index
    _check(st)
    return p.loss, p.weight_sum, -1


class RowError(ValueError):
    """A decoding kernel met an invalid row: .row is its flat index, .kind 'nan' or 'empty'."""

    def __init__(self, row, kind):
        super().__init__(f"row {row}: {kind}")
        self.row = row
        self.kind = kind


cdef int _check_decode(int status, fl_decode *d) except -1:
    if status == FL_ERR_NAN:
        raise RowError(d.bad_row, "nan")
    if status == FL_ERR_EMPTY:
        raise RowError(d.bad_row, "empty")
    if status == FL_ERR_NOMEM:
        raise MemoryError("fastlm: scratch memory for a decoding kernel")
    return _check(status)


cdef fl_decode _decode(long long min_keep):
    cdef fl_decode d
    d.min_keep = min_keep
    d.bad_row = -1
    return d


cdef void *_vec(cnp.ndarray a, int64_t n, int typenum, str name) except NULL:
    if a.ndim != 1 or a.shape[0] != n or a.dtype.num != typenum or not a.flags.c_contiguous:
        raise ValueError(f"internal: {name} must be a contiguous 1-D array of {n} entries")
    return cnp.PyArray_DATA(a) if n else <void *>1


FILTERS = ("top_k", "top_p", "min_p", "typical")


def filter_rows(str kind, cnp.ndarray x, cnp.ndarray y, cnp.ndarray param, double fill, long long min_keep,
                int num_threads):
    """y = x where the filter keeps a token, else fill (row-wise; y may be x)."""
    cdef fl_rows r = _rows(x, y, num_threads)
    cdef fl_decode d = _decode(min_keep)
    if kind not in FILTERS:
        raise ValueError(f"internal: filter {kind!r}")
    cdef int which = FILTERS.index(kind)
    cdef void *pp = _vec(param, r.rows, cnp.NPY_INT64 if which == 0 else cnp.NPY_FLOAT64, "param")
    cdef bint f32 = x.dtype.num == cnp.NPY_FLOAT32
    cdef void *xp = cnp.PyArray_DATA(x)
    cdef void *yp = cnp.PyArray_DATA(y)
    cdef int st
    with nogil:
        if f32:
            if which == 0:
                st = fl_top_k_filter_f32(<const float *>xp, <float *>yp, &r, <const int64_t *>pp, <float>fill, &d)
            elif which == 1:
                st = fl_top_p_filter_f32(<const float *>xp, <float *>yp, &r, <const double *>pp, <float>fill, &d)
            elif which == 2:
                st = fl_min_p_filter_f32(<const float *>xp, <float *>yp, &r, <const double *>pp, <float>fill, &d)
            else:
                st = fl_typical_filter_f32(<const float *>xp, <float *>yp, &r, <const double *>pp, <float>fill, &d)
        else:
            if which == 0:
                st = fl_top_k_filter_f64(<const double *>xp, <double *>yp, &r, <const int64_t *>pp, fill, &d)
            elif which == 1:
                st = fl_top_p_filter_f64(<const double *>xp, <double *>yp, &r, <const double *>pp, fill, &d)
            elif which == 2:
                st = fl_min_p_filter_f64(<const double *>xp, <double *>yp, &r, <const double *>pp, fill, &d)
            else:
                st = fl_typical_filter_f64(<const double *>xp, <double *>yp, &r, <const double *>pp, fill, &d)
    _check_decode(st, &d)


def top_k_top_p_rows(cnp.ndarray x, cnp.ndarray y, cnp.ndarray k, cnp.ndarray p, cnp.ndarray t, double fill,
                     long long min_keep, int num_threads):
    """y = x / t where temperature, top-k (k in [1, V)) and top-p keep a token, else fill (y may be x)."""
    cdef fl_rows r = _rows(x, y, num_threads)
    cdef fl_decode d = _decode(min_keep)
    cdef const int64_t *kp = <const int64_t *>_vec(k, r.rows, cnp.NPY_INT64, "k")
    cdef const double *pp = <const double *>_vec(p, r.rows, cnp.NPY_FLOAT64, "p")
    cdef const double *tp = <const double *>_vec(t, r.rows, cnp.NPY_FLOAT64, "t")
    cdef bint f32 = x.dtype.num == cnp.NPY_FLOAT32
    cdef void *xp = cnp.PyArray_DATA(x)
    cdef void *yp = cnp.PyArray_DATA(y)
    cdef int st
    with nogil:
        if f32:
            st = fl_top_k_top_p_filter_f32(<const float *>xp, <float *>yp, &r, kp, pp, tp, <float>fill, &d)
        else:
            st = fl_top_k_top_p_filter_f64(<const double *>xp, <double *>yp, &r, kp, pp, tp, fill, &d)
    _check_decode(st, &d)


def greedy_rows(cnp.ndarray x, cnp.ndarray ids, int num_threads):
    cdef fl_rows r = _rows(x, None, num_threads)
    cdef fl_decode d = _decode(1)
    cdef int64_t *ip = <int64_t *>_vec(ids, r.rows, cnp.NPY_INT64, "ids")
    cdef bint f32 = x.dtype.num == cnp.NPY_FLOAT32
    cdef void *xp = cnp.PyArray_DATA(x)
    cdef int st
    with nogil:
        if f32:
            st = fl_greedy_f32(<const float *>xp, &r, ip, &d)
        else:
            st = fl_greedy_f64(<const double *>xp, &r, ip, &d)
    _check_decode(st, &d)


def sample_rows(cnp.ndarray x, cnp.ndarray temperature, cnp.ndarray top_k, cnp.ndarray top_p, cnp.ndarray min_p,
                cnp.ndarray seed, cnp.ndarray ids, int num_threads):
    cdef fl_rows r = _rows(x, None, num_threads)
    cdef fl_decode d = _decode(1)
    cdef fl_sample_params sp
    sp.temperature = <const double *>_vec(temperature, r.rows, cnp.NPY_FLOAT64, "temperature")
    sp.top_k = <const int64_t *>_vec(top_k, r.rows, cnp.NPY_INT64, "top_k")
    sp.top_p = <const double *>_vec(top_p, r.rows, cnp.NPY_FLOAT64, "top_p")
    sp.min_p = <const double *>_vec(min_p, r.rows, cnp.NPY_FLOAT64, "min_p")
    sp.seed = <const uint64_t *>_vec(seed, r.rows, cnp.NPY_UINT64, "seed")
    cdef int64_t *ip = <int64_t *>_vec(ids, r.rows, cnp.NPY_INT64, "ids")
    cdef bint f32 = x.dtype.num == cnp.NPY_FLOAT32
    cdef void *xp = cnp.PyArray_DATA(x)
    cdef int st
    with nogil:
        if f32:
            st = fl_sample_f32(<const float *>xp, &r, &sp, ip, &d)
        else:
            st = fl_sample_f64(<const double *>xp, &r, &sp, ip, &d)
    _check_decode(st, &d)


def beam_step(cnp.ndarray x, cnp.ndarray score, long long k, cnp.ndarray group):
    """Per group of rows (group: row offsets from 0 to rows), the k best (beam, token, score) of
    score[b] + log_softmax(x[b])[v], best first: (G, k) arrays, past a group's candidates -1, -1, -inf."""
    cdef fl_rows r = _rows(x, None, 1)
    cdef fl_decode d = _decode(1)
    cdef const double *sp = <const double *>_vec(score, r.rows, cnp.NPY_FLOAT64, "score")
    cdef int64_t ngroups = group.shape[0] - 1
    if k < 0 or ngroups < 0 or group[0] != 0 or group[ngroups] != r.rows or np.any(np.diff(group) < 0):
        raise ValueError(f"internal: beam_step k = {k} or groups")
    cdef const int64_t *gp = <const int64_t *>_data(group, cnp.NPY_INT64, "group")
    cdef cnp.ndarray beams = np.zeros((ngroups, k), np.int64)
    cdef cnp.ndarray tokens = np.zeros((ngroups, k), np.int64)
    cdef cnp.ndarray scores = np.zeros((ngroups, k), np.float64)
    cdef int64_t *bp = <int64_t *>cnp.PyArray_DATA(beams)
    cdef int64_t *tp = <int64_t *>cnp.PyArray_DATA(tokens)
    cdef double *op = <double *>cnp.PyArray_DATA(scores)
    cdef bint f32 = x.dtype.num == cnp.NPY_FLOAT32
    cdef void *xp = cnp.PyArray_DATA(x)
    cdef int st
    with nogil:
        if f32:
            st = fl_beam_step_f32(<const float *>xp, &r, sp, gp, ngroups, k, bp, tp, op, &d)
        else:
            st = fl_beam_step_f64(<const double *>xp, &r, sp, gp, ngroups, k, bp, tp, op, &d)
    _check_decode(st, &d)
    return beams, tokens, scores


# ------------------------------------------------------------------------------------------------ n-grams

cdef void *_data(cnp.ndarray a, int typenum, str name) except NULL:
    if a.ndim != 1 or a.dtype.num != typenum or not a.flags.c_contiguous or not a.flags.aligned:
        raise ValueError(f"internal: {name} must be an aligned contiguous 1-D array of type {typenum}")
    return cnp.PyArray_DATA(a) if a.shape[0] else <void *>1


cdef int64_t _nseq(cnp.ndarray tokens, cnp.ndarray starts) except -1:
    cdef int64_t nseq = starts.shape[0] - 1
    if nseq < 0 or (nseq > 0 and (starts[0] != 0 or starts[nseq] != tokens.shape[0] or np.any(np.diff(starts) < 0))):
        raise ValueError("internal: starts must run from 0 to len(tokens), non-decreasing")
    return nseq


def ngram_count_windows(cnp.ndarray tokens, cnp.ndarray starts, int k, int bits, uint64_t lo=0,
                        uint64_t hi=4294967296):
    """(distinct packed keys ascending, counts) of the k-grams inside each sequence whose first id is in
    [lo, hi)."""
    cdef const uint32_t *tp = <const uint32_t *>_data(tokens, cnp.NPY_UINT32, "tokens")
    cdef const int64_t *sp = <const int64_t *>_data(starts, cnp.NPY_INT64, "starts")
    cdef int64_t nseq = _nseq(tokens, starts)
    if k < 1 or bits < 1 or k * bits > 64:
        raise ValueError("internal: ngram_count_windows arguments")
    cdef int64_t n = max(tokens.shape[0], 1)
    cdef size_t nbytes = 2 * 8 * <size_t>n
    cdef uint64_t *kp = <uint64_t *>fl_scratch(nbytes)  # kept per thread between calls: no page faults
    if kp == NULL:
        raise MemoryError("fastlm: n-gram counting")
    cdef uint64_t *mp = kp + n
    cdef int64_t m
    try:
        with nogil:
            m = fl_ngram_count_windows(tp, sp, nseq, k, bits, lo, hi, kp, mp)
        if m == -2:
            raise ValueError("internal: an n-gram key has bits above the key width")
        if m < 0:
            raise MemoryError("fastlm: n-gram counting")
        u = np.empty(m, np.uint64)
        c = np.empty(m, np.int64)
        if m:
            memcpy(cnp.PyArray_DATA(u), kp, 8 * m)
            memcpy(cnp.PyArray_DATA(c), mp, 8 * m)
    finally:
        fl_scratch_release(kp, nbytes)
    return u, c


def ngram_count_ranks(cnp.ndarray tokens, cnp.ndarray starts, int k, cnp.ndarray live, cnp.ndarray rank,
                      cnp.ndarray scratch, int64_t nlive):
    """(distinct rank keys ascending, counts, live windows left) of order k. live[:nlive] (uint32 positions,
    ascending) are the windows whose (k-1)-gram was counted, rank[:nlive] (uint32) its rank (for k = 1:
    the positions counted, zeros); on return the first (live windows left) hold those fitting order k, with
    the ranks of their k-grams. scratch: uint64, 3 per live window (kept for all orders)."""
    cdef const uint32_t *tp = <const uint32_t *>_data(tokens, cnp.NPY_UINT32, "tokens")
    cdef const int64_t *sp = <const int64_t *>_data(starts, cnp.NPY_INT64, "starts")
    cdef uint32_t *lp = <uint32_t *>_data(live, cnp.NPY_UINT32, "live")
    cdef uint32_t *rp = <uint32_t *>_data(rank, cnp.NPY_UINT32, "rank")
    cdef uint64_t *kp = <uint64_t *>_data(scratch, cnp.NPY_UINT64, "scratch")
    cdef int64_t nseq = _nseq(tokens, starts), m, n0 = nlive
    if (k < 1 or not 0 <= nlive <= min(live.shape[0], rank.shape[0], scratch.shape[0] // 3)
            or not live.flags.writeable or not rank.flags.writeable or not scratch.flags.writeable
            or (nlive and int(live[nlive - 1]) >= tokens.shape[0])):
        raise ValueError("internal: ngram_count_ranks arguments")
    with nogil:
        m = fl_ngram_count_ranks(tp, sp, nseq, k, lp, &nlive, rp, kp, kp + nlive, <uint32_t *>(kp + 2 * nlive))
    if m == -2:
        raise ValueError("more than 2^32 tokens or distinct n-grams of one order: rank keys hold 32-bit ranks")
    return scratch[:m].copy(), scratch[n0:n0 + m].view(np.int64).copy(), nlive


def ngram_prefixes(cnp.ndarray keys, cnp.ndarray counts, int bits):
    """(distinct prefixes key >> bits, their summed counts, rank keys run << 32 | last id) of sorted packed keys."""
    cdef int64_t m = keys.shape[0]
    if counts.shape[0] != m or not 1 <= bits <= 32:
        raise ValueError("internal: ngram_prefixes arguments")
    cdef cnp.ndarray prefix = np.empty(max(m, 1), np.uint64)
    cdef cnp.ndarray total = np.empty(max(m, 1), np.int64)
    cdef cnp.ndarray rank = np.empty(max(m, 1), np.uint64)
    cdef const uint64_t *kp = <const uint64_t *>_data(keys, cnp.NPY_UINT64, "keys")
    cdef const int64_t *cp = <const int64_t *>_data(counts, cnp.NPY_INT64, "counts")
    cdef int64_t r
    with nogil:
        r = fl_ngram_prefixes(kp, cp, m, bits, <uint64_t *>cnp.PyArray_DATA(prefix), <int64_t *>cnp.PyArray_DATA(total),
                              <uint64_t *>cnp.PyArray_DATA(rank))
    return prefix[:r].copy(), total[:r].copy(), rank[:m]


def ngram_merge(list keys, list counts, list remaps, bint want_rank=True):
    """(distinct keys, summed counts, per run the output index of each entry, or Nones without want_rank)
    of the ascending runs keys[r] (at most 64), run r's parents re-keyed to remaps[r][parent] (remaps[r]
    None: order 1). A parent outside its remap raises ValueError."""
    cdef int nruns = len(keys)
    if not len(counts) == len(remaps) == nruns or nruns > 64:
        raise ValueError("internal: ngram_merge arguments")
    cdef fl_ngram_run runs[64]
    cdef int64_t total = 0
    cdef int r
    ranks = [np.empty(a.shape[0], np.int64) if want_rank else None for a in keys]
    for r in range(nruns):
        if counts[r].shape[0] != keys[r].shape[0]:
            raise ValueError("internal: ngram_merge arguments")
        runs[r].keys = <const uint64_t *>_data(keys[r], cnp.NPY_UINT64, "keys")
        runs[r].counts = <const int64_t *>_data(counts[r], cnp.NPY_INT64, "counts")
        runs[r].n = keys[r].shape[0]
        runs[r].rank = <int64_t *>_data(ranks[r], cnp.NPY_INT64, "rank") if want_rank else NULL
        runs[r].remap = NULL if remaps[r] is None else <const int64_t *>_data(remaps[r], cnp.NPY_INT64, "remap")
        runs[r].nremap = 0 if remaps[r] is None else remaps[r].shape[0]
        total += runs[r].n
    cdef cnp.ndarray out_keys = np.empty(max(total, 1), np.uint64)
    cdef cnp.ndarray out_counts = np.empty(max(total, 1), np.int64)
    cdef int64_t m
    with nogil:
        m = fl_ngram_merge(runs, nruns, <uint64_t *>cnp.PyArray_DATA(out_keys), <int64_t *>cnp.PyArray_DATA(out_counts))
    if m < 0:
        raise ValueError("count tables to merge are inconsistent: a key's parent is outside the order below")
    out_keys.resize(m, refcheck=False)  # (shrinks in place)
    out_counts.resize(m, refcheck=False)
    return out_keys, out_counts, ranks


cdef int _log2cap(int64_t m) except -1:
    """Slots for m keys: the power of two at least 2m (load <= 1/2)."""
    if m >= 2**30:
        raise ValueError("more than 2^30 distinct n-grams of one order")
    cdef int log2cap = 4
    while (1 << log2cap) < 2 * m:
        log2cap += 1
    return log2cap


def ngram_index(cnp.ndarray keys):
    """(log2 capacity, slots): the hash index of distinct keys; slots is uint64 (capacity, 2), each row a key
    and its index (all ones: empty)."""
    cdef int log2cap = _log2cap(keys.shape[0])
    cdef cnp.ndarray slots = np.empty((1 << log2cap, 2), np.uint64)
    cdef const uint64_t *kp = <const uint64_t *>_data(keys, cnp.NPY_UINT64, "keys")
    with nogil:
        fl_ngram_index(kp, keys.shape[0], log2cap, <fl_ngram_slot *>cnp.PyArray_DATA(slots))
    return log2cap, slots


def ngram_entries(cnp.ndarray keys, v0, v1):
    """(log2 capacity, slots) of the scoring table of distinct keys with two float64 values each (None: 0):
    slots is a 32-byte aligned (capacity, 4) uint64 array, each row an entry: key, index, two values."""
    cdef int64_t m = keys.shape[0]
    cdef int log2cap = _log2cap(m)
    cdef const uint64_t *kp = <const uint64_t *>_data(keys, cnp.NPY_UINT64, "keys")
    a0, a1 = _f64_in(v0, m), _f64_in(v1, m)  # (held until the call returns)
    cdef const double *p0 = NULL if a0 is None else <const double *>_data(a0, cnp.NPY_FLOAT64, "v0")
    cdef const double *p1 = NULL if a1 is None else <const double *>_data(a1, cnp.NPY_FLOAT64, "v1")
    buf = np.empty(4 * (1 << log2cap) + 4, np.uint64)  # (an entry never straddles two cache lines)
    cdef int64_t skip = (-(<intptr_t>cnp.PyArray_DATA(buf)) & 31) // 8
    cdef cnp.ndarray slots = buf[skip:skip + 4 * (1 << log2cap)].reshape(1 << log2cap, 4)
    with nogil:
        fl_ngram_entries(kp, m, log2cap, p0, p1, <fl_ngram_entry *>cnp.PyArray_DATA(slots))
    return log2cap, slots


cdef _f64_in(v, int64_t m):
    if v is None:
        return None
    a = np.ascontiguousarray(v, np.float64)
    if a.ndim != 1 or a.shape[0] != m:
        raise ValueError("internal: n-gram values must be (m,)")
    return a


cdef const void *_slots(int log2cap, cnp.ndarray slots, int width) except NULL:
    """The slots of ngram_index (width 2) or ngram_entries (width 4), checked."""
    if slots.ndim != 2 or slots.shape[0] != (1 << log2cap) or slots.shape[1] != width or not slots.flags.c_contiguous:
        raise ValueError("internal: n-gram index slots")
    return _data(slots.reshape(-1), cnp.NPY_UINT64, "slots")


def ngram_find(int log2cap, cnp.ndarray slots, cnp.ndarray queries):
    """Indices of the queried keys in the indexed keys (-1 where absent)."""
    cdef const fl_ngram_slot *sp = <const fl_ngram_slot *>_slots(log2cap, slots, 2)
    cdef const uint64_t *qp = <const uint64_t *>_data(queries, cnp.NPY_UINT64, "queries")
    cdef int64_t nq = queries.shape[0]
    cdef cnp.ndarray out = np.empty(max(nq, 1), np.int64)
    with nogil:
        fl_ngram_find(log2cap, sp, qp, nq, <int64_t *>cnp.PyArray_DATA(out))
    return out[:nq]


def kn_order(cnp.ndarray keys, bint unigrams, cnp.ndarray a, pruned, d, suffix, lower, double lower_uniform,
             int64_t contexts):
    """(p per entry, gamma per context) of one order of modified Kneser-Ney (csrc/kneser_ney.c)."""
    cdef int64_t m = keys.shape[0]
    if a.shape[0] != m or (lower is not None and (suffix is None or suffix.shape[0] != m)) or contexts < 1 \
            or (pruned is not None and pruned.shape[0] != m):
        raise ValueError("internal: kn_order arguments")
    pr = None if pruned is None else np.ascontiguousarray(pruned, dtype=np.bool_).view(np.uint8)
    cdef const uint8_t *rp = NULL if pr is None else <const uint8_t *>_data(pr, cnp.NPY_UINT8, "pruned")
    if m and not unigrams and int(keys[m - 1] >> np.uint64(32)) >= contexts:
        raise ValueError("internal: kn_order contexts")
    cdef double dd[4]
    for i in range(4):
        dd[i] = d[i]
    cdef const uint64_t *kp = <const uint64_t *>_data(keys, cnp.NPY_UINT64, "keys")
    cdef const int64_t *ap = <const int64_t *>_data(a, cnp.NPY_INT64, "a")
    cdef const int64_t *sp = NULL if suffix is None else <const int64_t *>_data(suffix, cnp.NPY_INT64, "suffix")
    cdef const double *lp = NULL if lower is None else <const double *>_data(lower, cnp.NPY_FLOAT64, "lower")
    if lower is not None and m and (int(suffix.min()) < 0 or int(suffix.max()) >= lower.shape[0]):
        raise ValueError("internal: kn_order suffix")
    p = np.empty(max(m, 1), np.float64)
    gamma = np.zeros(contexts, np.float64)
    cdef double *pp = <double *>cnp.PyArray_DATA(p)
    cdef double *gp = <double *>cnp.PyArray_DATA(gamma)
    cdef int shift = 0 if unigrams else 32
    with nogil:
        fl_kn_order(kp, shift, ap, rp, m, dd, sp, lp, lower_uniform, pp, gp)
    return p[:m], gamma


cdef void _words_free(object capsule) noexcept:
    fl_words_free(<fl_words *>PyCapsule_GetPointer(capsule, "fastlm.words"))


cdef fl_words *_words(object table) except NULL:
    return <fl_words *>PyCapsule_GetPointer(table, "fastlm.words")


def words_new():
    """A new word table (csrc/words.c), freed with its last reference."""
    cdef fl_words *v = fl_words_new()
    if v == NULL:
        raise MemoryError("fastlm: word table")
    return PyCapsule_New(<void *>v, "fastlm.words", <PyCapsule_Destructor>_words_free)


def words_size(table):
    return fl_words_size(_words(table))


def words_add(table, list words):
    """Add words (bytes) in order: each new word gets the next index."""
    cdef fl_words *v = _words(table)
    cdef bytes buf = b"".join(words)
    cdef cnp.ndarray off = np.zeros(len(words) + 1, np.int64)
    np.cumsum(np.fromiter(map(len, words), np.int64, len(words)), out=off[1:])
    cdef const char *bp = buf
    cdef int rc
    cdef int64_t n = len(words)
    with nogil:
        rc = fl_words_add(v, bp, <const int64_t *>cnp.PyArray_DATA(off), n)
    if rc:
        raise MemoryError("fastlm: word table")


def words_encode(table, bytes text, cnp.ndarray item_off, bint grow, int64_t unknown, int num_threads=1,
                 pre=(), int64_t post=-1):
    """(ids int64, ids per item int64) of the items text[item_off[j]:item_off[j+1]], each item's word ids
    between the ids `pre` and `post` (-1: none); without grow, on num_threads threads."""
    cdef fl_words *v = _words(table)
    cdef int64_t nitems = item_off.shape[0] - 1
    if nitems < 0 or item_off[0] != 0 or item_off[nitems] != len(text) or np.any(np.diff(item_off) < 0):
        raise ValueError("internal: words_encode offsets")
    cdef cnp.ndarray pre_ids = np.ascontiguousarray(pre, np.int64).reshape(-1)
    cdef fl_words_frame frame
    frame.pre, frame.npre, frame.post = <const int64_t *>_data(pre_ids, cnp.NPY_INT64, "pre"), pre_ids.shape[0], post
    cdef cnp.ndarray ids = np.empty((len(text) + 1) // 2 + nitems * (2 + frame.npre) + 1, np.int64)
    cdef cnp.ndarray lengths = np.empty(max(nitems, 1), np.int64)
    cdef const char *tp = text
    cdef int64_t n
    with nogil:
        if grow:
            n = fl_words_encode(v, tp, <const int64_t *>cnp.PyArray_DATA(item_off), nitems, grow, unknown, &frame,
                                <int64_t *>cnp.PyArray_DATA(ids), <int64_t *>cnp.PyArray_DATA(lengths))
        else:
            n = fl_words_encode_frozen(v, tp, <const int64_t *>cnp.PyArray_DATA(item_off), nitems, unknown, &frame,
                                       <int64_t *>cnp.PyArray_DATA(ids), <int64_t *>cnp.PyArray_DATA(lengths),
                                       num_threads)
    if n < 0:
        raise MemoryError("fastlm: word table")
    return ids[:n], lengths[:nitems]


def words_export(table):
    """(the words as one bytes object, their n + 1 offsets, their counts)."""
    cdef fl_words *v = _words(table)
    cdef int64_t n = fl_words_size(v)
    cdef cnp.ndarray off = np.empty(n + 1, np.int64)
    cdef cnp.ndarray count = np.empty(max(n, 1), np.int64)
    cdef int64_t *offp = <int64_t *>cnp.PyArray_DATA(off)
    cdef int64_t *countp = <int64_t *>cnp.PyArray_DATA(count)
    with nogil:
        fl_words_export(v, NULL, offp, countp)
    out = bytearray(off[n])
    cdef char *op = out
    with nogil:
        fl_words_export(v, op, offp, countp)
    return bytes(out), off, count[:n]


def words_set_ids(table, cnp.ndarray ids):
    """The id each word encodes to (negative: left out)."""
    cdef fl_words *v = _words(table)
    if ids.shape[0] != fl_words_size(v):
        raise ValueError("internal: words_set_ids size")
    ids = np.ascontiguousarray(ids, np.int64)
    cdef const int64_t *ip = <const int64_t *>cnp.PyArray_DATA(ids)
    with nogil:
        fl_words_set_ids(v, ip)


def arpa_lines(cnp.ndarray ids, cnp.ndarray prob, backoff, real, bytes words, cnp.ndarray word_off):
    """The ARPA lines (a memoryview of bytes) of one order: ids (m, k) uint32, prob (m,), backoff (m,) or None, real (m,)
    bool or None; words: the UTF-8 words concatenated, word_off: their m + 1 offsets."""
    cdef int64_t m = ids.shape[0]
    cdef int k = ids.shape[1]
    if ids.ndim != 2 or not ids.flags.c_contiguous or ids.dtype != np.uint32 or prob.shape[0] != m \
            or (backoff is not None and backoff.shape[0] != m) or (real is not None and real.shape[0] != m):
        raise ValueError("internal: arpa_lines arguments")
    if m and int(ids.max()) + 1 >= word_off.shape[0]:
        raise ValueError("internal: arpa_lines word id beyond the words")
    cdef int64_t cap = 64 * m + 32 + (int(np.diff(word_off).max(initial=0)) + 1) * k * m
    cdef cnp.ndarray out = np.empty(cap, np.uint8)  # (not zero-filled)
    cdef char *op = <char *>cnp.PyArray_DATA(out)
    cdef const uint32_t *ip = <const uint32_t *>cnp.PyArray_DATA(ids) if m else <const uint32_t *>1
    cdef const double *pp = <const double *>_data(prob, cnp.NPY_FLOAT64, "prob")
    cdef const double *bp = NULL if backoff is None else <const double *>_data(backoff, cnp.NPY_FLOAT64, "backoff")
    cdef const uint8_t *rp = NULL if real is None else <const uint8_t *>_data(real.view(np.uint8), cnp.NPY_UINT8,
                                                                              "real")
    cdef const char *wp = words
    cdef const int64_t *op_ = <const int64_t *>_data(word_off, cnp.NPY_INT64, "word_off")
    cdef int64_t n
    with nogil:
        n = fl_arpa_lines(k, m, ip, pp, bp, rp, wp, op_, op, cap)
    if n < 0:
        raise ValueError("internal: arpa_lines buffer")
    return memoryview(out[:n])


def ngram_score(orders, bint add_alpha, double alpha, double vocab, double unigram_total, double unseen,
                int64_t unk_word, cnp.ndarray tokens, cnp.ndarray starts, int64_t skip, bint per_token,
                int num_threads):
    """Scores every sequence of tokens (uint32) split at starts against the tables in `orders` (per order
    ngram_entries' (log2cap, slots)). Returns (seq_logp, seq_unseen, logp, matched, unseen), the last three
    None unless per_token."""
    cdef fl_ngram_model m
    cdef int64_t nseq = _nseq(tokens, starts)
    cdef int n = len(orders), k
    if not 1 <= n <= 64:
        raise ValueError("internal: ngram_score order")
    m.order, m.add_alpha, m.alpha, m.vocab, m.unigram_total, m.unseen = n, add_alpha, alpha, vocab, unigram_total, unseen
    m.unk_word = unk_word
    for k in range(n):
        log2cap, slots = orders[k]
        m.t[k].slots = <const fl_ngram_entry *>_slots(log2cap, slots, 4)
        m.t[k].log2cap = log2cap
    cdef const uint32_t *tp = <const uint32_t *>_data(tokens, cnp.NPY_UINT32, "tokens")
    cdef const int64_t *sp = <const int64_t *>_data(starts, cnp.NPY_INT64, "starts")
    cdef int64_t T = tokens.shape[0]
    seq_logp = np.empty(max(nseq, 1), np.float64)
    seq_unseen = np.empty(max(nseq, 1), np.int64)
    logp = np.empty(max(T, 1), np.float64) if per_token else None
    matched = np.empty(max(T, 1), np.int32) if per_token else None
    unseen_tok = np.empty(max(T, 1), np.uint8) if per_token else None
    cdef double *lp = NULL if logp is None else <double *>cnp.PyArray_DATA(logp)
    cdef int32_t *mp = NULL if matched is None else <int32_t *>cnp.PyArray_DATA(matched)
    cdef uint8_t *up = NULL if unseen_tok is None else <uint8_t *>cnp.PyArray_DATA(unseen_tok)
    cdef double *slp = <double *>cnp.PyArray_DATA(seq_logp)
    cdef int64_t *sup = <int64_t *>cnp.PyArray_DATA(seq_unseen)
    cdef int rc
    with nogil:
        rc = fl_ngram_score(&m, tp, sp, nseq, skip, lp, mp, up, slp, sup, num_threads)
    if rc:
        raise MemoryError("fastlm: n-gram scoring")
    if per_token:
        return seq_logp[:nseq], seq_unseen[:nseq], logp[:T], matched[:T], unseen_tok[:T].view(bool)
    return seq_logp[:nseq], seq_unseen[:nseq], None, None, None


# ------------------------------------------------------------------------------------------- metrics

cdef double *_f64_out(cnp.ndarray a, int64_t n, str name) except NULL:
    if a.ndim != 1 or a.shape[0] != n or a.dtype.num != cnp.NPY_FLOAT64 or not a.flags.c_contiguous \
            or not a.flags.writeable:
        raise ValueError(f"internal: {name} must be writable float64 ({n},)")
    return <double *>cnp.PyArray_DATA(a) if n else <double *>1


ctypedef int (*_reduce_f32)(const float *, const fl_rows *, double *) noexcept nogil
ctypedef int (*_reduce_f64)(const double *, const fl_rows *, double *) noexcept nogil


cdef _reduce_rows(cnp.ndarray x, cnp.ndarray out, int num_threads, _reduce_f32 k32, _reduce_f64 k64):
    """One float64 per row of x into out, by the kernel pair for x's dtype."""
    cdef fl_rows r = _rows(x, None, num_threads)
    cdef double *op = _f64_out(out, r.rows, "out")
    cdef bint f32 = x.dtype.num == cnp.NPY_FLOAT32
    cdef void *xp = cnp.PyArray_DATA(x)
    cdef int st
    with nogil:
        st = k32(<const float *>xp, &r, op) if f32 else k64(<const double *>xp, &r, op)
    _check(st)


def entropy_rows(cnp.ndarray x, cnp.ndarray out, int num_threads):
    _reduce_rows(x, out, num_threads, fl_entropy_f32, fl_entropy_f64)


def kl_rows(cnp.ndarray p, cnp.ndarray q, cnp.ndarray out, int num_threads):
    """KL per row; q has p's shape and dtype (its rows may be strided differently)."""
    cdef fl_rows r = _rows(p, None, num_threads)
    if q.ndim != 2 or q.shape[0] != r.rows or q.shape[1] != r.cols or q.dtype.num != p.dtype.num:
        raise ValueError("internal: q must match p")
    r.y_stride = _row_stride(q, p.itemsize)
    cdef double *op = _f64_out(out, r.rows, "out")
    cdef bint f32 = p.dtype.num == cnp.NPY_FLOAT32
    cdef void *pp = cnp.PyArray_DATA(p)
    cdef void *qp = cnp.PyArray_DATA(q)
    cdef int st
    with nogil:
        if f32:
            st = fl_kl_f32(<const float *>pp, <const float *>qp, &r, op)
        else:
            st = fl_kl_f64(<const double *>pp, <const double *>qp, &r, op)
    _check(st)


def rowmax(cnp.ndarray x, cnp.ndarray out):
    _reduce_rows(x, out, 1, fl_rowmax_f32, fl_rowmax_f64)


def temperature_stats(cnp.ndarray x, cnp.ndarray y, cnp.ndarray xmax, double beta, cnp.ndarray nll, cnp.ndarray g,
                      cnp.ndarray v, int num_threads):
    cdef fl_rows r = _rows(x, None, num_threads)
    cdef const int64_t *yp = <const int64_t *>_vec(y, r.rows, cnp.NPY_INT64, "labels")
    cdef const double *mp = <const double *>_vec(xmax, r.rows, cnp.NPY_FLOAT64, "xmax")
    cdef double *np_ = _f64_out(nll, r.rows, "nll")
    cdef double *gp = _f64_out(g, r.rows, "g")
    cdef double *vp = _f64_out(v, r.rows, "v")
    cdef bint f32 = x.dtype.num == cnp.NPY_FLOAT32
    cdef void *xp = cnp.PyArray_DATA(x)
    cdef int st
    with nogil:
        if f32:
            st = fl_temperature_stats_f32(<const float *>xp, &r, yp, mp, beta, np_, gp, vp)
        else:
            st = fl_temperature_stats_f64(<const double *>xp, &r, yp, mp, beta, np_, gp, vp)
    _check(st)
