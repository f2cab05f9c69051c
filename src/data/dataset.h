/* dataset.h: in-memory image classification datasets read from their standard files.
 *   MNIST, Fashion-MNIST, KMNIST: IDX files (train-images-idx3-ubyte, train-labels-idx1-ubyte,
 *     t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte), each gzip-compressed (.gz) or raw.
 *   CIFAR-10 binary version: data_batch_1.bin .. data_batch_5.bin, test_batch.bin
 *     (records of 1 label byte + 3072 pixel bytes, channel-major 3x32x32).
 *   CIFAR-100 binary version: train.bin, test.bin (records of coarse label, fine label,
 *     3072 pixel bytes; the fine label is used).
 * Magic numbers, dimensions, counts, file sizes and label ranges are checked; any problem
 * is DT_ERR_DATA with one message naming the file and what is wrong.
 * A user's own images: one HDF5 file (data.dataset = hdf5, data.path; layout in dataset_h5.c),
 * which also gives the class count and names, image size and normalisation. */
#ifndef DT_DATASET_H
#define DT_DATASET_H

#include "common.h"

typedef struct {
  int count;
  int channels, height, width;
  uint8_t *images; /* count x (C, H, W) uint8 pixels */
  uint8_t *labels; /* count class indices */
} dt_split;

typedef struct {
  const char *name; /* config name: fashion_mnist, mnist, kmnist, cifar10, cifar100 */
  int classes;
  float mean[3], std[3]; /* per channel, docs/reference-experiments.md "Datasets" */
  bool default_hflip;    /* CIFAR and Fashion-MNIST flip, MNIST/KMNIST do not
                          (docs/reference-experiments.md "Code generations") */
  dt_split train, test;
  char **class_names; /* (classes) names from the file (data.dataset = hdf5), else NULL */
} dt_dataset;

/* The directory used when data.dir is empty. */
const char *dt_dataset_default_dir(const char *name);
/* Shape and class count of a dataset by name without reading files (for --dry-run);
 * DT_ERR_CONFIG for an unknown name. */
dt_status dt_dataset_describe(const char *name, dt_dataset *ds);
/* Read both splits. dir NULL or "" = the default directory. */
dt_status dt_dataset_load(dt_dataset *ds, const char *name, const char *dir);
/* Keep only the first `train_limit` / `test_limit` images (0 = all). */
void dt_dataset_limit(dt_dataset *ds, int train_limit, int test_limit);
void dt_dataset_free(dt_dataset *ds);

/* ---- data.dataset = hdf5 (dataset_h5.c) ---- */

#define DT_H5_MAX_CLASSES 256 /* labels are stored as uint8 */
/* Shape, classes, normalisation and default flip of an HDF5 dataset file, without its pixels
 * (counts 0, no class names); DT_ERR_DATA naming the file when it is not one. */
dt_status dt_dataset_describe_hdf5(const char *path, dt_dataset *ds);
/* The same with the class names (for --predict). */
dt_status dt_dataset_names_hdf5(const char *path, dt_dataset *ds);
/* Read and check the whole file (every check of dataset_h5.c). */
dt_status dt_dataset_load_hdf5(dt_dataset *ds, const char *path);
/* The images of an image file for --predict: /images uint8 (N, C, H, W) into split (labels
 * 0) and /names (N strings) into *names when the file has them (else NULL; free each and the
 * array). DT_ERR_DATA naming the file otherwise. */
dt_status dt_images_load_hdf5(const char *path, dt_split *split, char ***names);

#endif
