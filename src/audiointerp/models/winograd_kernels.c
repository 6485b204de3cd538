/* The Winograd F(4x4, 2x2) input transform in one pass (audiointerp.models.native).
 *
 * For every 5 x 5 tile of every sub-pixel phase, B^T d B is computed from the slab and
 * written straight into the layout of the Winograd products, so the slab is read once and
 * the spectra written once (PyTorch's version makes two more arrays of the same size).
 * B^T is the matrix of audiointerp.models.winograd._transforms() (interpolation points
 * 0, 1, -1, 1/2 and infinity); the tests check the two against each other.
 */
#include <stddef.h>

#define BLOCK 64 /* channels per inner loop: 5 x 5 x 64 floats of scratch stay in L1 */

/* o_i = sum_m B^T[i][m] x_m over n channels, for the five rows of B^T. */
static inline void bt_rows(const float *x0, const float *x1, const float *x2,
                           const float *x3, const float *x4, float *o0, float *o1,
                           float *o2, float *o3, float *o4, long n) {
  for (long c = 0; c < n; c++) {
    const float a = x0[c], b = x1[c], d = x2[c], e = x3[c], f = x4[c];
    o0[c] = a - 2.0f * b - d + 2.0f * e;
    o1[c] = -0.5f * b + 0.5f * d + e;
    o2[c] = -(1.0f / 6.0f) * b + 0.5f * d - (1.0f / 3.0f) * e;
    o3[c] = (8.0f / 3.0f) * (b - e);
    o4[c] = 0.5f * b - d - 0.5f * e + f;
  }
}

/* slab (batch, height, width, channels), C-contiguous, holding every pixel the tiles read
 * (zero padding included); spectra (25, batch * rows * cols, phases^2 * channels): point
 * 5k + i (k along rows, i along columns), tile (item, row, col), channels phase-major.
 * Tile (r, t) of phase (a, b) reads pixel rows 4 phases r + phases m + a and columns
 * 4 phases t + phases j + b, m and j in 0..4. */
void winograd_input_transform(const float *slab, float *spectra, long batch, long height,
                              long width, long channels, long rows, long cols, long phases,
                              int threads) {
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
            bt_rows(x, x + down, x + 2 * down, x + 3 * down, x + 4 * down, rowed[0][j],
                    rowed[1][j], rowed[2][j], rowed[3][j], rowed[4][j], n);
          }
          for (long k = 0; k < 5; k++) {
            float *o = out + 5 * k * point + c0;
            bt_rows(rowed[k][0], rowed[k][1], rowed[k][2], rowed[k][3], rowed[k][4], o,
                    o + point, o + 2 * point, o + 3 * point, o + 4 * point, n);
          }
        }
      }
    }
  }
}
