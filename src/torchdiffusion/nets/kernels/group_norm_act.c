/* Fused GroupNorm + per-sample affine + optional SiLU for channels-last (NHWC) tensors, forward and backward.
 *
 * Why: PyTorch 2.13's CPU GroupNorm on channels_last tensors runs ~10x (fp32) to ~80x (bf16) slower than on
 * contiguous ones (docs/bench-train.md), which makes channels_last - the faster layout for oneDNN's
 * convolutions - lose overall. This kernel makes the normalisation a memory-bound pass again.
 *
 * Layout: x[b][s][c], b < B samples, s < S spatial positions, c < C channels (a channels_last (B, C, H, W)
 * tensor's memory, or (B, L, C)). Groups are G consecutive channel blocks of Cg = C / G channels.
 *
 *   forward:   mu, var = mean and (biased) variance of x over (s, c in g)       per (b, g)
 *              xh = (x - mu) * rstd,  rstd = 1 / sqrt(var + eps)
 *              z = xh * gain[b, c] + bias[b, c];  y = silu(z) = z * sigmoid(z)  (or y = z)
 *   backward:  dz = dy * sigmoid(z) * (1 + z * (1 - sigmoid(z)))                 (or dz = dy)
 *              dbias[b, c] = sum_s dz;  dgain[b, c] = sum_s dz * xh
 *              dxh = dz * gain;  dx = rstd * (dxh - mean_g(dxh) - xh * mean_g(dxh * xh))
 *   (the standard normalisation backward, e.g. Wu & He 2018's GroupNorm with the chain rule through SiLU).
 *
 * Statistics and reductions sum blocks of ROWS rows in float and add each block to double totals; element math
 * is float, storage is float or bf16 (bf16 in and out, rounded to nearest even like PyTorch). Work is split over
 * samples (OpenMP): each sample's sums run in a fixed order, so results do not depend on the thread count.
 * gain/bias are float (B, C) with a sample stride of C (per-sample) or 0 (one affine shared by the batch).
 *
 * Built and loaded by torchdiffusion/nets/fused.py with the system C compiler; no PyTorch headers.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef uint16_t bf16;

static inline float bf16_to_float(bf16 h) {
    uint32_t u = ((uint32_t)h) << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline bf16 float_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16; /* round to nearest, ties to even */
    return (bf16)(f != f ? 0x7fc0u : rounded);                 /* NaN stays a (quiet) NaN */
}

static inline float f32_load(float v) { return v; }
static inline float f32_store(float v) { return v; }

/* exp(x) for the sigmoid, vectorisable (no libm call): x = n ln2 + r, |r| <= ln2 / 2, e^r by a degree-6
 * Taylor polynomial (relative error < 2e-7), times 2^n built in the exponent bits. x is clamped to
 * [-87, 87] (e^87 ~ 6e37 stays finite); a NaN fails the first comparison and becomes 87, so the float-to-int
 * conversion below is always defined - the callers multiply by z itself, which carries the NaN on. */
static inline float fast_exp(float x) {
    x = x < 87.0f ? x : 87.0f;
    x = x > -87.0f ? x : -87.0f;
    float t = x * 1.44269504088896341f;
    float n = (t + 12582912.0f) - 12582912.0f; /* round to nearest integer (1.5 * 2^23 trick) */
    float r = x - n * 0.693145751953125f;      /* ln2, split hi + lo for an exact product */
    r = r - n * 1.428606765330187e-06f;
    float p = 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    uint32_t e = (uint32_t)((int32_t)n + 127) << 23; /* n in [-126, 126]: a normal power of two */
    float scale;
    memcpy(&scale, &e, 4);
    return p * scale;
}

static inline float sigmoid(float z) { return 1.0f / (1.0f + fast_exp(-z)); }

/* Rows of a sample summed in float before each partial sum is added to the double totals: float vectorises twice
 * as wide, and a block this short keeps float's rounding (~ROWS * 2^-24 of the block's magnitude) far below the
 * tests' 2e-6. */
#define ROWS 16

/* Per (b, g): mean and rstd from per-channel sums of shifted values (Chan, Golub & LeVeque's pairwise update).
 * Channel c has n = S values v with shift k_c (its first value), s1_c = sum (v - k_c), s2_c = sum (v - k_c)^2:
 *   m_c = k_c + s1_c / n,   SS_c = s2_c - s1_c^2 / n              (the channel's mean and sum of squares about it)
 *   mu_g = mean_c m_c,      var_g = sum_c (SS_c + n (m_c - mu_g)^2) / (n Cg)
 * The shift keeps a large mean with a small spread exact (x - k_c is exact when x and k_c are close). */
static void group_stats(const double *s1, const double *s2, const float *shift, long S, long C, long G, float eps,
                        float *mean, float *rstd) {
    long Cg = C / G;
    double n = (double)S;
    for (long g = 0; g < G; g++) {
        double mu = 0.0, ss = 0.0;
        for (long c = g * Cg; c < (g + 1) * Cg; c++) mu += (double)shift[c] + s1[c] / n;
        mu /= (double)Cg;
        for (long c = g * Cg; c < (g + 1) * Cg; c++) {
            double mc = (double)shift[c] + s1[c] / n;
            ss += (s2[c] - s1[c] * s1[c] / n) + n * (mc - mu) * (mc - mu);
        }
        double var = ss / (n * (double)Cg);
        var = var < 0.0 ? 0.0 : var;
        mean[g] = (float)mu;
        rstd[g] = (float)(1.0 / sqrt(var + (double)eps));
    }
}

#define DEFINE_KERNELS(SUFFIX, T, LOAD, STORE)                                                                   \
    int gn_act_forward_##SUFFIX(const T *x, T *y, const float *gain, const float *bias, long affine_stride,    \
                                float *mean, float *rstd, long B, long S, long C, long G, float eps, int silu,  \
                                int threads) {                                                                 \
        int failed = 0;                                                                                        \
        _Pragma("omp parallel num_threads(threads) reduction(| : failed)") {                                   \
            double *sum = malloc(sizeof(double) * 2 * C);                                                      \
            float *k = malloc(sizeof(float) * 5 * C);                                                          \
            if (!sum || !k) failed = 1;                                                                        \
            _Pragma("omp for schedule(static)") for (long b = 0; b < B; b++) {                                 \
                if (failed) continue;                                                                          \
                double *sq = sum + C;                                                                          \
                float *shift = k + 2 * C, *p1 = k + 3 * C, *p2 = k + 4 * C;                                    \
                const T *xb = x + b * S * C;                                                                   \
                T *yb = y + b * S * C;                                                                         \
                for (long c = 0; c < C; c++) {                                                                 \
                    sum[c] = sq[c] = 0.0;                                                                      \
                    shift[c] = LOAD(xb[c]);                                                                    \
                }                                                                                              \
                for (long s0 = 0; s0 < S; s0 += ROWS) {                                                        \
                    long s1 = s0 + ROWS < S ? s0 + ROWS : S;                                                   \
                    for (long c = 0; c < C; c++) p1[c] = p2[c] = 0.0f;                                         \
                    for (long s = s0; s < s1; s++) {                                                           \
                        const T *row = xb + s * C;                                                             \
                        for (long c = 0; c < C; c++) {                                                         \
                            float v = LOAD(row[c]) - shift[c];                                                 \
                            p1[c] += v;                                                                        \
                            p2[c] += v * v;                                                                    \
                        }                                                                                      \
                    }                                                                                          \
                    for (long c = 0; c < C; c++) {                                                             \
                        sum[c] += (double)p1[c];                                                               \
                        sq[c] += (double)p2[c];                                                                \
                    }                                                                                          \
                }                                                                                              \
                float *mb = mean + b * G, *rb = rstd + b * G;                                                  \
                group_stats(sum, sq, shift, S, C, G, eps, mb, rb);                                                    \
                /* z = x * a_c + o_c with a_c = rstd_g gain_c, o_c = bias_c - mu_g a_c */                       \
                float *a = k, *o = k + C;                                                                      \
                const float *gb = gain + b * affine_stride, *bb = bias + b * affine_stride;                    \
                long Cg = C / G;                                                                               \
                for (long c = 0; c < C; c++) {                                                                 \
                    a[c] = rb[c / Cg] * gb[c];                                                                 \
                    o[c] = bb[c] - mb[c / Cg] * a[c];                                                          \
                }                                                                                              \
                for (long s = 0; s < S; s++) {                                                                 \
                    const T *row = xb + s * C;                                                                 \
                    T *out = yb + s * C;                                                                       \
                    if (silu) {                                                                                \
                        for (long c = 0; c < C; c++) {                                                         \
                            float z = LOAD(row[c]) * a[c] + o[c];                                              \
                            out[c] = STORE(z * sigmoid(z));                                                    \
                        }                                                                                      \
                    } else {                                                                                   \
                        for (long c = 0; c < C; c++) out[c] = STORE(LOAD(row[c]) * a[c] + o[c]);              \
                    }                                                                                          \
                }                                                                                              \
            }                                                                                                  \
            free(sum);                                                                                         \
            free(k);                                                                                           \
        }                                                                                                      \
        return failed;                                                                                         \
    }                                                                                                          \
                                                                                                               \
    int gn_act_backward_##SUFFIX(const T *x, const T *dy, T *dx, const float *gain, const float *bias,         \
                                 long affine_stride, const float *mean, const float *rstd, float *dgain,        \
                                 float *dbias, long B, long S, long C, long G, int silu, int threads) {         \
        int failed = 0;                                                                                        \
        _Pragma("omp parallel num_threads(threads) reduction(| : failed)") {                                   \
            double *acc = malloc(sizeof(double) * 2 * C);                                                      \
            float *k = malloc(sizeof(float) * 5 * C);                                                          \
            float *dz = malloc(sizeof(float) * (S + 2) * C);                                                         \
            if (!acc || !k || !dz) failed = 1;                                                                 \
            _Pragma("omp for schedule(static)") for (long b = 0; b < B; b++) {                                 \
                if (failed) continue;                                                                          \
                long Cg = C / G;                                                                               \
                double *adb = acc, *adg = acc + C;                                                             \
                float *r = k, *q = k + C, *k1 = k + 2 * C, *k2 = k + 3 * C, *k3 = k + 4 * C;                   \
                const T *xb = x + b * S * C, *dyb = dy + b * S * C;                                            \
                T *dxb = dx + b * S * C;                                                                       \
                const float *gb = gain + b * affine_stride, *bb = bias + b * affine_stride;                    \
                const float *mb = mean + b * G, *rb = rstd + b * G;                                            \
                for (long c = 0; c < C; c++) {                                                                 \
                    r[c] = rb[c / Cg]; /* xh = x * r_c + q_c */                                                \
                    q[c] = -mb[c / Cg] * rb[c / Cg];                                                           \
                    adb[c] = 0.0;                                                                              \
                    adg[c] = 0.0;                                                                              \
                }                                                                                              \
                /* pass 1: dz (kept for pass 2), dbias = sum dz, dgain = sum dz xh (ROWS rows in float at a time); \
                 * one loop per case: with the SiLU test inside the loop gcc 12 made the plain case ~9x slower */ \
                float *p1 = dz + S * C, *p2 = p1 + C;                                                          \
                for (long s0 = 0; s0 < S; s0 += ROWS) {                                                        \
                    long s1 = s0 + ROWS < S ? s0 + ROWS : S;                                                   \
                    for (long c = 0; c < C; c++) p1[c] = p2[c] = 0.0f;                                         \
                    for (long s = s0; s < s1; s++) {                                                           \
                        const T *row = xb + s * C, *drow = dyb + s * C;                                        \
                        float *dzr = dz + s * C;                                                               \
                        if (silu) {                                                                            \
                            for (long c = 0; c < C; c++) {                                                     \
                                float xh = LOAD(row[c]) * r[c] + q[c];                                         \
                                float z = xh * gb[c] + bb[c];                                                  \
                                float sg = sigmoid(z);                                                         \
                                float d = LOAD(drow[c]) * sg * (1.0f + z * (1.0f - sg));                       \
                                dzr[c] = d;                                                                    \
                                p1[c] += d;                                                                    \
                                p2[c] += d * xh;                                                               \
                            }                                                                                  \
                        } else {                                                                               \
                            for (long c = 0; c < C; c++) {                                                     \
                                float xh = LOAD(row[c]) * r[c] + q[c];                                         \
                                float d = LOAD(drow[c]);                                                       \
                                dzr[c] = d;                                                                    \
                                p1[c] += d;                                                                    \
                                p2[c] += d * xh;                                                               \
                            }                                                                                  \
                        }                                                                                      \
                    }                                                                                          \
                    for (long c = 0; c < C; c++) {                                                             \
                        adb[c] += (double)p1[c];                                                               \
                        adg[c] += (double)p2[c];                                                               \
                    }                                                                                          \
                }                                                                                              \
                /* mean_g(dxh) = sum_{c in g} gain_c dbias_c / M, mean_g(dxh xh) = sum gain_c dgain_c / M */     \
                double M = (double)S * (double)Cg;                                                             \
                for (long g = 0; g < G; g++) {                                                                 \
                    double m1 = 0.0, m2 = 0.0;                                                                 \
                    for (long c = g * Cg; c < (g + 1) * Cg; c++) {                                             \
                        m1 += (double)gb[c] * adb[c];                                                          \
                        m2 += (double)gb[c] * adg[c];                                                          \
                    }                                                                                          \
                    m1 /= M;                                                                                   \
                    m2 /= M;                                                                                   \
                    /* dx = rstd (dz gain - m1 - xh m2) = dz k1 + x k2 + k3 */                                  \
                    for (long c = g * Cg; c < (g + 1) * Cg; c++) {                                             \
                        k1[c] = r[c] * gb[c];                                                                  \
                        k2[c] = (float)(-(double)r[c] * r[c] * m2);                                            \
                        k3[c] = (float)(-(double)r[c] * (m1 + q[c] * m2));                                     \
                    }                                                                                          \
                }                                                                                              \
                for (long c = 0; c < C; c++) {                                                                 \
                    dbias[b * C + c] = (float)adb[c];                                                          \
                    dgain[b * C + c] = (float)adg[c];                                                          \
                }                                                                                              \
                /* pass 2: dx */                                                                               \
                for (long s = 0; s < S; s++) {                                                                 \
                    const T *row = xb + s * C;                                                                 \
                    const float *dzr = dz + s * C;                                                             \
                    T *out = dxb + s * C;                                                                      \
                    for (long c = 0; c < C; c++) out[c] = STORE(dzr[c] * k1[c] + LOAD(row[c]) * k2[c] + k3[c]); \
                }                                                                                              \
            }                                                                                                  \
            free(acc);                                                                                         \
            free(k);                                                                                           \
            free(dz);                                                                                          \
        }                                                                                                      \
        return failed;                                                                                         \
    }

DEFINE_KERNELS(f32, float, f32_load, f32_store)
DEFINE_KERNELS(bf16, bf16, bf16_to_float, float_to_bf16)
