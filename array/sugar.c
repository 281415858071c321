/* Conveniences over the operations of array.c, so that short expressions read short: whole-array
 * and one-axis sums, and arithmetic with a scalar. Each is one call of the general constructor;
 * nothing here validates more than it does. */
#include "array/array.h"

int tsr_sum_all(tsr_array *x, tsr_array **out) {
    int axes[TSR_MAX_NDIM];
    int n = x ? x->ndim : 0;
    for (int ax = 0; ax < n; ax++) axes[ax] = ax;
    return tsr_reduce(TSR_SUM, x, axes, n, out);
}

int tsr_mean_all(tsr_array *x, tsr_array **out) {
    int axes[TSR_MAX_NDIM];
    int n = x ? x->ndim : 0;
    for (int ax = 0; ax < n; ax++) axes[ax] = ax;
    return tsr_reduce(TSR_MEAN, x, axes, n, out);
}

int tsr_sum_axis(tsr_array *x, int axis, tsr_array **out) {
    return tsr_reduce(TSR_SUM, x, &axis, 1, out);
}

int tsr_add_scalar(tsr_array *x, double s, tsr_array **out) {
    return tsr_binary_scalar(TSR_ADD, x, s, 0, out);
}

int tsr_sub_scalar(tsr_array *x, double s, tsr_array **out) {
    return tsr_binary_scalar(TSR_SUB, x, s, 0, out);
}

int tsr_mul_scalar(tsr_array *x, double s, tsr_array **out) {
    return tsr_binary_scalar(TSR_MUL, x, s, 0, out);
}

int tsr_div_scalar(tsr_array *x, double s, tsr_array **out) {
    return tsr_binary_scalar(TSR_DIV, x, s, 0, out);
}
