// Weight-only Linear kernels for a few tokens (decoding): y = x @ W^T + bias with W rebuilt from integer
// codes in registers, never in memory, so each weight byte is read once per call.
// int8_linear: int8 codes (N, K), one float scale per output row. int4_linear: packing.py's 4-bit codes.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

namespace {

#if defined(__AVX2__) && defined(__FMA__)
inline float hsum(__m256 v) {  // the 8 lanes of v added
  __m128 h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  h = _mm_add_ps(h, _mm_movehl_ps(h, h));
  h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
  return _mm_cvtss_f32(h);
}
#endif

// y[m, n] = dot(m, n) + bias[n] for every token m and output row n. The rows are split over torch's
// threads in chunks: each thread streams its own slice of the weight once for every token.
template <typename Dot>
void for_each_output(int64_t M, int64_t N, const float* bias, float* y, const Dot& dot) {
  at::parallel_for(0, N, 64, [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; ++n)
      for (int64_t m = 0; m < M; ++m) {
        const float v = dot(m, n);
        y[m * N + n] = bias ? v + bias[n] : v;
      }
  });
}

inline float dot_row(const float* x, const int8_t* q, int64_t K) {
  int64_t k = 0;
  float acc = 0.f;
#if defined(__AVX2__) && defined(__FMA__)
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
  for (; k + 32 <= K; k += 32) {
    __m256i q32 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + k));
    __m128i lo = _mm256_castsi256_si128(q32), hi = _mm256_extracti128_si256(q32, 1);
    a0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo)), _mm256_loadu_ps(x + k), a0);
    a1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(lo, 8))), _mm256_loadu_ps(x + k + 8), a1);
    a2 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi)), _mm256_loadu_ps(x + k + 16), a2);
    a3 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(hi, 8))), _mm256_loadu_ps(x + k + 24), a3);
  }
  acc = hsum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
#endif
  for (; k < K; ++k) acc += x[k] * static_cast<float>(q[k]);
  return acc;
}

}  // namespace

// x (M, K) float32 contiguous, q (N, K) int8 contiguous, scale (N) float32, bias (N) float32 or empty.
torch::Tensor int8_linear(torch::Tensor x, torch::Tensor q, torch::Tensor scale, torch::Tensor bias) {
  TORCH_CHECK(x.device().is_cpu() && x.scalar_type() == torch::kFloat32 && x.dim() == 2 && x.is_contiguous(),
              "int8_linear: x must be a contiguous 2-D float32 CPU tensor");
  TORCH_CHECK(q.device().is_cpu() && q.scalar_type() == torch::kInt8 && q.dim() == 2 && q.is_contiguous() &&
              q.size(1) == x.size(1), "int8_linear: q must be contiguous int8 (N, K) with K = x.size(1)");
  TORCH_CHECK(scale.scalar_type() == torch::kFloat32 && scale.is_contiguous() && scale.numel() == q.size(0),
              "int8_linear: scale must be contiguous float32 with one value per row of q");
  TORCH_CHECK(bias.numel() == 0 || (bias.scalar_type() == torch::kFloat32 && bias.is_contiguous() &&
              bias.numel() == q.size(0)), "int8_linear: bias must be empty or contiguous float32 (N)");
  const int64_t M = x.size(0), K = x.size(1), N = q.size(0);
  auto y = torch::empty({M, N}, x.options());
  const float* xp = x.data_ptr<float>();
  const int8_t* qp = q.data_ptr<int8_t>();
  const float* sp = scale.data_ptr<float>();
  const float* bp = bias.numel() ? bias.data_ptr<float>() : nullptr;
  float* yp = y.data_ptr<float>();
  for_each_output(M, N, bp, yp, [&](int64_t m, int64_t n) { return dot_row(xp + m * K, qp + n * K, K) * sp[n]; });
  return y;
}


namespace {

template <typename S>
inline float as_float(S v) { return static_cast<float>(v); }

// One row of 4-bit codes in the planar layout of packing.py: byte j holds code j (low nibble) and
// code j + L (high nibble), L = bytes per row. Weight i = (code_i - zero[i / g]) * scale[i / g].
template <typename S>
float dot_row4(const float* x, const uint8_t* b, const S* scale, const uint8_t* zero, int64_t K, int64_t L,
               int64_t g) {
  float acc = 0.f;
  int64_t j = 0;
#if defined(__AVX2__) && defined(__FMA__)
  __m256 tot = _mm256_setzero_ps();
  const __m256i low4 = _mm256_set1_epi8(0x0F);
  // 32 bytes at a time while both planes' 32 codes sit inside one group each
  for (; j + 32 <= L && j + 32 + L <= K; j += 32) {
    const int64_t ga = j / g, gb = (j + L) / g;
    if (ga != (j + 31) / g || gb != (j + L + 31) / g) break;
    __m256i bytes = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + j));
    __m256i lo = _mm256_and_si256(bytes, low4), hi = _mm256_and_si256(_mm256_srli_epi16(bytes, 4), low4);
    const __m256i za = _mm256_set1_epi32(zero ? zero[ga] : 8), zb = _mm256_set1_epi32(zero ? zero[gb] : 8);
    __m256 sa = _mm256_setzero_ps(), sb = _mm256_setzero_ps();
    for (int t = 0; t < 4; ++t) {
      __m128i l8 = t < 2 ? _mm256_castsi256_si128(lo) : _mm256_extracti128_si256(lo, 1);
      __m128i h8 = t < 2 ? _mm256_castsi256_si128(hi) : _mm256_extracti128_si256(hi, 1);
      if (t & 1) { l8 = _mm_srli_si128(l8, 8); h8 = _mm_srli_si128(h8, 8); }
      __m256 wl = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_cvtepu8_epi32(l8), za));
      __m256 wh = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_cvtepu8_epi32(h8), zb));
      sa = _mm256_fmadd_ps(wl, _mm256_loadu_ps(x + j + 8 * t), sa);
      sb = _mm256_fmadd_ps(wh, _mm256_loadu_ps(x + j + L + 8 * t), sb);
    }
    tot = _mm256_fmadd_ps(sa, _mm256_set1_ps(as_float(scale[ga])), tot);
    tot = _mm256_fmadd_ps(sb, _mm256_set1_ps(as_float(scale[gb])), tot);
  }
  acc = hsum(tot);
#endif
  for (; j < L; ++j) {  // the rest, one byte (two codes) at a time
    const int64_t ga = j / g;
    acc += (static_cast<int>(b[j] & 0x0F) - (zero ? zero[ga] : 8)) * as_float(scale[ga]) * x[j];
    if (j + L < K) {
      const int64_t gb = (j + L) / g;
      acc += (static_cast<int>(b[j] >> 4) - (zero ? zero[gb] : 8)) * as_float(scale[gb]) * x[j + L];
    }
  }
  return acc;
}

template <typename S>
void int4_rows(const float* xp, const uint8_t* bp, const S* sp, const uint8_t* zp, const float* biasp, float* yp,
               int64_t M, int64_t N, int64_t K, int64_t L, int64_t G) {
  const int64_t g = K / G;
  for_each_output(M, N, biasp, yp, [&](int64_t m, int64_t n) {
    return dot_row4(xp + m * K, bp + n * L, sp + n * G, zp ? zp + n * G : nullptr, K, L, g);
  });
}

}  // namespace

// x (M, K) float32; packed (N, ceil(K/2)) uint8 planar codes; scale (N, G) float32 or float16 with K % G == 0;
// zero (N, G) uint8, or empty for symmetric codes (stored shifted by 8); bias (N) float32 or empty.
torch::Tensor int4_linear(torch::Tensor x, torch::Tensor packed, torch::Tensor scale, torch::Tensor zero,
                          torch::Tensor bias) {
  TORCH_CHECK(x.device().is_cpu() && x.scalar_type() == torch::kFloat32 && x.dim() == 2 && x.is_contiguous(),
              "int4_linear: x must be a contiguous 2-D float32 CPU tensor");
  const int64_t M = x.size(0), K = x.size(1);
  TORCH_CHECK(packed.scalar_type() == torch::kUInt8 && packed.dim() == 2 && packed.is_contiguous() &&
              packed.size(1) == (K + 1) / 2, "int4_linear: packed must be contiguous uint8 (N, ceil(K / 2))");
  const int64_t N = packed.size(0), L = packed.size(1);
  TORCH_CHECK((scale.scalar_type() == torch::kFloat32 || scale.scalar_type() == torch::kFloat16) &&
              scale.dim() == 2 && scale.is_contiguous() && scale.size(0) == N && K % scale.size(1) == 0,
              "int4_linear: scale must be contiguous float32 or float16 (N, G) with G dividing K");
  const int64_t G = scale.size(1);
  TORCH_CHECK(zero.numel() == 0 || (zero.scalar_type() == torch::kUInt8 && zero.is_contiguous() &&
              zero.sizes() == scale.sizes()), "int4_linear: zero must be empty or contiguous uint8 shaped like scale");
  TORCH_CHECK(bias.numel() == 0 || (bias.scalar_type() == torch::kFloat32 && bias.is_contiguous() &&
              bias.numel() == N), "int4_linear: bias must be empty or contiguous float32 (N)");
  auto y = torch::empty({M, N}, x.options());
  const uint8_t* zp = zero.numel() ? zero.data_ptr<uint8_t>() : nullptr;
  const float* bp = bias.numel() ? bias.data_ptr<float>() : nullptr;
  if (scale.scalar_type() == torch::kFloat16)
    int4_rows(x.data_ptr<float>(), packed.data_ptr<uint8_t>(), scale.data_ptr<at::Half>(), zp, bp,
              y.data_ptr<float>(), M, N, K, L, G);
  else
    int4_rows(x.data_ptr<float>(), packed.data_ptr<uint8_t>(), scale.data_ptr<float>(), zp, bp,
              y.data_ptr<float>(), M, N, K, L, G);
  return y;
}

bool vectorized() {
#if defined(__AVX2__) && defined(__FMA__)
  return true;
#else
  return false;
#endif
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("int8_linear", &int8_linear, "y = (x @ q^T) * scale + bias, int8 q widened in registers");
  m.def("int4_linear", &int4_linear, "4-bit planar codes with per-group scales, widened in registers");
  m.def("vectorized", &vectorized, "whether the AVX2 + FMA path was compiled");
}
