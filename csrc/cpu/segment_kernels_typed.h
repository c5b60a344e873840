/*
 * One storage type's segment kernels: included by segment_kernels.h once per
 * type with EVOGRAD_T set (f32, f64, f16, bf16), so that compilers and
 * debuggers see real lines rather than one macro expansion.
 */
#ifndef EVOGRAD_T
#error "segment_kernels.h includes this with EVOGRAD_T set"
#endif

#define EVOGRAD_TYPED(name) EVOGRAD_JOIN(EVOGRAD_JOIN(name##_, EVOGRAD_T), EVOGRAD_JOIN(_, EVOGRAD_ISA))
#define EVOGRAD_ELEM EVOGRAD_JOIN(evograd_elem_, EVOGRAD_T)
#define EVOGRAD_EPS EVOGRAD_JOIN(evograd_eps_, EVOGRAD_T)
#define EVOGRAD_IS_F32 EVOGRAD_JOIN(EVOGRAD_IS_F32_, EVOGRAD_T)
#define EVOGRAD_FILL EVOGRAD_JOIN(EVOGRAD_FILL_, EVOGRAD_T)
#define EVOGRAD_PLUS_EPS EVOGRAD_JOIN(EVOGRAD_PLUS_EPS_, EVOGRAD_T)
#define EVOGRAD_TO_D EVOGRAD_JOIN(EVOGRAD_TO_D_, EVOGRAD_T)
#define EVOGRAD_FROM_D EVOGRAD_JOIN(EVOGRAD_FROM_D_, EVOGRAD_T)

static void EVOGRAD_TYPED(combine_rows)(const EVOGRAD_ELEM *src, EVOGRAD_ELEM *dst,
                                            int at, int n, int kc, const uint64_t *c,
                                            uint32_t bits[][EVOGRAD_ROWS], evograd_trickle *src_ahead,
                                            evograd_trickle *dst_ahead) {
  const int lines_per_row = (int)(32 * sizeof *src / 64);
  int i = 0, k, j;
  for (; i < n; ++i) {
    double a = 0.0;
    if ((at + i) % 32 == 0 && i + 32 <= n) break;
    for (k = 0; k < kc; ++k)
      a += evograd_signed_at(c[k], bits[k], at + i);
    dst[i] = EVOGRAD_FROM_D(EVOGRAD_TO_D(src[i]) + a);
  }
  for (; i + 32 <= n; i += 32) {
    double sum[32];
    evograd_row_sums(sum, kc, c, &bits[0][(at + i) / 32], EVOGRAD_ROWS);
    for (j = 0; j < 32; ++j) dst[i + j] = EVOGRAD_FROM_D(EVOGRAD_TO_D(src[i + j]) + sum[j]);
    evograd_trickle_lines(src_ahead, lines_per_row);
    evograd_trickle_lines(dst_ahead, lines_per_row);
  }
  for (; i < n; ++i) {
    double a = 0.0;
    for (k = 0; k < kc; ++k)
      a += evograd_signed_at(c[k], bits[k], at + i);
    dst[i] = EVOGRAD_FROM_D(EVOGRAD_TO_D(src[i]) + a);
  }
}

static void EVOGRAD_TYPED(perturb)(const void *src_, void *dst_, int64_t global,
                                       int64_t n, const evograd_noise_stream *s) {
  const EVOGRAD_ELEM *src = (const EVOGRAD_ELEM *)src_;
  EVOGRAD_ELEM *dst = (EVOGRAD_ELEM *)dst_;
  int64_t done = 0;
  while (done < n) {
    const evograd_tile_piece p = evograd_piece_at(global + done, n - done);
    EVOGRAD_EPS eps[EVOGRAD_TILE];
    const EVOGRAD_EPS *e = eps + p.at;
    evograd_trickle src_ahead =
        evograd_trickle_ahead(src, done + p.n, n, (int64_t)sizeof *src, 0, done == 0);
    evograd_trickle dst_ahead =
        evograd_trickle_ahead(dst, done + p.n, n, (int64_t)sizeof *dst, 1, done == 0);
    const int lines_per_row = (int)(32 * sizeof *src / 64);
    int i = 0, j;
    if (s->kind == EVOGRAD_NOISE_SIGN && EVOGRAD_IS_F32) {
      /* the signs straight from the Philox words, whole rows at a time */
      uint32_t w[4][EVOGRAD_PHILOX_LANES];
      const float plus = (float)s->scale;
      evograd_philox_lanes(s, p.tile * EVOGRAD_PHILOX_LANES, w);
      for (; i < p.n; i = j) {
        const int row = (p.at + i) / 32, end = (row + 1) * 32 - p.at;
        const uint32_t word = w[row % 4][row / 4];
        j = end < p.n ? end : p.n;
        if ((p.at + i) % 32 == 0 && j - i == 32) {
          evograd_row_plus_signed_f32((const float *)(const void *)(src + done + i),
                                      (float *)(void *)(dst + done + i), word, plus);
          evograd_trickle_lines(&src_ahead, lines_per_row);
          evograd_trickle_lines(&dst_ahead, lines_per_row);
        } else {
          float row_src[32], row_dst[32];
          const int at = (p.at + i) % 32;
          memset(row_src, 0, sizeof row_src);
          memcpy(row_src + at, (const void *)(src + done + i), (size_t)(j - i) * sizeof(float));
          evograd_row_plus_signed_f32(row_src, row_dst, word, plus);
          memcpy((void *)(dst + done + i), row_dst + at, (size_t)(j - i) * sizeof(float));
        }
      }
    } else {
      EVOGRAD_FILL(s, p.tile, p.b0, p.b1, eps);
      evograd_trickle_rest(&src_ahead);
      evograd_trickle_rest(&dst_ahead);
      for (i = 0; i < p.n; ++i) dst[done + i] = EVOGRAD_PLUS_EPS(src[done + i], e[i]);
    }
    evograd_trickle_rest(&src_ahead);
    evograd_trickle_rest(&dst_ahead);
    done += p.n;
  }
}

static void EVOGRAD_TYPED(combine)(const void *src_, void *dst_, int64_t global,
                                       int64_t n, const evograd_noise *noise,
                                       const double *weights, int64_t population) {
  const EVOGRAD_ELEM *src = (const EVOGRAD_ELEM *)src_;
  EVOGRAD_ELEM *dst = (EVOGRAD_ELEM *)dst_;
  /* sign noise has fast paths; any other kind goes through a tile of values */
  const int signs = noise->kind == EVOGRAD_NOISE_SIGN;
  int64_t done = 0, k;
  while (done < n) {
    const evograd_tile_piece p = evograd_piece_at(global + done, n - done);
    EVOGRAD_EPS eps[EVOGRAD_TILE];
    double acc[EVOGRAD_TILE];
    const EVOGRAD_EPS *e = eps + p.at;
    int i;
    evograd_trickle src_ahead =
        evograd_trickle_ahead(src, done + p.n, n, (int64_t)sizeof *src, 0, done == 0);
    evograd_trickle dst_ahead =
        evograd_trickle_ahead(dst, done + p.n, n, (int64_t)sizeof *dst, 1, done == 0);
    if (!signs || population > EVOGRAD_SIGN_CHUNK) {
      evograd_trickle_rest(&src_ahead);
      evograd_trickle_rest(&dst_ahead);
    }
    if (!signs) {
      for (i = 0; i < p.n; ++i) acc[i] = 0.0;
      for (k = 0; k < population; ++k) {
        const evograd_noise_stream s =
            evograd_make_stream(noise->seed, noise->sigma, noise->kind, noise->antithetic, k);
        const double w = weights[k];
        EVOGRAD_FILL(&s, p.tile, p.b0, p.b1, eps);
        for (i = 0; i < p.n; ++i) acc[i] += w * (double)e[i];
      }
    } else if (population <= EVOGRAD_SIGN_CHUNK) {
      /* one chunk of candidates: sums and stores in one pass over the piece */
      uint32_t bits[EVOGRAD_SIGN_CHUNK][EVOGRAD_ROWS];
      uint64_t c[EVOGRAD_SIGN_CHUNK];
      for (k = 0; k < population; ++k) {
        const evograd_noise_stream s =
            evograd_make_stream(noise->seed, noise->sigma, EVOGRAD_NOISE_SIGN, noise->antithetic, k);
        c[k] = evograd_bits_of(weights[k] * (double)(EVOGRAD_EPS)s.scale);
      }
      evograd_sign_rows(noise, 0, (int)population, p.tile, bits);
      EVOGRAD_TYPED(combine_rows)(src + done, dst + done, p.at, p.n, (int)population, c, bits,
                                      &src_ahead, &dst_ahead);
      evograd_trickle_rest(&src_ahead);
      evograd_trickle_rest(&dst_ahead);
      done += p.n;
      continue;
    } else {
      /* w_k * eps = +-(w_k * rounded sigma): the product is the same */
      for (i = 0; i < p.n; ++i) acc[i] = 0.0;
      for (k = 0; k < population; k += EVOGRAD_SIGN_CHUNK) {
        const int kc = (int)(population - k < EVOGRAD_SIGN_CHUNK ? population - k
                                                                 : EVOGRAD_SIGN_CHUNK);
        uint32_t bits[EVOGRAD_SIGN_CHUNK][EVOGRAD_ROWS];
        uint64_t c[EVOGRAD_SIGN_CHUNK];
        int kk;
        for (kk = 0; kk < kc; ++kk) {
          const evograd_noise_stream s =
              evograd_make_stream(noise->seed, noise->sigma, EVOGRAD_NOISE_SIGN, noise->antithetic, k + kk);
          const EVOGRAD_EPS one = (EVOGRAD_EPS)s.scale;
          c[kk] = evograd_bits_of(weights[k + kk] * (double)one);
        }
        evograd_sign_rows(noise, k, kc, p.tile, bits);
        evograd_add_signed(acc, p.at, p.n, kc, c, bits);
      }
    }
    for (i = 0; i < p.n; ++i)
      dst[done + i] = EVOGRAD_FROM_D(EVOGRAD_TO_D(src[done + i]) + acc[i]);
    done += p.n;
  }
}

/* lanes[k * EVOGRAD_PROJECT_LANES + (g % EVOGRAD_PROJECT_LANES)] += v[g] * eps_k[g]. */
static void EVOGRAD_TYPED(project)(const void *src_, int64_t global, int64_t n,
                                       int64_t readable, int fresh,
                                       const evograd_noise *noise, int64_t k0, int64_t kn,
                                       double *lanes) {
  const EVOGRAD_ELEM *src = (const EVOGRAD_ELEM *)src_;
  /* sign noise has fast paths; any other kind goes through a tile of values */
  const int signs = noise->kind == EVOGRAD_NOISE_SIGN;
  int64_t done = 0, k;
  while (done < n) {
    const evograd_tile_piece p = evograd_piece_at(global + done, n - done);
    EVOGRAD_EPS eps[EVOGRAD_TILE];
    double v[EVOGRAD_TILE];
    const EVOGRAD_EPS *e = eps + p.at;
    /* the piece as head (up to a lane boundary), whole lane rows, tail */
    const int head0 = (EVOGRAD_PROJECT_LANES - p.at % EVOGRAD_PROJECT_LANES) %
                      EVOGRAD_PROJECT_LANES;
    const int head = head0 < p.n ? head0 : p.n;
    const int rows = (p.n - head) / EVOGRAD_PROJECT_LANES;
    int i;
    evograd_trickle ahead =
        evograd_trickle_ahead(src, done + p.n, readable, (int64_t)sizeof *src, 0, fresh && !done);
    if (!signs) evograd_trickle_rest(&ahead);
    if (signs && EVOGRAD_IS_F32) {
      const double mag = (double)(EVOGRAD_EPS)noise->sigma;
      for (k = 0; k < kn; k += EVOGRAD_SIGN_CHUNK) {
        const int kc = (int)(kn - k < EVOGRAD_SIGN_CHUNK ? kn - k : EVOGRAD_SIGN_CHUNK);
        uint32_t bits[EVOGRAD_SIGN_CHUNK][EVOGRAD_ROWS];
        int kk;
        evograd_sign_rows(noise, k0 + k, kc, p.tile, bits);
        for (kk = 0; kk < kc; kk += 2) {
          const int pair = kk + 1 < kc;
          double scratch[EVOGRAD_PROJECT_LANES];
          const int odd0 = noise->antithetic && ((k0 + k + kk) & 1);
          const int odd1 = pair && noise->antithetic && ((k0 + k + kk + 1) & 1);
          if (!pair) memset(scratch, 0, sizeof scratch);
          evograd_project_pair_f32(lanes + (k + kk) * EVOGRAD_PROJECT_LANES,
                                   pair ? lanes + (k + kk + 1) * EVOGRAD_PROJECT_LANES : scratch,
                                   (const float *)(const void *)(src + done), p.at, p.n,
                                   bits[kk], bits[pair ? kk + 1 : kk], (uint64_t)odd0 << 63,
                                   (uint64_t)odd1 << 63, mag, &ahead);
        }
      }
      evograd_trickle_rest(&ahead);
    } else if (signs) {
      /* v * eps = +-(v * |rounded sigma|): one product per element for all k */
      const double mag = (double)(EVOGRAD_EPS)noise->sigma;
      for (i = 0; i < p.n; ++i) v[i] = EVOGRAD_TO_D(src[done + i]) * mag;
      for (k = 0; k < kn; k += EVOGRAD_SIGN_CHUNK) {
        const int kc = (int)(kn - k < EVOGRAD_SIGN_CHUNK ? kn - k : EVOGRAD_SIGN_CHUNK);
        uint32_t bits[EVOGRAD_SIGN_CHUNK][EVOGRAD_ROWS];
        int kk;
        evograd_sign_rows(noise, k0 + k, kc, p.tile, bits);
        for (kk = 0; kk < kc; ++kk) {
          const int odd = noise->antithetic && ((k0 + k + kk) & 1);
          evograd_lanes_add_signed(lanes + (k + kk) * EVOGRAD_PROJECT_LANES, p.at, p.n, v,
                                   bits[kk], (uint64_t)odd << 63, &ahead,
                                   (int)(32 * sizeof *src / 64));
        }
      }
      evograd_trickle_rest(&ahead);
    } else {
    for (i = 0; i < p.n; ++i) v[i] = EVOGRAD_TO_D(src[done + i]);
    for (k = 0; k < kn; ++k) {
      const evograd_noise_stream s =
          evograd_make_stream(noise->seed, noise->sigma, noise->kind, noise->antithetic, k0 + k);
      double *lane = lanes + k * EVOGRAD_PROJECT_LANES;
      double acc[EVOGRAD_PROJECT_LANES];
      int r, j;
      EVOGRAD_FILL(&s, p.tile, p.b0, p.b1, eps);
      for (i = 0; i < head; ++i)
        lane[(p.at + i) % EVOGRAD_PROJECT_LANES] += v[i] * (double)e[i];
      memcpy(acc, lane, sizeof acc);
      for (r = 0; r < rows; ++r) {
        const double *vr = v + head + r * EVOGRAD_PROJECT_LANES;
        const EVOGRAD_EPS *er = e + head + r * EVOGRAD_PROJECT_LANES;
        for (j = 0; j < EVOGRAD_PROJECT_LANES; ++j) acc[j] += vr[j] * (double)er[j];
      }
      memcpy(lane, acc, sizeof acc);
      for (i = head + rows * EVOGRAD_PROJECT_LANES; i < p.n; ++i)
        lane[(p.at + i) % EVOGRAD_PROJECT_LANES] += v[i] * (double)e[i];
    }
    }
    done += p.n;
  }
}

#undef EVOGRAD_TYPED
#undef EVOGRAD_ELEM
#undef EVOGRAD_EPS
#undef EVOGRAD_IS_F32
#undef EVOGRAD_FILL
#undef EVOGRAD_PLUS_EPS
#undef EVOGRAD_TO_D
#undef EVOGRAD_FROM_D
