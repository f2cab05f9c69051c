/* config.h: every configuration key of dtrain, in one X-macro table (DESIGN "Config").
 * The table generates the struct below, the defaults, the INI handler, validation,
 * --help-config and the printout of the effective configuration (config.c).
 *
 * X(section, key, type, default, min, max, choices, help)
 *   type    INT (long), FLOAT (double), BOOL, STR (free text), CHOICE (one of `choices`,
 *           '|'-separated), INTLIST and BOOLLIST (comma-separated, at most DT_LIST_MAX items)
 *   default a string, parsed and validated like a value from a file
 *   min/max the accepted range for INT, FLOAT and the items of INTLIST (ignored otherwise)
 */
#ifndef DT_CONFIG_H
#define DT_CONFIG_H

#include <stdio.h>

#include "common.h"

#define DT_LIST_MAX 16
#define DT_STR_MAX 512

#define DT_CONFIG_KEYS(X)                                                                      \
  X(data, dataset, CHOICE, "fashion_mnist", 0, 0, "fashion_mnist|mnist|kmnist|cifar10|cifar100", \
    "dataset to train and evaluate on")                                                       \
  X(data, dir, STR, "", 0, 0, "",                                                              \
    "directory of the dataset files; empty = /usr/share/datasets/fashion-mnist for "          \
    "fashion_mnist, data/<dataset> otherwise")                                                 \
  X(data, train_limit, INT, "0", 0, 100000000, "", "use only the first N training images (0 = all)") \
  X(data, test_limit, INT, "0", 0, 100000000, "", "evaluate only the first N test images (0 = all)") \
  X(data, loader_threads, INT, "1", 1, 64, "", "threads that augment the next batch while the model computes") \
  X(model, name, CHOICE, "resnet_preact", 0, 0, "resnet_preact", "network family (SPEC section 1)") \
  X(model, depth, INT, "20", 8, 2000, "", "depth: 6n+2 for basic blocks, 9n+2 for bottleneck blocks") \
  X(model, block_type, CHOICE, "basic", 0, 0, "basic|bottleneck", "residual block type")     \
  X(model, initial_channels, INT, "16", 1, 4096, "", "channels of the stem and the first stage") \
  X(model, remove_first_relu, BOOL, "false", 0, 0, "", "drop the first ReLU of each residual branch") \
  X(model, add_last_bn, BOOL, "false", 0, 0, "", "add a batch norm after the last conv of each branch") \
  X(model, preact_stage, BOOLLIST, "true,true,true", 0, 0, "",                                \
    "per stage: pre-activate the shortcut of the first block (3 values)")                     \
  X(model, init_mode, CHOICE, "kaiming_fan_out", 0, 0, "kaiming_fan_out|kaiming_fan_in",      \
    "fan used by the Kaiming-normal initialisation of conv and linear weights")               \
  X(train, epochs, INT, "15", 1, 1000000, "", "number of training epochs")                     \
  X(train, batch_size, INT, "128", 1, 1048576, "", "global batch size (all ranks together)") \
  X(train, eval_batch_size, INT, "256", 1, 1048576, "", "batch size of evaluation")          \
  X(train, seed, INT, "0", 0, 4611686018427387903L, "",                                       \
    "seed of weights, shuffling and augmentation")                                             \
  X(train, threads, INT, "0", 0, 4096, "", "compute threads per rank (0 = OMP_NUM_THREADS or all cores)") \
  X(train, max_steps, INT, "0", 0, 1000000000000L, "", "stop after this many steps in total (0 = run every epoch)") \
  X(optim, name, CHOICE, "sgd", 0, 0, "sgd", "optimizer")                                      \
  X(optim, lr, FLOAT, "0.1", 0, 1e6, "", "base learning rate at the reference batch size")    \
  X(optim, reference_batch, INT, "128", 1, 1048576, "",                                       \
    "linear scaling rule: lr = optim.lr * train.batch_size / reference_batch")                \
  X(optim, momentum, FLOAT, "0.9", 0, 1, "", "momentum")                                       \
  X(optim, nesterov, BOOL, "true", 0, 0, "", "Nesterov momentum")                              \
  X(optim, weight_decay, FLOAT, "5e-4", 0, 1, "", "L2 weight decay added to the gradient")     \
  X(optim, no_decay_bn_bias, BOOL, "false", 0, 0, "",                                          \
    "no weight decay on batch-norm parameters and biases")                                    \
  X(schedule, type, CHOICE, "cosine", 0, 0, "constant|multistep|cosine", "learning-rate schedule, stepped per iteration") \
  X(schedule, milestones, INTLIST, "", 1, 1000000, "", "multistep: epochs (after warmup) at which lr is multiplied by gamma") \
  X(schedule, gamma, FLOAT, "0.1", 0, 1, "", "multistep: decay factor")                       \
  X(schedule, min_factor, FLOAT, "1e-3", 0, 1, "", "cosine: final lr as a fraction of the base lr") \
  X(schedule, warmup_epochs, INT, "0", 0, 1000000, "", "linear warmup epochs (taken from train.epochs)") \
  X(schedule, warmup_start_factor, FLOAT, "1e-3", 0, 1, "", "linear warmup: lr factor at step 0") \
  X(augment, random_crop, CHOICE, "auto", 0, 0, "auto|true|false",                            \
    "pad and random crop; auto = on for every dataset (SPEC C12)")                            \
  X(augment, crop_padding, INT, "4", 0, 64, "", "random crop: zero padding on each side, in pixels") \
  X(augment, hflip, CHOICE, "auto", 0, 0, "auto|true|false",                                   \
    "random horizontal flip; auto = on for CIFAR and Fashion-MNIST, off for MNIST and KMNIST") \
  X(augment, hflip_prob, FLOAT, "0.5", 0, 1, "", "probability of a horizontal flip")           \
  X(output, dir, STR, "runs/default", 0, 0, "", "run directory: config.ini as run and log.txt") \
  X(output, overwrite, BOOL, "false", 0, 0, "", "allow writing into an existing run directory") \
  X(output, log_every, INT, "50", 1, 1000000000, "", "steps between progress lines")

typedef struct { int n; long v[DT_LIST_MAX]; } dt_intlist;
typedef struct { int n; bool v[DT_LIST_MAX]; } dt_boollist;

#define DT_CFG_CTYPE_INT long
#define DT_CFG_CTYPE_FLOAT double
#define DT_CFG_CTYPE_BOOL bool
#define DT_CFG_CTYPE_STR char *
#define DT_CFG_CTYPE_CHOICE char *
#define DT_CFG_CTYPE_INTLIST dt_intlist
#define DT_CFG_CTYPE_BOOLLIST dt_boollist

#define DT_CFG_FIELD(sec, key, type, def, lo, hi, choices, help) DT_CFG_CTYPE_##type sec##_##key;
/* The effective configuration. Strings are owned by the struct (dt_config_free). */
typedef struct dt_config {
  DT_CONFIG_KEYS(DT_CFG_FIELD)
  char *source;  /* path of the INI file it was read from */
} dt_config;
#undef DT_CFG_FIELD

/* Fill every key with its default. */
void dt_config_defaults(dt_config *cfg);
/* Read `path` over the defaults. Unknown section or key, malformed value, value out of range,
 * unreadable file: DT_ERR_CONFIG with one message naming file, line, section, key and what is
 * accepted. */
dt_status dt_config_load(dt_config *cfg, const char *path);
/* Apply one "section.key=value" override (from --set); errors name the override. */
dt_status dt_config_set(dt_config *cfg, const char *assignment);
/* Checks between keys (depth fits the block type, warmup shorter than training...). */
dt_status dt_config_validate(const dt_config *cfg);
/* Write the effective configuration as an INI file that dt_config_load reads back. */
void dt_config_write(const dt_config *cfg, FILE *f);
/* --help-config: every key with section, type, default, accepted values and meaning. */
void dt_config_help(FILE *f);
void dt_config_free(dt_config *cfg);

#endif
