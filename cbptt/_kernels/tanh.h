/* The kernels' float32 tanh, as a scalar function for loops the compiler
 * vectorizes; small_gemm.h evaluates the same expression on AVX-512 / AVX2
 * vectors with these coefficients.
 *
 * Why: libm's tanhf is a scalar call that cost more than the GEMMs at small
 * H. This is x * P(x^2) / Q(x^2) on the input clamped to [-9, 9] (|tanh|
 * rounds to 1 beyond), the result clamped to [-1, 1]: branch-free, so it
 * vectorizes. Coefficients fitted to tanh by least squares on the relative
 * error: under 6 ulp on a dense sample of floats over the whole range, which
 * tests/test_kernels.py checks for both forms.
 */
#ifndef CBPTT_TANH_H
#define CBPTT_TANH_H

#define CBPTT_TANH_P4 1.3671897391986931e-08f
#define CBPTT_TANH_P3 2.0838324417127296e-05f
#define CBPTT_TANH_P2 0.003509531496092677f
#define CBPTT_TANH_P1 0.13392770290374756f
#define CBPTT_TANH_Q4 7.906486416686676e-07f
#define CBPTT_TANH_Q3 0.0003308428858872503f
#define CBPTT_TANH_Q2 0.025930041447281837f
#define CBPTT_TANH_Q1 0.4672608971595764f

static inline float cbptt_tanhf(float x)
{
    float z, p, q;
    x = x < 9.0f ? x : 9.0f;
    x = x > -9.0f ? x : -9.0f;
    z = x * x;
    p = (((CBPTT_TANH_P4 * z + CBPTT_TANH_P3) * z + CBPTT_TANH_P2) * z
         + CBPTT_TANH_P1) * z + 1.0f;
    q = (((CBPTT_TANH_Q4 * z + CBPTT_TANH_Q3) * z + CBPTT_TANH_Q2) * z
         + CBPTT_TANH_Q1) * z + 1.0f;
    x = x * p / q;
    x = x < 1.0f ? x : 1.0f;
    return x > -1.0f ? x : -1.0f;
}

#endif
