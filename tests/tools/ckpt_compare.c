/* ckpt_compare.c: compare the tensors of two dtrain checkpoints, read with the HDF5 C API
 * directly (not through src/io, which is what is being tested).
 *   ckpt_compare A.h5 B.h5 [--exact | --rel TOL] [--optimizer] [--verbose]
 * Every dataset under /model (with --optimizer also under /optimizer) of both files is read as
 * float; --exact requires identical bytes, --rel TOL a relative error in norm
 * |a - b| / |b| <= TOL per tensor (|b| = 0: |a - b|). Prints the number of tensors and the
 * worst one with its error (--verbose: every tensor out of tolerance). Exit 0 on a match; 1 if a tensor differs, the tensor sets or
 * shapes differ; 2 for bad usage or an unreadable file. */
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hdf5.h>

typedef struct {
  char **names;
  int count, cap;
} name_list;

static void list_add(name_list *l, const char *name) {
  if (l->count == l->cap) {
    l->cap = l->cap ? 2 * l->cap : 64;
    l->names = realloc(l->names, (size_t)l->cap * sizeof *l->names);
    if (!l->names) exit(2);
  }
  size_t n = strlen(name) + 1;
  l->names[l->count] = malloc(n);
  if (!l->names[l->count]) exit(2);
  memcpy(l->names[l->count++], name, n);
}

static void list_free(name_list *l) {
  for (int i = 0; i < l->count; i++) free(l->names[i]);
  free(l->names);
}

typedef struct {
  name_list *list;
  const char *prefix; /* "model" or "optimizer" */
} visit_ctx;

/* H5Lvisit callback: record every dataset under the group by its path from the root. */
static herr_t visit_link(hid_t group, const char *name, const H5L_info_t *info, void *data) {
  (void)info;
  visit_ctx *ctx = data;
  hid_t obj = H5Oopen(group, name, H5P_DEFAULT);
  if (obj < 0) return -1;
  if (H5Iget_type(obj) == H5I_DATASET) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", ctx->prefix, name);
    list_add(ctx->list, path);
  }
  H5Oclose(obj);
  return 0;
}

static int cmp_names(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Datasets under /group of file, sorted. -1 if the group is absent or unreadable. */
static int collect(hid_t file, const char *group, name_list *out) {
  if (H5Lexists(file, group, H5P_DEFAULT) <= 0) return -1;
  hid_t g = H5Gopen2(file, group, H5P_DEFAULT);
  if (g < 0) return -1;
  visit_ctx ctx = {out, group};
  herr_t rc = H5Lvisit(g, H5_INDEX_NAME, H5_ITER_INC, visit_link, &ctx);
  H5Gclose(g);
  if (rc < 0) return -1;
  qsort(out->names, (size_t)out->count, sizeof *out->names, cmp_names);
  return 0;
}

/* Read dataset `path` as floats (malloc'ed) with its shape. NULL if unreadable. */
static float *read_tensor(hid_t file, const char *path, int *ndim, hsize_t *dims, size_t *count) {
  hid_t ds = H5Dopen2(file, path, H5P_DEFAULT);
  if (ds < 0) return NULL;
  hid_t space = H5Dget_space(ds), type = H5Dget_type(ds);
  float *data = NULL;
  if (space >= 0 && type >= 0 && H5Tget_class(type) == H5T_FLOAT) {
    *ndim = H5Sget_simple_extent_ndims(space);
    if (*ndim >= 0 && *ndim <= H5S_MAX_RANK && H5Sget_simple_extent_dims(space, dims, NULL) >= 0) {
      hssize_t n = H5Sget_simple_extent_npoints(space);
      *count = n > 0 ? (size_t)n : 0;
      data = malloc(*count ? *count * sizeof(float) : 1);
      if (data && *count &&
          H5Dread(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0) {
        free(data);
        data = NULL;
      }
    }
  }
  if (type >= 0) H5Tclose(type);
  if (space >= 0) H5Sclose(space);
  H5Dclose(ds);
  return data;
}

static void usage(void) {
  fprintf(stderr, "usage: ckpt_compare A.h5 B.h5 [--exact | --rel TOL] [--optimizer] [--verbose]\n");
}

int main(int argc, char **argv) {
  const char *paths[2] = {NULL, NULL};
  int n_paths = 0;
  bool exact = true, optimizer = false, verbose = false;
  double tol = 0;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--exact") == 0) {
      exact = true;
    } else if (strcmp(argv[i], "--rel") == 0 && i + 1 < argc) {
      char *end;
      tol = strtod(argv[++i], &end);
      if (*end != 0 || !(tol >= 0)) {
        usage();
        return 2;
      }
      exact = false;
    } else if (strcmp(argv[i], "--optimizer") == 0) {
      optimizer = true;
    } else if (strcmp(argv[i], "--verbose") == 0) {
      verbose = true;
    } else if (argv[i][0] != '-' && n_paths < 2) {
      paths[n_paths++] = argv[i];
    } else {
      usage();
      return 2;
    }
  }
  if (n_paths != 2) {
    usage();
    return 2;
  }

  H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
  hid_t files[2];
  name_list lists[2] = {{0}, {0}};
  for (int f = 0; f < 2; f++) {
    files[f] = H5Fopen(paths[f], H5F_ACC_RDONLY, H5P_DEFAULT);
    if (files[f] < 0) {
      fprintf(stderr, "ckpt_compare: %s: not a readable HDF5 file\n", paths[f]);
      return 2;
    }
    if (collect(files[f], "model", &lists[f]) < 0 ||
        (optimizer && collect(files[f], "optimizer", &lists[f]) < 0)) {
      fprintf(stderr, "ckpt_compare: %s: no readable /model%s group\n", paths[f],
              optimizer ? " or /optimizer" : "");
      return 2;
    }
    if (optimizer)
      qsort(lists[f].names, (size_t)lists[f].count, sizeof *lists[f].names, cmp_names);
  }

  int status = 0;
  /* The tensor sets: a merge of the two sorted lists. */
  for (int i = 0, j = 0; i < lists[0].count || j < lists[1].count;) {
    int c = i == lists[0].count   ? 1
            : j == lists[1].count ? -1
                                  : strcmp(lists[0].names[i], lists[1].names[j]);
    if (c == 0) {
      i++, j++;
      continue;
    }
    const char *name = c < 0 ? lists[0].names[i++] : lists[1].names[j++];
    fprintf(stderr, "ckpt_compare: /%s is only in %s\n", name, paths[c < 0 ? 0 : 1]);
    status = 1;
  }
  if (status != 0) {
    printf("ckpt_compare: MISMATCH: the files hold different tensor sets (%d vs %d tensors)\n",
           lists[0].count, lists[1].count);
    return 1;
  }

  double worst = -1;
  const char *worst_name = "(none)";
  size_t worst_diff = 0, total = 0;
  for (int i = 0; i < lists[0].count; i++) {
    const char *name = lists[0].names[i];
    int nd[2];
    hsize_t dims[2][H5S_MAX_RANK];
    size_t count[2];
    float *x[2];
    for (int f = 0; f < 2; f++) {
      x[f] = read_tensor(files[f], name, &nd[f], dims[f], &count[f]);
      if (!x[f]) {
        fprintf(stderr, "ckpt_compare: %s: /%s is not a readable float tensor\n", paths[f], name);
        return 2;
      }
    }
    bool same_shape = nd[0] == nd[1];
    for (int d = 0; same_shape && d < nd[0]; d++) same_shape = dims[0][d] == dims[1][d];
    if (!same_shape) {
      fprintf(stderr, "ckpt_compare: /%s has different shapes in the two files\n", name);
      status = 1;
    } else {
      /* Relative error in norm, in double; with --exact also the count of differing bytes. */
      double num = 0, den = 0;
      size_t diff = 0;
      for (size_t k = 0; k < count[0]; k++) {
        double d = (double)x[0][k] - (double)x[1][k];
        num += d * d;
        den += (double)x[1][k] * x[1][k];
        diff += memcmp(&x[0][k], &x[1][k], sizeof(float)) != 0;
      }
      double err = den > 0 ? sqrt(num) / sqrt(den) : sqrt(num);
      if (isnan(err)) err = INFINITY;
      bool bad = exact ? diff > 0 : err > tol;
      if (bad) status = 1;
      if (bad && verbose)
        printf("  /%s: rel error %.3g, %zu of %zu values differ\n", name, err, diff, count[0]);
      bool worse = exact ? diff > worst_diff || (diff == worst_diff && err > worst) : err > worst;
      if (worse) {
        worst = err;
        worst_name = name;
        worst_diff = diff;
      }
      total += count[0];
    }
    free(x[0]);
    free(x[1]);
  }
  if (exact)
    printf("ckpt_compare: %d tensors (%zu values), %s; worst /%s: %zu values differ, rel error "
           "%.3g\n",
           lists[0].count, total, status ? "MISMATCH (--exact)" : "identical bytes", worst_name,
           worst_diff, worst < 0 ? 0 : worst);
  else
    printf("ckpt_compare: %d tensors (%zu values), %s; worst /%s: rel error %.3g (tolerance "
           "%.3g)\n",
           lists[0].count, total, status ? "MISMATCH" : "match", worst_name, worst < 0 ? 0 : worst,
           tol);
  for (int f = 0; f < 2; f++) {
    H5Fclose(files[f]);
    list_free(&lists[f]);
  }
  return status;
}
