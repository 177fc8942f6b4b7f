/* dispatch.c: CPU feature detection and the choice of kernel table, once at load.
 * FL_HAVE_AVX2 / FL_HAVE_AVX512 / FL_HAVE_NEON say which levels this build compiled (CMake). */
#include <stddef.h>
#include <stdlib.h>
#include "dispatch.h"
#ifdef _OPENMP
#include <omp.h>
#endif

#define FL_LEVEL(level) {&fl_softmax_f32_##level, &fl_softmax_f64_##level, &fl_select_f32_##level, &fl_select_f64_##level}
static const fl_level_kernels levels[4] = {
    [FL_SIMD_SCALAR] = FL_LEVEL(scalar),
#ifdef FL_HAVE_AVX2
    [FL_SIMD_AVX2] = FL_LEVEL(avx2),
#endif
#ifdef FL_HAVE_AVX512
    [FL_SIMD_AVX512] = FL_LEVEL(avx512),
#endif
#ifdef FL_HAVE_NEON
    [FL_SIMD_NEON] = FL_LEVEL(neon),
#endif
};

static const char *const names[4] = {"scalar", "avx2", "avx512", "neon"};

const char *fl_simd_name(int level) { return level >= 0 && level < 4 ? names[level] : "unknown"; }

int fl_simd_compiled(int level) { return level >= 0 && level < 4 && levels[level].softmax_f32 != NULL; }

static int cpu_has(int level) {
    switch (level) {
    case FL_SIMD_SCALAR: return 1;
#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
    /* __builtin_cpu_supports also checks that the OS saves the wide registers (XCR0). */
    case FL_SIMD_AVX2: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case FL_SIMD_AVX512:
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
               __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
               __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
    case FL_SIMD_NEON: return fl_simd_compiled(FL_SIMD_NEON); /* baseline wherever it is compiled (arm64) */
    default: return 0;
    }
}

int fl_simd_supported(int level) { return fl_simd_compiled(level) && cpu_has(level); }

static int best_level(void) {
    if (fl_simd_supported(FL_SIMD_NEON)) return FL_SIMD_NEON;
    if (fl_simd_supported(FL_SIMD_AVX512)) return FL_SIMD_AVX512;
    if (fl_simd_supported(FL_SIMD_AVX2)) return FL_SIMD_AVX2;
    return FL_SIMD_SCALAR;
}

static int active = -1;

int fl_simd_active(void) {
    if (active < 0) active = best_level();
    return active;
}

int fl_simd_select(int level) {
    if (!fl_simd_supported(level)) return FL_ERR_ARG;
    active = level;
    return FL_OK;
}

const fl_level_kernels *fl_active(void) { return &levels[fl_simd_active()]; }

int fl_openmp_enabled(void) {
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

int fl_max_threads(void) {
#ifdef _OPENMP
    return omp_get_num_procs();
#else
    return 1;
#endif
}

/* ---------------------------------------------------------------------------------- scratch memory */
/* Under AddressSanitizer (FASTLM_SANITIZE) the cached block is reallocated whenever the size asked for
 * changes, so that every request has its exact bounds and an overrun of it is reported. */
#if defined(__SANITIZE_ADDRESS__)
#define FL_SCRATCH_EXACT 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FL_SCRATCH_EXACT 1
#endif
#endif
#ifndef FL_SCRATCH_EXACT
#define FL_SCRATCH_EXACT 0
#endif

#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
typedef struct {
    void *p;
    size_t n;
    int busy; /* handed out and not yet released: a nested request gets its own block */
} fl_buf;
static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;
static void scratch_destroy(void *b) {
    free(((fl_buf *)b)->p);
    free(b);
}
static void scratch_init(void) { pthread_key_create(&scratch_key, scratch_destroy); }

void *fl_scratch(size_t bytes) {
    if (bytes > FL_SCRATCH_CACHE) return malloc(bytes);
    pthread_once(&scratch_once, scratch_init);
    fl_buf *b = pthread_getspecific(scratch_key);
    if (!b) {
        if (!(b = calloc(1, sizeof *b))) return NULL;
        pthread_setspecific(scratch_key, b);
    }
    if (b->busy) return malloc(bytes);
    if (b->n < bytes || (FL_SCRATCH_EXACT && b->n != bytes)) {
        free(b->p);
        b->p = malloc(bytes);
        b->n = b->p ? bytes : 0;
    }
    b->busy = b->p != NULL;
    return b->p;
}
void fl_scratch_release(void *p, size_t bytes) {
    fl_buf *b = bytes > FL_SCRATCH_CACHE ? NULL : pthread_getspecific(scratch_key);
    if (b && p && p == b->p)
        b->busy = 0;
    else
        free(p);
}
#else /* no thread-local cache: allocate per call */
void *fl_scratch(size_t bytes) { return malloc(bytes); }
void fl_scratch_release(void *p, size_t bytes) {
    (void)bytes;
    free(p);
}
#endif
