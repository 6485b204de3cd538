/* The Winograd F(4x4, 2x2) input transform in one pass (audiointerp.models.native).
 *
 * For every 5 x 5 tile of every sub-pixel phase, B^T d B is computed from the slab and
 * written straight into the layout of the Winograd products, so the slab is read once and
 * the spectra written once (PyTorch's version makes two more arrays of the same size).
 * B^T is passed in: audiointerp.models.winograd._transforms()'s, the one definition
 * (written out here as constants it ran ~7 % faster, not worth a second copy).
 */
#include <stddef.h>

#define BLOCK 64 /* channels per inner loop: 5 x 5 x 64 floats of scratch stay in L1 */

/* o_i = sum_m bt[i][m] x_m over n channels, for the five rows of bt. */
static inline void bt_rows(const float bt[5][5], const float *restrict x0,
                           const float *restrict x1, const float *restrict x2,
                           const float *restrict x3, const float *restrict x4,
                           float *restrict o0, float *restrict o1, float *restrict o2,
                           float *restrict o3, float *restrict o4, long n) {
  float m[5][5];
  for (int i = 0; i < 5; i++)
    for (int j = 0; j < 5; j++) m[i][j] = bt[i][j];
  for (long c = 0; c < n; c++) {
    const float a = x0[c], b = x1[c], d = x2[c], e = x3[c], f = x4[c];
    o0[c] = m[0][0] * a + m[0][1] * b + m[0][2] * d + m[0][3] * e + m[0][4] * f;
    o1[c] = m[1][0] * a + m[1][1] * b + m[1][2] * d + m[1][3] * e + m[1][4] * f;
    o2[c] = m[2][0] * a + m[2][1] * b + m[2][2] * d + m[2][3] * e + m[2][4] * f;
    o3[c] = m[3][0] * a + m[3][1] * b + m[3][2] * d + m[3][3] * e + m[3][4] * f;
    o4[c] = m[4][0] * a + m[4][1] * b + m[4][2] * d + m[4][3] * e + m[4][4] * f;
  }
}

/* slab (batch, height, width, channels), C-contiguous, holding every pixel the tiles read
 * (zero padding included); spectra (25, batch * rows * cols, phases^2 * channels): point
 * 5k + i (k along rows, i along columns), tile (item, row, col), channels phase-major.
 * Tile (r, t) of phase (a, b) reads pixel rows 4 phases r + phases m + a and columns
 * 4 phases t + phases j + b, m and j in 0..4. matrix: B^T (5, 5), row-major. */
void winograd_input_transform(const float *slab, float *spectra, long batch, long height,
                              long width, long channels, long rows, long cols, long phases,
                              const float *matrix, int threads) {
  const float (*bt)[5] = (const float (*)[5])matrix;
  const long step = 4 * phases, depth = phases * phases * channels;
  const long tiles = batch * rows * cols, point = tiles * depth;
  const long pixel_row = width * channels, image = height * pixel_row;
#pragma omp parallel for num_threads(threads) schedule(static)
  for (long tile = 0; tile < tiles; tile++) {
    float rowed[5][5][BLOCK]; /* [k][j][c]: B^T along rows */
    const long item = tile / (rows * cols), r = tile / cols % rows, t = tile % cols;
    for (long a = 0; a < phases; a++) {
      for (long b = 0; b < phases; b++) {
        const float *top = slab + item * image + (step * r + a) * pixel_row +
                           (step * t + b) * channels;
        float *out = spectra + tile * depth + (a * phases + b) * channels;
        for (long c0 = 0; c0 < channels; c0 += BLOCK) {
          const long n = channels - c0 < BLOCK ? channels - c0 : BLOCK;
          const long down = phases * pixel_row;
          for (long j = 0; j < 5; j++) {
            const float *x = top + phases * j * channels + c0;
            bt_rows(bt, x, x + down, x + 2 * down, x + 3 * down, x + 4 * down, rowed[0][j],
                    rowed[1][j], rowed[2][j], rowed[3][j], rowed[4][j], n);
          }
          for (long k = 0; k < 5; k++) {
            float *o = out + 5 * k * point + c0;
            bt_rows(bt, rowed[k][0], rowed[k][1], rowed[k][2], rowed[k][3], rowed[k][4], o,
                    o + point, o + 2 * point, o + 3 * point, o + 4 * point, n);
          }
        }
      }
    }
  }
}
