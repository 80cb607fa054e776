/* One sampling step of an LSTM language model at batch 1, in float32: rnnkit's native step.

   Compiled on first use by rnnkit/native.py (cc -O3 -march=native -fopenmp) and called through
   ctypes. At batch 1 a step is a few matrix-vector products (every weight read once) and a few
   thousand numbers of gate arithmetic. Through torch each of the two dozen small operations
   starts with its caches cold, because every product streams megabytes of weights through
   them; here the whole step is one call.

   Per layer l (PyTorch's gate order i, f, g, o; rows q*H + u of the (4H, K) weight):
       z = W_l [x_l ; h_l] + b_l        (layer 0: x_0 W_ih^T + b is a row of the token table)
       i, f, o = sigmoid(z_i, z_f, z_o)  g = tanh(z_g)
       c' = f * c + i * g               h' = o * tanh(c')
   Then logits = W_head h'_{L-1} + b_head, and the next token is drawn from them.

   Threads split the hidden units: a thread computes the four gate rows of its units, then
   their cell and output. h is double-buffered (the step reads one half and writes the other),
   so no thread overwrites an h that another still reads; a barrier separates the layers. */

#include <math.h>
#include <stdint.h>
#include <string.h>
#ifdef __AVX2__
#include <immintrin.h>
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

/* 8 lanes; aligned(4) lets them be read from any float address, may_alias from float arrays. */
typedef float v8f __attribute__((vector_size(32), aligned(4), may_alias));
typedef int32_t v8i __attribute__((vector_size(32), aligned(4), may_alias));
typedef uint16_t v8h __attribute__((vector_size(16), aligned(2), may_alias));
typedef int8_t v8b __attribute__((vector_size(8), aligned(1), may_alias));

enum { FP32 = 0, BF16 = 1, INT8 = 2 }; /* how the gate weights are stored */

typedef struct {
    int64_t layers, hidden, vocab, threads;
    int64_t kind;                /* FP32, BF16 (the upper halves of floats) or INT8 */
    const float *table;          /* (V, 4H): x W_ih0^T + b_ih0 + b_hh0 for every token */
    const void *const *weights;  /* L pointers: layer 0 (4H, H) = W_hh0; above (4H, 2H) */
    const float *const *scales;  /* INT8: L pointers to (4H,) row scales, W = q * s; else NULL */
    const float *const *biases;  /* L pointers to (4H,): b_ih + b_hh (layer 0's unused) */
    const float *head_weight;    /* (V, H), float32 */
    const float *head_bias;      /* (V,); banned tokens hold -inf */
    float *h;                    /* (2, L, H): the halves alternate, step by step */
    float *cells;                /* (L, H) */
    float *logits;               /* (V,) the last step's logits */
    int64_t parity;              /* the half of h that holds the current state */
    int64_t token;               /* the token the next step reads */
} Model;

static inline v8f load8(const float *p) { return *(const v8f *)p; }

/* 8 bfloat16 weights as floats: their bits are the upper halves of the floats' bits. */
static inline v8f load8_bf16(const uint16_t *p) {
    v8i bits = __builtin_convertvector(*(const v8h *)p, v8i) << 16;
    return (v8f)bits;
}

/* 8 int8 weights as floats (GCC's generic conversion of bytes is scalar; AVX2 has one op). */
static inline v8f load8_int8(const int8_t *p) {
#ifdef __AVX2__
    return (v8f)_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p)));
#else
    return __builtin_convertvector(*(const v8b *)p, v8f);
#endif
}

static inline float bf16_float(uint16_t bits) {
    const uint32_t wide = (uint32_t)bits << 16;
    float value;
    memcpy(&value, &wide, sizeof value);
    return value;
}

static inline float sum8(v8f v) {
    return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7]));
}

/* a where mask is set, else b (mask: all ones or all zeros per lane, as comparisons give). */
static inline v8f select8(v8i mask, v8f a, v8f b) {
    return (v8f)(((v8i)a & mask) | ((v8i)b & ~mask));
}

/* exp(x), 8 at a time: x = n ln2 + r, |r| <= ln2 / 2, exp(r) by Cephes' degree-7 polynomial
   (relative error about 2e-7), times 2^n built in the exponent bits. */
static inline v8f exp8(v8f x) {
    const v8f hi = x * 0.0f + 88.3762626647949f, lo = x * 0.0f - 88.3762626647949f;
    x = select8(x > hi, hi, x);
    x = select8(x < lo, lo, x);
    v8f t = x * 1.44269504088896341f + 0.5f;
    v8i n = __builtin_convertvector(t, v8i);
    n += (v8i)(__builtin_convertvector(n, v8f) > t); /* truncation -> floor */
    v8f fn = __builtin_convertvector(n, v8f);
    x = x - fn * 0.693359375f + fn * 2.12194440e-4f;
    v8f y = 1.9875691500e-4f * x + 1.3981999507e-3f;
    y = y * x + 8.3334519073e-3f;
    y = y * x + 4.1665795894e-2f;
    y = y * x + 1.6666665459e-1f;
    y = y * x + 5.0000001201e-1f;
    y = y * x * x + x + 1.0f;
    v8i bits = (n + 127) << 23;
    v8f scale;
    memcpy(&scale, &bits, sizeof scale);
    return y * scale;
}

static inline v8f sigmoid8(v8f x) { return 1.0f / (1.0f + exp8(-x)); }

static inline v8f tanh8(v8f x) { return 2.0f / (1.0f + exp8(-2.0f * x)) - 1.0f; }

/* One weight row (n weights from index first of a row-major matrix of the given kind) times x. */
#define ROW_DOT(LOAD, SCALAR)                                                                  \
    do {                                                                                       \
        v8f acc0 = {0}, acc1 = {0};                                                            \
        int64_t col = 0;                                                                       \
        for (; col + 16 <= n; col += 16) {                                                     \
            acc0 += LOAD(row + col) * load8(x + col);                                          \
            acc1 += LOAD(row + col + 8) * load8(x + col + 8);                                  \
        }                                                                                      \
        for (; col + 8 <= n; col += 8) acc0 += LOAD(row + col) * load8(x + col);               \
        float total = sum8(acc0 + acc1);                                                       \
        for (; col < n; ++col) total += SCALAR(row[col]) * x[col];                             \
        return total;                                                                          \
    } while (0)

#define AS_FLOAT(value) ((float)(value))

static inline __attribute__((always_inline)) float row_dot(int64_t kind, const void *w, int64_t first, const float *x, int64_t n) {
    if (kind == BF16) {
        const uint16_t *row = (const uint16_t *)w + first;
        ROW_DOT(load8_bf16, bf16_float);
    }
    if (kind == INT8) {
        const int8_t *row = (const int8_t *)w + first;
        ROW_DOT(load8_int8, AS_FLOAT);
    }
    const float *row = (const float *)w + first;
    ROW_DOT(load8, AS_FLOAT);
}

/* z[q][j] += the gate row q H + u + j of layer l's (4H, K) weight times x, for j < count; x
   is a (H numbers) followed by b (K - H numbers, none for layer 0). */
static void gate_rows(const Model *m, int64_t l, const float *a, const float *b, int64_t u,
                      int64_t count, float z[4][8]) {
    const int64_t hidden = m->hidden, k = l == 0 ? hidden : 2 * hidden;
    const void *w = m->weights[l];
    for (int q = 0; q < 4; ++q)
        for (int64_t j = 0; j < count; ++j) {
            const int64_t row = q * hidden + u + j;
            float total = row_dot(m->kind, w, row * k, a, hidden);
            if (k > hidden) total += row_dot(m->kind, w, row * k + hidden, b, k - hidden);
            z[q][j] += m->scales == NULL ? total : total * m->scales[l][row];
        }
}

/* Layer l for units [u0, u1): reads below (h_{l-1}, new) and own (h_l, old), writes out. */
static void layer_units(const Model *m, int64_t l, const float *below, const float *own,
                        float *out, int64_t u0, int64_t u1) {
    const int64_t hidden = m->hidden;
    const float *bias = l == 0 ? m->table + m->token * 4 * hidden : m->biases[l];
    float *c = m->cells + l * hidden;
    for (int64_t u = u0; u < u1; u += 8) {
        const int64_t count = u1 - u < 8 ? u1 - u : 8;
        float z[4][8] = {{0}};
        for (int q = 0; q < 4; ++q)
            for (int64_t j = 0; j < count; ++j) z[q][j] = bias[q * hidden + u + j];
        gate_rows(m, l, l == 0 ? own : below, own, u, count, z);
        v8f i = sigmoid8(load8(z[0])), f = sigmoid8(load8(z[1]));
        v8f g = tanh8(load8(z[2])), o = sigmoid8(load8(z[3]));
        float cell[8] = {0};
        memcpy(cell, c + u, count * sizeof(float));
        v8f c_new = f * load8(cell) + i * g;
        v8f h_new = o * tanh8(c_new);
        memcpy(c + u, &c_new, count * sizeof(float));
        memcpy(out + u, &h_new, count * sizeof(float));
    }
}

static float dot(const float *a, const float *b, int64_t n) {
    v8f acc0 = {0}, acc1 = {0};
    int64_t col = 0;
    for (; col + 16 <= n; col += 16) {
        acc0 += load8(a + col) * load8(b + col);
        acc1 += load8(a + col + 8) * load8(b + col + 8);
    }
    for (; col + 8 <= n; col += 8) acc0 += load8(a + col) * load8(b + col);
    float total = sum8(acc0 + acc1);
    for (; col < n; ++col) total += a[col] * b[col];
    return total;
}

/* The calling thread's share [start, end) of n items, in whole blocks of 16 floats (no two
   threads write the same cache line). */
static void share(int64_t n, int64_t *start, int64_t *end) {
    int t = 0, count = 1;
#ifdef _OPENMP
    t = omp_get_thread_num();
    count = omp_get_num_threads();
#endif
    const int64_t blocks = (n + 15) / 16;
    *start = blocks * t / count * 16;
    *end = blocks * (t + 1) / count * 16;
    if (*start > n) *start = n;
    if (*end > n) *end = n;
}

/* The calling thread's share of the head's rows: out[v] = W_head[v] . top (+ b_head[v]). */
static void head_rows(const Model *m, const float *top, float *out, int with_bias) {
    int64_t v0, v1;
    share(m->vocab, &v0, &v1);
    for (int64_t v = v0; v < v1; ++v)
        out[v] = (with_bias ? m->head_bias[v] : 0.0f) +
                 dot(m->head_weight + v * m->hidden, top, m->hidden);
}

/* The layers and the head for m->token; the new state lands in the other half of h. */
static void forward(Model *m) {
    const int64_t hidden = m->hidden, layers = m->layers;
    float *old = m->h + m->parity * layers * hidden;
    float *new = m->h + (1 - m->parity) * layers * hidden;
#pragma omp parallel num_threads(m->threads)
    {
        int64_t u0, u1;
        share(hidden, &u0, &u1);
        for (int64_t l = 0; l < layers; ++l) {
            const float *below = l == 0 ? NULL : new + (l - 1) * hidden;
            layer_units(m, l, below, old + l * hidden, new + l * hidden, u0, u1);
#pragma omp barrier
        }
        head_rows(m, new + (layers - 1) * hidden, m->logits, 1);
    }
    m->parity = 1 - m->parity;
}

/* The token torch's sampler picks from m->logits: with race NULL the first largest logit
   (greedy); else softmax(logits / temperature) / race, its first largest entry (the
   exponential race of torch.multinomial, race holding Exp(1) draws). */
static int64_t pick(const Model *m, const float *race, float temperature) {
    const int64_t vocab = m->vocab;
    const float *logits = m->logits;
    int64_t best = 0;
    if (race == NULL) {
        for (int64_t v = 1; v < vocab; ++v)
            if (logits[v] > logits[best]) best = v;
        return best;
    }
    float top = -INFINITY, total = 0.0f, best_score = -INFINITY;
    for (int64_t v = 0; v < vocab; ++v)
        if (logits[v] / temperature > top) top = logits[v] / temperature;
    for (int64_t v = 0; v < vocab; ++v) total += expf(logits[v] / temperature - top);
    for (int64_t v = 0; v < vocab; ++v) {
        const float score = expf(logits[v] / temperature - top) / total / race[v];
        if (score > best_score) {
            best_score = score;
            best = v;
        }
    }
    return best;
}

/* count steps: each reads m->token, steps the model and draws the next token (see pick) into
   out[s], which the next step reads. races: count rows of V Exp(1) draws, or NULL (greedy). */
void rnnkit_lstm_sample(Model *m, int64_t count, const float *races, float temperature,
                        int64_t *out) {
    for (int64_t s = 0; s < count; ++s) {
        forward(m);
        m->token = pick(m, races == NULL ? NULL : races + s * m->vocab, temperature);
        out[s] = m->token;
    }
}

/* The step's products alone, repeats times, on the current state (no gate arithmetic, nothing
   written to the state): what no step computing them can beat (bench/sampling.py). */
void rnnkit_lstm_products(const Model *m, int64_t repeats, float *scratch) {
    const int64_t hidden = m->hidden, layers = m->layers;
    const float *state = m->h + m->parity * layers * hidden;
    for (int64_t r = 0; r < repeats; ++r) {
#pragma omp parallel num_threads(m->threads)
        {
            int64_t u0, u1;
            share(hidden, &u0, &u1);
            for (int64_t l = 0; l < layers; ++l) {
                const float *own = state + l * hidden, *below = l == 0 ? own : own - hidden;
                for (int64_t u = u0; u < u1; u += 8) {
                    const int64_t count = u1 - u < 8 ? u1 - u : 8;
                    float z[4][8] = {{0}};
                    gate_rows(m, l, below, own, u, count, z);
                    float total = 0.0f; /* every product is used, so none is optimised away */
                    for (int q = 0; q < 4; ++q)
                        for (int64_t j = 0; j < count; ++j) total += z[q][j];
                    scratch[u] = total;
                }
            }
            head_rows(m, state, scratch + hidden, 0);
        }
    }
}
