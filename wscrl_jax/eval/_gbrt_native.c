/* Exact gradient-boosted regression trees on the CPU: the same algorithm as gbrt.py (which
 * mirrors scikit-learn's GradientBoostingRegressor defaults), written as plain loops.
 *
 * Why it exists: on a CPU, XLA runs gbrt.py's array program (running sums as matrix products,
 * partitions as scatters) several times more slowly than these loops do the same work
 * (docs/performance.md). gbrt_native.py loads this file's shared library with ctypes and falls
 * back to gbrt.py where it was not built.
 *
 * The algorithm, per stage (see gbrt.py for how each rule matches scikit-learn):
 *   residual = y - prediction; every level of the tree keeps, per feature, the samples of each
 *   node as a contiguous segment in ascending feature value (a stable partition of the parent's
 *   segment); a node's best split maximises S_l^2 / N_l + S_r^2 / N_r over positions where the
 *   next value exceeds this one by more than FEATURE_THRESHOLD (lowest feature, then lowest
 *   position among equal proxies); thresholds are midpoints; leaves predict the mean residual.
 *
 * Running sums here add the residuals one by one in sorted order, as scikit-learn's criterion
 * does; gbrt.py adds them blockwise, so the two agree to float64 rounding, not bit for bit.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define FEATURE_THRESHOLD 1.0e-7
#define EPSILON_F64 2.220446049250313e-16

/* The proxy loop is the hot one: on x86-64 GCC also builds it for AVX2 and picks the variant at
 * load time (the arithmetic is the same IEEE operations either way; no contraction to FMA). */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define VECTOR_VARIANTS __attribute__((target_clones("avx2", "default")))
#else
#define VECTOR_VARIANTS
#endif

/* For each feature f < p, sums[f * n + j] = the residuals of its segment's first j + 1 samples,
 * added one by one (perm: the features' segments, `n` apart). Up to four features are summed
 * together: one running sum waits on the last addition, four independent ones do not. */
static void running_sums(const double *restrict residual, const int32_t *restrict perm,
                         int64_t p, int64_t n, int64_t count, double *restrict sums) {
  int64_t f = 0;
  for (; f + 4 <= p; f += 4) {
    const int32_t *p0 = perm + f * n, *p1 = p0 + n, *p2 = p1 + n, *p3 = p2 + n;
    double *s0 = sums + f * n, *s1 = s0 + n, *s2 = s1 + n, *s3 = s2 + n;
    double r0 = 0.0, r1 = 0.0, r2 = 0.0, r3 = 0.0;
    for (int64_t j = 0; j < count; ++j) {
      s0[j] = r0 += residual[p0[j]];
      s1[j] = r1 += residual[p1[j]];
      s2[j] = r2 += residual[p2[j]];
      s3[j] = r3 += residual[p3[j]];
    }
  }
  for (; f < p; ++f) {
    double running = 0.0;
    for (int64_t j = 0; j < count; ++j) sums[f * n + j] = running += residual[perm[f * n + j]];
  }
}

/* proxy[j] for a split after the segment's j-th sample (j < count - 1): S_l^2 / N_l +
 * S_r^2 / N_r where the next value is more than FEATURE_THRESHOLD above, else -inf.
 * ramp[j] = j as a double (so that the counts need no conversion in the loop). */
VECTOR_VARIANTS
static void proxies(const double *restrict sums, const float *restrict vals, int64_t count,
                    double total, const double *restrict ramp, double *restrict proxy) {
  const double count_d = (double)count;
  for (int64_t j = 0; j < count - 1; ++j) {
    const double n_left = ramp[j + 1], n_right = count_d - ramp[j + 1];
    const double left = sums[j], right = total - sums[j];
    const double value = left * left / n_left + right * right / n_right;
    proxy[j] = (double)vals[j + 1] > (double)vals[j] + FEATURE_THRESHOLD ? value : -INFINITY;
  }
}

/* The first position of the largest proxy, or -1 when every one is -inf. The maximum is
 * taken in four lanes, which the compiler turns into vector instructions. */
VECTOR_VARIANTS
static int64_t first_argmax(const double *restrict proxy, int64_t size, double *best) {
  double lane[4] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY};
  int64_t j = 0;
  for (; j + 4 <= size; j += 4)
    for (int l = 0; l < 4; ++l) lane[l] = proxy[j + l] > lane[l] ? proxy[j + l] : lane[l];
  double top = -INFINITY;
  for (int l = 0; l < 4; ++l) top = lane[l] > top ? lane[l] : top;
  for (; j < size; ++j) top = proxy[j] > top ? proxy[j] : top;
  *best = top;
  if (top == -INFINITY) return -1;
  for (j = 0; j < size; ++j)
    if (proxy[j] == top) return j;
  return -1;
}

/* Fits n_estimators trees of depth max_depth on (x [n, p] row-major float32 -> y [n]).
 *
 * order [p, n]: per feature, the samples in ascending (stable) order of x.
 * init: the initial prediction (the mean of y, computed by the caller).
 * Outputs: feature [T, 2^D - 1] (0 where a node does not split), threshold [T, 2^D - 1]
 * (+inf where it does not split), value [T, 2^D] (leaf predictions), gain [p] (the summed
 * impurity decrease per feature, not normalised), prediction [n] (the training prediction).
 * Returns 0, or -1 when memory could not be allocated.
 */
int wscrl_gbrt_fit(const float *x, const double *y, const int32_t *order, int64_t n, int64_t p,
                   int64_t n_estimators, double learning_rate, int64_t max_depth, double init,
                   int32_t *feature, double *threshold, double *value, double *gain,
                   double *prediction) {
  const int64_t num_leaves = (int64_t)1 << max_depth;
  const int64_t num_inner = num_leaves - 1;
  /* buffer 0: the root level (every feature's presorted order), kept for every stage;
   * buffers 1 and 2: the deeper levels, in turn */
  int32_t *perm[3] = {malloc(sizeof(int32_t) * p * n), malloc(sizeof(int32_t) * p * n),
                      malloc(sizeof(int32_t) * p * n)};
  float *vals[3] = {malloc(sizeof(float) * p * n), malloc(sizeof(float) * p * n),
                    malloc(sizeof(float) * p * n)};
  int32_t *right_perm = malloc(sizeof(int32_t) * n); /* a segment's right part, partitioning */
  float *right_vals = malloc(sizeof(float) * n);
  double *residual = malloc(sizeof(double) * n);
  double *sums = malloc(sizeof(double) * p * n);
  double *proxy = malloc(sizeof(double) * n);
  double *ramp = malloc(sizeof(double) * (n + 1));
  int32_t *node = malloc(sizeof(int32_t) * n);
  int64_t *start = malloc(sizeof(int64_t) * (num_leaves + 1));
  int64_t *next_start = malloc(sizeof(int64_t) * (num_leaves + 1));
  int64_t *count_left = malloc(sizeof(int64_t) * num_leaves);
  double *sum_node = malloc(sizeof(double) * num_leaves);
  double *sum_left = malloc(sizeof(double) * num_leaves);
  char *splits = malloc(num_leaves);
  char *parent_split = malloc(num_leaves);
  int ok = perm[0] && perm[1] && perm[2] && vals[0] && vals[1] && vals[2] && right_perm &&
           right_vals && residual && sums && proxy && ramp && node && start && next_start &&
           count_left && sum_node && sum_left && splits && parent_split;
  if (ok) {
    for (int64_t f = 0; f < p; ++f)
      for (int64_t i = 0; i < n; ++i) {
        perm[0][f * n + i] = order[f * n + i];
        vals[0][f * n + i] = x[(int64_t)order[f * n + i] * p + f];
      }
    for (int64_t i = 0; i <= n; ++i) ramp[i] = (double)i;
    memset(gain, 0, sizeof(double) * p);
    for (int64_t i = 0; i < n; ++i) prediction[i] = init;
  }
  for (int64_t stage = 0; ok && stage < n_estimators; ++stage) {
    int32_t *tree_feature = feature + stage * num_inner;
    double *tree_threshold = threshold + stage * num_inner;
    double *tree_value = value + stage * num_leaves;
    int cur = 0; /* the buffers of the current level */
    for (int64_t i = 0; i < n; ++i) {
      residual[i] = y[i] - prediction[i];
      node[i] = 0;
    }
    start[0] = 0;
    start[1] = n;
    parent_split[0] = 1;
    for (int64_t depth = 0; depth < max_depth; ++depth) {
      const int64_t num_nodes = (int64_t)1 << depth;
      const int32_t *level_perm = perm[cur];
      const float *level_vals = vals[cur];
      for (int64_t k = 0; k < num_nodes; ++k) {
        const int64_t lo = start[k], hi = start[k + 1], count = hi - lo;
        const double safe = count > 0 ? (double)count : 1.0;
        double total = 0.0, squares = 0.0;
        for (int64_t i = lo; i < hi; ++i) {
          const double r = residual[level_perm[i]];
          total += r;
          squares += r * r;
        }
        const double impurity = squares / safe - (total / safe) * (total / safe);
        double best = -INFINITY, best_left = total;
        int64_t best_feature = 0, best_pos = -1;
        if (parent_split[k] && count >= 2 && impurity > EPSILON_F64) {
          running_sums(residual, level_perm + lo, p, n, count, sums);
          for (int64_t f = 0; f < p; ++f) { /* strict '>': the lowest feature among equals */
            double top;
            proxies(sums + f * n, level_vals + f * n + lo, count, total, ramp, proxy);
            const int64_t j = first_argmax(proxy, count - 1, &top);
            if (j >= 0 && top > best) {
              best = top;
              best_feature = f;
              best_pos = lo + j;
              best_left = sums[f * n + j];
            }
          }
        }
        const int64_t index = num_nodes - 1 + k;
        splits[k] = best_pos >= 0;
        sum_node[k] = total;
        if (splits[k]) {
          const double low = level_vals[best_feature * n + best_pos];
          const double high = level_vals[best_feature * n + best_pos + 1];
          const double mid = low / 2.0 + high / 2.0;
          tree_feature[index] = (int32_t)best_feature;
          tree_threshold[index] = (mid == high || isinf(mid)) ? low : mid;
          gain[best_feature] += best - total * total / safe;
          sum_left[k] = best_left;
          count_left[k] = best_pos - lo + 1;
        } else {
          tree_feature[index] = 0;
          tree_threshold[index] = INFINITY;
          sum_left[k] = total;
          count_left[k] = count;
        }
      }
      /* every sample to its child: node k's children are 2k (left) and 2k + 1 (right) */
      for (int64_t i = 0; i < n; ++i) {
        const int64_t index = num_nodes - 1 + node[i];
        const int right = (double)x[i * p + tree_feature[index]] > tree_threshold[index];
        node[i] = 2 * node[i] + right;
      }
      for (int64_t k = 0; k < num_nodes; ++k)
        parent_split[2 * k] = parent_split[2 * k + 1] = splits[k];
      if (depth + 1 < max_depth) {
        /* stable partition of every segment, feature by feature, without branches: each
         * sample is written to both places and only the right counter moves on */
        const int nxt = cur == 1 ? 2 : 1;
        for (int64_t f = 0; f < p; ++f) {
          const int32_t *src_perm = perm[cur] + f * n;
          const float *src_vals = vals[cur] + f * n;
          int32_t *dst_perm = perm[nxt] + f * n;
          float *dst_vals = vals[nxt] + f * n;
          for (int64_t k = 0; k < num_nodes; ++k) {
            int64_t left = start[k], right = 0;
            for (int64_t i = start[k]; i < start[k + 1]; ++i) {
              const int32_t sample = src_perm[i];
              const int64_t goes_right = node[sample] & 1;
              dst_perm[left] = right_perm[right] = sample;
              dst_vals[left] = right_vals[right] = src_vals[i];
              left += 1 - goes_right;
              right += goes_right;
            }
            memcpy(dst_perm + left, right_perm, sizeof(int32_t) * right);
            memcpy(dst_vals + left, right_vals, sizeof(float) * right);
            next_start[2 * k] = start[k];
            next_start[2 * k + 1] = left;
          }
        }
        next_start[2 * num_nodes] = n;
        cur = nxt;
        memcpy(start, next_start, sizeof(int64_t) * (2 * num_nodes + 1));
      } else { /* leaves: the two parts of every last-level node */
        for (int64_t k = 0; k < num_nodes; ++k) {
          const int64_t count = start[k + 1] - start[k];
          const int64_t right = count - count_left[k];
          tree_value[2 * k] = sum_left[k] / (count_left[k] > 0 ? (double)count_left[k] : 1.0);
          tree_value[2 * k + 1] = (sum_node[k] - sum_left[k]) / (right > 0 ? (double)right : 1.0);
        }
      }
    }
    for (int64_t i = 0; i < n; ++i) prediction[i] += learning_rate * tree_value[node[i]];
  }
  for (int b = 0; b < 3; ++b) {
    free(perm[b]);
    free(vals[b]);
  }
  free(right_perm); free(right_vals); free(residual); free(sums); free(proxy); free(ramp);
  free(node); free(start); free(next_start); free(count_left); free(sum_node); free(sum_left);
  free(splits); free(parent_split);
  return ok ? 0 : -1;
}

/* Boosted prediction of x [m, p] (row-major float32): init plus learning_rate times each
 * tree's leaf value, stages added in order. */
void wscrl_gbrt_predict(const float *x, int64_t m, int64_t p, int64_t n_estimators,
                        int64_t max_depth, const int32_t *feature, const double *threshold,
                        const double *value, double init, double learning_rate, double *out) {
  const int64_t num_leaves = (int64_t)1 << max_depth;
  for (int64_t i = 0; i < m; ++i) {
    double prediction = init;
    for (int64_t stage = 0; stage < n_estimators; ++stage) {
      const int32_t *tree_feature = feature + stage * (num_leaves - 1);
      const double *tree_threshold = threshold + stage * (num_leaves - 1);
      int64_t k = 0;
      for (int64_t depth = 0; depth < max_depth; ++depth) {
        const int64_t index = ((int64_t)1 << depth) - 1 + k;
        k = 2 * k + ((double)x[i * p + tree_feature[index]] > tree_threshold[index]);
      }
      prediction += learning_rate * value[stage * num_leaves + k];
    }
    out[i] = prediction;
  }
}
